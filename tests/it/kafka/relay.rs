//! The relay: every event of a busy run arrives exactly as stored, in per-aggregate order,
//! with its headers; read back by our client and by kafka-python; a relay killed with SIGKILL
//! and a broker outage lose nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore, TraceContext};
use framegate_domain::versions;
use framegate_domain::{
    hash_token, redact_payload, CreditCommand, Credits, PasswordHash, ProviderPreference, Role,
    UserCommand, UserId, VideoId, VideoSpec,
};
use framegate_projections::{log, StoredEvent, Subscription};
use framegate_workers::kafka::relay::{self, RelayHealth, KNOWN_AGGREGATES};
use framegate_workers::kafka::KafkaConfig;
use serde_json::Value;
use uuid::Uuid;

use crate::kafka::support::{brokers, free_port, read_all, unique_prefix, OwnBroker, Received};

const PATIENCE: Duration = Duration::from_secs(60);

fn config(brokers: &str, prefix: &str, extra: &[(&str, &str)]) -> KafkaConfig {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("FRAMEGATE_KAFKA_BROKERS".into(), brokers.into()),
        ("FRAMEGATE_KAFKA_TOPIC_PREFIX".into(), prefix.into()),
        ("FRAMEGATE_KAFKA_PARTITIONS".into(), "3".into()),
        ("FRAMEGATE_KAFKA_BATCH_SIZE".into(), "50".into()),
    ]);
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    KafkaConfig::from_lookup(|name| vars.get(name).cloned(), vars.clone())
        .expect("valid")
        .expect("on")
}

fn topics(config: &KafkaConfig) -> Vec<String> {
    KNOWN_AGGREGATES.iter().map(|a| config.topic(a)).collect()
}

/// A user with every kind of secret (password, verification token) and an account that
/// moves: several events on each of two aggregates.
async fn customer(store: &EventStore, n: usize) {
    let meta = CommandMetadata::new_request(Actor::System);
    let user = UserId::from_uuid(Uuid::now_v7());
    let register = UserCommand::Register {
        user_id: user,
        email: format!("relay{n}@example.com"),
        password_hash: PasswordHash::new(format!("$argon2id$v=19$m=19456,t=2,p=1$secret{n}")),
        verification_token_hash: hash_token(&format!("verify-{n}")),
        verification_expires_at: Utc::now() + chrono::Duration::days(1),
        role: Role::User,
    };
    store
        .users()
        .execute(&user.to_string(), register, &meta)
        .await
        .expect("register");
    for grant in 0..5 {
        grants(store, user, grant).await;
    }
}

async fn grants(store: &EventStore, user: UserId, n: i64) {
    let mut meta = CommandMetadata::new_request(Actor::System);
    // Every other grant as if issued in a traced request: its trace rides along.
    if n % 2 == 0 {
        meta.trace = TraceContext::parse(
            &format!("00-{:032x}-{:016x}-01", n + 1, n + 1),
            Some("vendor=relay"),
        );
    }
    let grant = CreditCommand::Grant {
        amount: Credits::new(n + 1),
        reason: format!("grant {n}"),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&user.to_string(), grant, &meta)
        .await
        .expect("grant");
}

/// Every stored event as readers get it (personal fields opened, ADR 0043).
async fn stored(db: &TestDatabase) -> Vec<StoredEvent> {
    let mut events = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
           FROM events ORDER BY global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("events");
    framegate_commands::pii::open_stored(&db.pool, &mut events)
        .await
        .expect("open");
    events
}

/// Waits until the relay's checkpoint has passed every stored event.
async fn relayed(db: &TestDatabase) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let position = Subscription::new(relay::SUBSCRIPTION, db.pool.clone())
            .checkpoint()
            .await
            .expect("checkpoint");
        let mut conn = db.pool.acquire().await.expect("conn");
        if log::lag(&mut conn, position).await.expect("lag") == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn_relay(
    db: &TestDatabase,
    config: KafkaConfig,
    health: RelayHealth,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), relay::RelayError>>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(relay::run(db.pool.clone(), config, health, None, stopped));
    (stop, task)
}

/// Every stored event is among the messages, byte for byte as the contract says, and any
/// repeat of an event is an identical redelivery.
fn assert_all_delivered(events: &[StoredEvent], messages: &[Received], config: &KafkaConfig) {
    let mut by_id: HashMap<&str, &Received> = HashMap::new();
    for message in messages {
        if let Some(first) = by_id.insert(message.header("ce_id"), message) {
            assert_eq!(
                (&first.key, &first.value, &first.headers),
                (&message.key, &message.value, &message.headers),
                "a repeated ce_id must be an identical redelivery"
            );
        }
    }
    for event in events {
        let id = event.event_id.to_string();
        let message = by_id.get(id.as_str()).unwrap_or_else(|| {
            panic!(
                "event #{} ({}) never arrived",
                event.global_position, event.event_type
            )
        });
        assert_eq!(message.topic, config.topic(&event.aggregate_type));
        assert_eq!(message.key, event.aggregate_id);
        let value: Value = serde_json::from_slice(&message.value).expect("JSON value");
        let (current, version) =
            versions::upcast(&event.event_type, &event.event_version, &event.payload)
                .expect("a known version");
        assert_eq!(
            value,
            redact_payload(&event.aggregate_type, &event.event_type, &current)
        );
        assert_eq!(message.header("ce_specversion"), "1.0");
        assert_eq!(message.header("ce_subject"), event.aggregate_id);
        assert_eq!(message.header("ce_source"), config.source);
        assert_eq!(message.header("content-type"), "application/json");
        assert_eq!(message.header("ce_sequence"), event.sequence.to_string());
        assert_eq!(
            message.header("ce_globalposition"),
            event.global_position.to_string()
        );
        assert_eq!(message.header("ce_schemaversion"), version);
        assert_eq!(
            message.header("ce_correlationid"),
            event.meta("correlation_id").unwrap_or_default()
        );
        assert_eq!(
            message.header("ce_causationid"),
            event.meta("causation_id").unwrap_or_default()
        );
        assert_eq!(
            (message.header("traceparent"), message.header("tracestate")),
            (
                event.meta("traceparent").unwrap_or_default(),
                event.meta("tracestate").unwrap_or_default()
            )
        );
        let time =
            chrono::DateTime::parse_from_rfc3339(message.header("ce_time")).expect("ce_time");
        assert_eq!(time.with_timezone(&Utc), event.recorded_at);
        assert!(message
            .header("ce_type")
            .ends_with(&format!(".{}", event.event_type)));
    }
}

/// Per aggregate, in partition order and with redeliveries dropped, sequences run 1, 2, 3...
fn assert_per_aggregate_order(messages: &[Received]) {
    let mut ordered: Vec<&Received> = messages.iter().collect();
    ordered.sort_by_key(|m| (m.topic.clone(), m.partition, m.offset));
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for message in ordered {
        let sequence: i64 = message.header("ce_sequence").parse().expect("sequence");
        let seen = last
            .entry((message.topic.clone(), message.key.clone()))
            .or_insert(0);
        if sequence <= *seen {
            continue; // a redelivery of something already seen
        }
        assert_eq!(sequence, *seen + 1, "a gap in {}'s stream", message.key);
        *seen = sequence;
    }
}

/// The secrets in the stored payloads: none may appear in any message.
fn secrets(events: &[StoredEvent]) -> Vec<String> {
    let mut found = Vec::new();
    for event in events {
        if let Some(Value::Object(body)) = event.payload.get(&event.event_type) {
            for (field, value) in body {
                if field.ends_with("_hash") {
                    if let Some(text) = value.as_str() {
                        found.push(text.to_owned());
                    }
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_of_a_busy_run_arrives_as_stored_in_order_with_its_headers() {
    let db = TestDatabase::with_pool_size(20).await;
    let store = EventStore::new(db.pool.clone());
    let config = config(&brokers(), &unique_prefix(), &[]);
    let (stop, task) = spawn_relay(&db, config.clone(), RelayHealth::default());

    // Eight writers at once while the relay runs: 8 x 6 customers x 6 events.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..6 {
                    customer(&store, w * 100 + n).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    relayed(&db).await;
    let events = stored(&db).await;
    assert_eq!(events.len(), 8 * 6 * 6);

    let messages = read_all(&config.brokers, &topics(&config), events.len(), PATIENCE);
    assert_eq!(messages.len(), events.len(), "one message per event");
    assert_all_delivered(&events, &messages, &config);
    assert!(
        messages
            .iter()
            .any(|m| m.header("traceparent").starts_with("00-")),
        "the traced grants carry their traceparent"
    );
    assert_per_aggregate_order(&messages);
    let all_bytes: Vec<String> = messages
        .iter()
        .map(|m| format!("{} {:?}", String::from_utf8_lossy(&m.value), m.headers))
        .collect();
    let secrets = secrets(&events);
    assert_eq!(secrets.len(), 8 * 6 * 2, "password and token hash per user");
    let leaks: Vec<&String> = secrets
        .iter()
        .filter(|secret| all_bytes.iter().any(|m| m.contains(secret.as_str())))
        .collect();
    assert!(leaks.is_empty(), "secrets on Kafka: {leaks:?}");

    // An independent implementation of the protocol reads the same messages.
    let python = read_with_kafka_python(&config, events.len());
    let ours: BTreeMap<String, (String, String)> = messages
        .iter()
        .map(|m| {
            (
                m.header("ce_id").to_owned(),
                (
                    m.key.clone(),
                    String::from_utf8_lossy(&m.value).into_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(python, ours, "kafka-python reads what rdkafka reads");

    stop.send(true).expect("stop");
    task.await.expect("relay task").expect("relay");
}

/// Reads every topic of `config` with kafka-python (scripts/kafka-read.py): ce_id → (key, value).
fn read_with_kafka_python(
    config: &KafkaConfig,
    expect: usize,
) -> BTreeMap<String, (String, String)> {
    let python = std::env::var("FRAMEGATE_TEST_KAFKA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-read.py");
    let output = Command::new(&python)
        .arg(script)
        .arg("--brokers")
        .arg(&config.brokers)
        .arg("--expect")
        .arg(expect.to_string())
        .args(topics(config))
        .output()
        .unwrap_or_else(|e| panic!("run {python} (FRAMEGATE_TEST_KAFKA_PYTHON): {e}"));
    assert!(
        output.status.success(),
        "kafka-read.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut read = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let record: Value = serde_json::from_str(line).expect("JSON line");
        let ce_id = record["headers"]["ce_id"]
            .as_str()
            .expect("ce_id")
            .to_owned();
        let key = record["key"].as_str().expect("key").to_owned();
        let value = record["value"].as_str().expect("value").to_owned();
        read.insert(ce_id, (key, value));
    }
    read
}

fn start_relay_process(db: &TestDatabase, config: &KafkaConfig, health_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("relay")
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_KAFKA_BROKERS", &config.brokers)
        .env("FRAMEGATE_KAFKA_TOPIC_PREFIX", &config.topic_prefix)
        .env("FRAMEGATE_KAFKA_BATCH_SIZE", "20")
        .env(
            "FRAMEGATE_RELAY_HEALTH_ADDR",
            format!("127.0.0.1:{health_port}"),
        )
        .env("FRAMEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start framegate relay")
}

async fn ready_status(port: u16) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_stream_resumes_from_its_checkpoint_and_loses_nothing() {
    let db = TestDatabase::with_pool_size(10).await;
    let store = EventStore::new(db.pool.clone());
    let config = config(&brokers(), &unique_prefix(), &[]);
    let port = free_port();
    let mut relay = start_relay_process(&db, &config, port);

    // Writers keep going while the relay is killed and restarted.
    let writing = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..60 {
                customer(&store, n).await;
            }
        })
    };
    // Kill it once it has published part of the stream.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let handled: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(events_handled), 0)::bigint FROM subscription_checkpoints WHERE name = $1",
        )
        .bind(relay::SUBSCRIPTION)
        .fetch_one(&db.pool)
        .await
        .expect("checkpoint");
        if handled >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "the relay published nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill().expect("SIGKILL");
    relay.wait().expect("reaped");
    let mut relay = start_relay_process(&db, &config, port);
    writing.await.expect("writer");
    relayed(&db).await;
    assert_eq!(ready_status(port).await, Some(200));
    relay.kill().expect("stop");
    relay.wait().expect("reaped");

    let events = stored(&db).await;
    assert_eq!(events.len(), 60 * 6);
    // Redeliveries are allowed, so read until nothing more comes.
    let messages = read_all(
        &config.brokers,
        &topics(&config),
        usize::MAX,
        Duration::from_secs(8),
    );
    assert!(
        messages.len() >= events.len(),
        "{} of {}",
        messages.len(),
        events.len()
    );
    assert_all_delivered(&events, &messages, &config);
    assert_per_aggregate_order(&messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_is_reported_waited_out_and_loses_nothing() {
    let db = TestDatabase::with_pool_size(10).await;
    let store = EventStore::new(db.pool.clone());
    let broker = OwnBroker::start().await;
    let config = config(
        &broker.address,
        &unique_prefix(),
        &[
            ("FRAMEGATE_KAFKA_PROP_MESSAGE_TIMEOUT_MS", "4000"),
            ("FRAMEGATE_KAFKA_PROP_RECONNECT_BACKOFF_MAX_MS", "500"),
            ("FRAMEGATE_KAFKA_MAX_BACKOFF_MS", "1000"),
        ],
    );
    let health = RelayHealth::default();
    let (acked_before, _) = relay_counts();
    let (stop, task) = spawn_relay(&db, config.clone(), health.clone());
    for n in 0..5 {
        customer(&store, n).await;
    }
    relayed(&db).await;
    assert!(health.status().healthy);

    broker.cut();
    for n in 5..25 {
        customer(&store, n).await;
    }
    // Under load with the broker away: the relay says so and its checkpoint stays put.
    let deadline = Instant::now() + PATIENCE;
    while health.status().healthy {
        assert!(
            Instant::now() < deadline,
            "the relay never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = health.status();
    assert!(status.problem.is_some(), "{status:?}");
    let position = Subscription::new(relay::SUBSCRIPTION, db.pool.clone())
        .checkpoint()
        .await
        .expect("checkpoint");
    let mut conn = db.pool.acquire().await.expect("conn");
    assert!(log::lag(&mut conn, position).await.expect("lag") > 0);
    drop(conn);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!health.status().healthy);

    broker.restore();
    relayed(&db).await;
    assert!(health.status().healthy);
    stop.send(true).expect("stop");
    task.await.expect("relay task").expect("relay");

    let events = stored(&db).await;
    let messages = read_all(
        &config.brokers,
        &topics(&config),
        usize::MAX,
        Duration::from_secs(8),
    );
    let ids: HashSet<&str> = messages.iter().map(|m| m.header("ce_id")).collect();
    assert_eq!(ids.len(), events.len());
    assert_all_delivered(&events, &messages, &config);
    assert_per_aggregate_order(&messages);
    // `/metrics` tells the same story: ready again, every event acknowledged (other tests
    // of this binary may add to the count meanwhile, and may run relays of their own in this
    // process, so the gauge is not checked during the outage).
    let (acked, healthy) = relay_counts();
    assert_eq!(healthy, 1.0);
    assert!(
        acked - acked_before >= events.len() as f64,
        "{acked_before} -> {acked} acknowledged for {} events",
        events.len()
    );
}

/// Messages acknowledged (all aggregates) and the readiness gauge, from the process's metrics.
fn relay_counts() -> (f64, f64) {
    let text = framegate_commands::metrics::encode();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    (
        sum("framegate_kafka_messages_acked_total{"),
        sum("framegate_kafka_relay_healthy "),
    )
}

/// A `VideoRequested` stored as 1.0 (before `generate_audio`) and one written today as 2.0
/// both reach the topic as 2.0, naming the 2.0 schema: consumers only see current versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_requests_stored_as_version_1_and_2_are_both_published_as_version_2() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    grants(&store, owner, 9).await;
    let spec = VideoSpec {
        owner,
        prompt: "a kite over dunes".into(),
        negative_prompt: None,
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    let meta = CommandMetadata::new_request(Actor::User(owner));
    let today = VideoId::from_uuid(Uuid::now_v7());
    request_video(&store, today, spec.clone(), &meta, None)
        .await
        .expect("request");
    // The same request in the 1.0 format, as rows written before 2.0 are.
    let before = VideoId::from_uuid(Uuid::now_v7());
    let mut old = serde_json::to_value(&spec).expect("spec");
    old.as_object_mut()
        .expect("object")
        .remove("generate_audio");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('Video', $1, 1, 'VideoRequested', '1.0', $2, '{}')",
    )
    .bind(before.to_string())
    .bind(serde_json::json!({"VideoRequested": {"video_id": before, "spec": old}}))
    .execute(&db.pool)
    .await
    .expect("a 1.0 row");
    let versions: Vec<String> = sqlx::query_scalar(
        "SELECT event_version FROM events WHERE event_type = 'VideoRequested' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("versions");
    assert_eq!(versions, ["1.0", "2.0"]);

    let config = config(&brokers(), &unique_prefix(), &[]);
    let (stop, task) = spawn_relay(&db, config.clone(), RelayHealth::default());
    relayed(&db).await;
    let events = stored(&db).await;
    let messages = read_all(&config.brokers, &topics(&config), events.len(), PATIENCE);
    let requests: Vec<&Received> = messages
        .iter()
        .filter(|m| m.header("ce_type") == "framegate.video.VideoRequested")
        .collect();
    let keys: HashSet<&str> = requests.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        HashSet::from([today.to_string().as_str(), before.to_string().as_str()])
    );
    for message in requests {
        assert_eq!(message.header("ce_schemaversion"), "2.0", "{}", message.key);
        assert_eq!(
            message.header("ce_dataschema"),
            "docs/events/video/VideoRequested.v2.0.schema.json"
        );
        let value: Value = serde_json::from_slice(&message.value).expect("JSON value");
        assert_eq!(value["VideoRequested"]["spec"]["generate_audio"], false);
        assert_eq!(
            value["VideoRequested"]["spec"]["prompt"],
            "a kite over dunes"
        );
    }
    stop.send(true).expect("stop");
    task.await.expect("relay task").expect("relay");
}

/// A relay that publishes an erased user's events after the erasure (it was behind, or
/// publishes again) sends `[erased]` for their email and prompts, and `UserErased`: read back
/// with kafka-python, no topic holds them, while other users' data is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_after_an_erasure_carry_none_of_the_users_personal_data() {
    const EMAIL: &str = "kafka-erased@example.com";
    const PROMPT: &str = "Bartholomew's orchard at dawn";
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    customer(&store, 1).await;
    let owner = UserId::from_uuid(Uuid::now_v7());
    let from_client = |actor| {
        CommandMetadata::new_request(actor).with_client(
            Some("198.51.100.201".into()),
            Some("kafka-erasure/1".into()),
        )
    };
    let register = UserCommand::Register {
        user_id: owner,
        email: EMAIL.into(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        verification_token_hash: hash_token("verify"),
        verification_expires_at: Utc::now() + chrono::Duration::days(1),
        role: Role::User,
    };
    store
        .users()
        .execute(&owner.to_string(), register, &from_client(Actor::System))
        .await
        .expect("register");
    grants(&store, owner, 9).await;
    let spec = VideoSpec {
        owner,
        prompt: PROMPT.into(),
        negative_prompt: Some("Bartholomew's neighbours".into()),
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    let video = VideoId::from_uuid(Uuid::now_v7());
    request_video(&store, video, spec, &from_client(Actor::User(owner)), None)
        .await
        .expect("request");
    framegate_commands::erasure::erase(
        &store,
        owner,
        framegate_domain::ErasedBy::Admin,
        &CommandMetadata::new_request(Actor::System),
    )
    .await
    .expect("erase");

    let config = config(&brokers(), &unique_prefix(), &[]);
    let (stop, task) = spawn_relay(&db, config.clone(), RelayHealth::default());
    relayed(&db).await;
    let events = stored(&db).await;
    let read = read_with_kafka_python(&config, events.len());
    assert_eq!(read.len(), events.len(), "every event published");
    let everything: String = read
        .values()
        .map(|(key, value)| format!("{key} {value}\n"))
        .collect();
    for personal in [EMAIL, "Bartholomew", "198.51.100.201", "kafka-erasure/1"] {
        assert!(!everything.contains(personal), "{personal} published");
    }
    assert!(everything.contains("[erased]"));
    assert!(everything.contains(r#"{"UserErased":{"by":"admin"}}"#));
    assert!(
        everything.contains("relay1@example.com"),
        "other users untouched"
    );
    stop.send(true).expect("stop");
    task.await.expect("relay task").expect("relay");
}

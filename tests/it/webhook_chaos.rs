//! Issue 13.7: `framegate worker` (which runs the delivery subscription and the sender) killed
//! with SIGKILL at random moments while 200 videos run, an endpoint receiving every video
//! event and answering 500 now and then. Every event arrives at least once, in the log's
//! order by first arrival; an event sent twice carries the same `webhook-id` both times; and
//! every request verifies with the official `standardwebhooks` library.
//!
//! One video in ten is rendered by the simulator; the others are cancelled by their owner
//! at a random moment (before or after the worker submits them), so the run exercises every
//! kind of video event without 200 renders on the test machine.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use framegate_commands::retry::conflict_backoff;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::webhook_deliveries::message_id;
use framegate_commands::webhooks::NewEndpoint;
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{CreditCommand, Credits, UserId, VideoCommand, VideoId, WebhookEndpointId};
use rand::Rng;
use uuid::Uuid;

const VIDEOS: usize = 200;

/// One request the receiver got: `webhook-id`, `webhook-timestamp`, `webhook-signature`,
/// body.
type Request = (String, String, String, String);

/// Records every request; answers every 25th with a 500 (retried with the same id).
async fn receiver() -> (String, Arc<Mutex<Vec<Request>>>) {
    let got: Arc<Mutex<Vec<Request>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
        let seen = seen.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut seen = seen.lock().expect("requests");
            seen.push((
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                body,
            ));
            if seen.len().is_multiple_of(25) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

fn start_worker(db: &TestDatabase, blobs: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("worker")
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_BLOB_DIR", blobs)
        .env(
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "0123456789abcdef0123456789abcdef",
        )
        .env("FRAMEGATE_SIMULATOR_LATENCY_MS", "1500")
        .env("FRAMEGATE_SIMULATOR_MAX_CONCURRENCY", "64")
        .env("FRAMEGATE_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("FRAMEGATE_WEBHOOK_RETRY_SCHEDULE", "200ms")
        .env("FRAMEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker")
}

/// The `webhook-id`s the log says must arrive, in log order.
async fn expected(db: &TestDatabase) -> Vec<String> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM events
          WHERE aggregate_type = 'Video'
            AND event_type IN ('VideoRequested', 'VideoSubmitted', 'VideoCompleted',
                               'VideoFailed', 'VideoCancelled')
          ORDER BY tx_id, global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("events");
    ids.into_iter().map(message_id).collect()
}

async fn terminal(db: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Video'
           AND event_type IN ('VideoCompleted', 'VideoFailed', 'VideoCancelled')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("terminal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_delivers_every_event_at_least_once_signed_and_in_order() {
    let db = TestDatabase::new().await;
    let blobs = tempfile::tempdir().expect("blobs");
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    let system = CommandMetadata::new_request(Actor::System);
    let grant = CreditCommand::Grant {
        amount: Credits::new(2 * VIDEOS as i64),
        reason: "test".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&owner.to_string(), grant, &system)
        .await
        .expect("grant");
    let (url, got) = receiver().await;
    let secret = framegate_commands::webhooks::create(
        &store,
        NewEndpoint {
            endpoint_id: WebhookEndpointId::from_uuid(Uuid::now_v7()),
            owner,
            url,
            events: None,
            description: None,
        },
        &CommandMetadata::new_request(Actor::User(owner)),
    )
    .await
    .expect("endpoint");
    // The poller reads the videos read model: projectors run in this process throughout.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    framegate_projections::read_models::spawn_all(db.pool.clone(), stopped);

    let requesting = {
        let store = store.clone();
        tokio::spawn(async move {
            let meta = CommandMetadata::new_request(Actor::User(owner));
            let mut cancels = Vec::new();
            for n in 0..VIDEOS {
                let spec = crate::common::simulator_job(owner, n);
                let video = VideoId::from_uuid(Uuid::now_v7());
                // The worker settles other videos on the same credit account meanwhile: a
                // request that lost the race is decided again, as a client does on the API's
                // 409.
                let mut tries = 0;
                loop {
                    match request_video(&store, video, spec.clone(), &meta, None).await {
                        Ok(_) => break,
                        Err(error) if tries < 20 && error.is_transient() => {
                            tries += 1;
                            tokio::time::sleep(conflict_backoff(tries)).await;
                        }
                        Err(error) => panic!("request: {error:?}"),
                    }
                }
                if n % 10 != 0 {
                    let (store, meta) = (store.clone(), meta.clone());
                    let after = rand::thread_rng().gen_range(0..3000);
                    cancels.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(after)).await;
                        let cancel = VideoCommand::RequestCancel {
                            reason: "changed my mind".into(),
                        };
                        // Refused only if it finished first.
                        let _ = store
                            .videos()
                            .execute(&video.to_string(), cancel, &meta)
                            .await;
                    }));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for cancel in cancels {
                cancel.await.expect("cancel");
            }
        })
    };
    let mut kills = 0;
    while kills < 5 {
        let mut worker = start_worker(&db, blobs.path());
        let pause = rand::thread_rng().gen_range(500..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        worker.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        worker.wait().expect("reaped");
        kills += 1;
    }
    requesting.await.expect("requests");
    let mut worker = start_worker(&db, blobs.path());
    let deadline = Instant::now() + Duration::from_secs(240);
    let expected = loop {
        let expected = expected(&db).await;
        let arrived: HashSet<String> = got
            .lock()
            .expect("requests")
            .iter()
            .map(|r| r.0.clone())
            .collect();
        if terminal(&db).await == VIDEOS as i64 && expected.iter().all(|id| arrived.contains(id)) {
            break expected;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events arrived, {} videos finished",
            expected.iter().filter(|id| arrived.contains(*id)).count(),
            expected.len(),
            terminal(&db).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The outbox settles: every delivery recorded delivered, each attempt logged (a claim
    // that lapsed with its sender killed counts an attempt it never logged: at least as
    // many counted as logged).
    loop {
        let (undelivered, unlogged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_delivery_states WHERE status <> 'delivered'),
                    (SELECT count(*) FROM webhook_delivery_states d
                      WHERE d.attempts < (SELECT count(*) FROM webhook_attempt_log a
                                           WHERE a.delivery_id = d.delivery_id)
                         OR NOT EXISTS (SELECT 1 FROM webhook_attempt_log a
                                         WHERE a.delivery_id = d.delivery_id
                                           AND a.status BETWEEN 200 AND 299))",
        )
        .fetch_one(&db.pool)
        .await
        .expect("outbox");
        if (undelivered, unlogged) == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{undelivered} not delivered, {unlogged} without their successful attempt logged"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    worker.kill().expect("stop worker");
    worker.wait().expect("reaped");

    let requests = got.lock().expect("requests").clone();
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'VideoCompleted'")
            .fetch_one(&db.pool)
            .await
            .expect("completed");
    assert!(
        completed >= (VIDEOS / 10) as i64 && completed < VIDEOS as i64,
        "{completed} completed: the rendered ones, and cancels that came too late"
    );
    assert!(
        expected.len() >= 2 * VIDEOS,
        "queued and finished each at least"
    );
    // Nothing but the log's events, each under one id whatever number of times it came.
    let mut bodies: HashMap<&str, HashSet<String>> = HashMap::new();
    for (id, _, _, body) in &requests {
        let data: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(data["id"], id.as_str(), "the body's id is the header's");
        bodies
            .entry(id)
            .or_default()
            .insert(data["type"].as_str().expect("type").to_owned());
    }
    let known: HashSet<&str> = expected.iter().map(String::as_str).collect();
    assert!(
        bodies.keys().all(|id| known.contains(id)),
        "only the log's events"
    );
    assert!(
        bodies.values().all(|types| types.len() == 1),
        "a resent event keeps its id and its type"
    );
    // First arrivals in the log's order (nothing overtakes a delivery of one endpoint).
    let mut first: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for (id, ..) in &requests {
        if seen.insert(id.as_str()) {
            first.push(id);
        }
    }
    let in_log_order: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(first, in_log_order, "first arrivals in the log's order");
    assert!(
        requests.len() > expected.len(),
        "the 500s (and the kills) made some arrive twice"
    );
    verify_all(secret.expose().as_str(), &requests);
}

/// Every request verified by the official `standardwebhooks` library (PyPI, pinned in
/// scripts/services.sh), in one run of Python: it prints the number that verified.
fn verify_all(secret: &str, requests: &[Request]) {
    let python =
        std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into());
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let lines: Vec<serde_json::Value> = requests
        .iter()
        .map(|(id, timestamp, signature, body)| {
            serde_json::json!({"id": id, "timestamp": timestamp, "signature": signature,
                               "body": body})
        })
        .collect();
    std::fs::write(file.path(), serde_json::to_vec(&lines).expect("json")).expect("write");
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
hook = Webhook(sys.argv[1])
ok = 0
for r in json.load(open(sys.argv[2])):
    payload = hook.verify(r["body"], {"webhook-id": r["id"],
        "webhook-timestamp": r["timestamp"], "webhook-signature": r["signature"]})
    assert payload["id"] == r["id"]
    ok += 1
print(ok)
"#;
    let output = Command::new(&python)
        .args(["-c", script, secret])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("run {python} (FRAMEGATE_TEST_CLIENTS_PYTHON): {e}"));
    assert!(
        output.status.success(),
        "standardwebhooks refused a delivery: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verified: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("count");
    assert_eq!(verified, requests.len());
}

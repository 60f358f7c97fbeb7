//! What a subscription's handler says it reads (`EventHandler::reads`) is what its batches
//! fetch and open: every event still comes, in order, but only the bodies of the aggregate
//! types it follows, opened, and none of the personal entries of metadata.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{CreditCommand, Credits, ProviderPreference, UserId, VideoId, VideoSpec};
use framegate_projections::log::Reads;
use framegate_projections::read_models::{self, READ_MODELS};
use framegate_projections::replay;
use framegate_projections::subscription::{BoxError, HandlerError};
use framegate_projections::{EventHandler, StoredEvent, Subscription};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::replay::mixed_workload;
use crate::support::{credit_command, register, system};

const EMAIL: &str = "reads-someone@example.com";
const PROMPT: &str = "a lighthouse in a storm";
const IP: &str = "192.0.2.81";
const AGENT: &str = "reads-agent/1";

/// Keeps the events it is given, as given.
struct Keeper {
    reads: Reads,
    seen: Arc<Mutex<Vec<StoredEvent>>>,
}

#[async_trait]
impl EventHandler for Keeper {
    async fn handle(&self, _conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        self.seen.lock().expect("seen").push(event.clone());
        Ok(())
    }

    fn reads(&self) -> Reads {
        self.reads.clone()
    }
}

async fn read_all(pool: &sqlx::PgPool, name: &str, reads: Reads) -> Vec<StoredEvent> {
    let seen = Arc::default();
    let keeper = Keeper {
        reads,
        seen: Arc::clone(&seen),
    };
    Subscription::new(name, pool.clone())
        .with_batch_size(2)
        .drain(&keeper)
        .await
        .expect("drain");
    let seen = seen.lock().expect("seen").clone();
    seen
}

/// A user registered and granted credits, and a video they requested from a client with an
/// IP and agent: an email, a prompt and personal metadata, all stored sealed.
async fn registered_and_requested(store: &framegate_commands::EventStore) {
    let (owner, _) = register(store, EMAIL).await;
    let grant = CreditCommand::Grant {
        amount: Credits::new(10),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    credit_command(store, owner, grant, &system()).await;
    let meta = CommandMetadata::new_request(Actor::User(owner))
        .with_client(Some(IP.into()), Some(AGENT.into()));
    request_video(
        store,
        VideoId::from_uuid(Uuid::now_v7()),
        spec(owner),
        &meta,
        None,
    )
    .await
    .expect("request");
}

#[tokio::test]
async fn a_handler_gets_every_event_with_only_the_bodies_and_personal_data_it_reads() {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    registered_and_requested(&store).await;
    // Stored sealed: opening is what puts the fields back.
    let stored: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, '') FROM events")
            .fetch_one(&db.pool)
            .await
            .expect("stored");
    for secret in [EMAIL, PROMPT, IP, AGENT] {
        assert!(!stored.contains(secret), "{secret} stored in clear");
    }

    let everything = read_all(&db.pool, "test.reads.everything", Reads::EVERYTHING).await;
    let videos = read_all(&db.pool, "test.reads.videos", Reads::bodies_of(&["Video"])).await;
    let positions =
        |events: &[StoredEvent]| -> Vec<i64> { events.iter().map(|e| e.global_position).collect() };
    assert_eq!(
        positions(&videos),
        positions(&everything),
        "every event, in order"
    );
    assert!(everything.len() >= 3, "{everything:?}");

    let requested = |events: &[StoredEvent]| -> StoredEvent {
        events
            .iter()
            .find(|e| e.event_type == "VideoRequested")
            .expect("requested")
            .clone()
    };
    let (all, narrow) = (requested(&everything), requested(&videos));
    assert_eq!(all.payload["VideoRequested"]["spec"]["prompt"], PROMPT);
    assert_eq!(narrow.payload, all.payload, "a followed body, opened");
    assert_eq!(all.metadata["client_ip"], IP);
    assert_eq!(all.metadata["user_agent"], AGENT);

    for (all, narrow) in everything.iter().zip(&videos) {
        if narrow.aggregate_type == "Video" {
            assert_eq!(narrow.payload, all.payload);
        } else {
            assert_eq!(narrow.payload, Value::Null, "{} unread", all.event_type);
            assert_ne!(all.payload, Value::Null);
        }
        let metadata = narrow.metadata.as_object().expect("metadata");
        for withheld in ["$pii", "client_ip", "user_agent"] {
            assert!(!metadata.contains_key(withheld), "{withheld}: {metadata:?}");
        }
        assert_eq!(
            narrow.metadata["actor"], all.metadata["actor"],
            "the rest is kept"
        );
        assert_eq!(
            (&narrow.event_type, &narrow.aggregate_id, narrow.sequence),
            (&all.event_type, &all.aggregate_id, all.sequence)
        );
    }
    let registered = everything
        .iter()
        .find(|e| e.event_type == "UserRegistered")
        .expect("registered");
    assert_eq!(registered.payload["UserRegistered"]["email"], EMAIL);
}

/// A read model's handler that reads everything, whatever it says it reads.
struct ReadingEverything(Arc<dyn EventHandler>);

#[async_trait]
impl EventHandler for ReadingEverything {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        self.0.handle(conn, event).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        self.0.handle_batch(conn, events).await
    }
}

/// Every read model's tables emptied and built again by its projector alone, from the start
/// of the log, reading what it says it reads or everything; an order-independent digest of
/// each table.
async fn projected(pool: &sqlx::PgPool, everything: bool) -> Vec<(String, String)> {
    let tables: Vec<&str> = replay::all_models(pool)
        .expect("models")
        .iter()
        .flat_map(|model| model.tables.iter().copied())
        .collect();
    sqlx::query(&format!("TRUNCATE {} CASCADE", tables.join(", ")))
        .execute(pool)
        .await
        .expect("truncate");
    sqlx::query("DELETE FROM subscription_checkpoints WHERE name = ANY($1)")
        .bind(READ_MODELS.to_vec())
        .execute(pool)
        .await
        .expect("checkpoints");
    for (subscription, handler) in read_models::all(pool) {
        let handler: Arc<dyn EventHandler> = if everything {
            Arc::new(ReadingEverything(handler))
        } else {
            handler
        };
        subscription.drain(handler.as_ref()).await.expect("drain");
    }
    let mut digests = Vec::new();
    for table in tables {
        let (rows, digest): (i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("digest");
        digests.push((format!("{table} ({rows} rows)"), digest.unwrap_or_default()));
    }
    digests
}

#[tokio::test]
async fn every_read_model_builds_the_same_tables_from_what_it_says_it_reads_as_from_everything() {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    mixed_workload(&store, 3).await;
    registered_and_requested(&store).await;

    let narrowed = projected(&db.pool, false).await;
    let everything = projected(&db.pool, true).await;
    assert_eq!(narrowed, everything);
    let empty: Vec<&(String, String)> = narrowed
        .iter()
        .filter(|(table, _)| table.ends_with(" (0 rows)"))
        .collect();
    assert!(
        empty.is_empty(),
        "every table has rows to compare: {empty:?}"
    );
}

#[test]
fn a_read_for_several_readers_reads_what_any_of_them_reads() {
    let users = Reads::bodies_of(&["User"]);
    let videos = Reads::bodies_of(&["Video", "User"]);
    let union = Reads::union([users.clone(), videos]);
    assert_eq!(union, Reads::bodies_of(&["User", "Video"]));
    assert!(union.reads_body("Video") && !union.reads_body("Image"));
    assert_eq!(Reads::union([users, Reads::EVERYTHING]), Reads::EVERYTHING);
    assert_eq!(
        Reads::union([]),
        Reads::bodies_of(&[]),
        "no reader reads nothing"
    );
}

fn spec(owner: UserId) -> VideoSpec {
    VideoSpec {
        owner,
        prompt: PROMPT.into(),
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
    }
}

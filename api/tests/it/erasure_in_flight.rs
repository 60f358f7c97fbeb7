//! What an erasure must also reach (ADR 0043, stop 28): the stored replies of requests about
//! the user made under someone else's Idempotency-Key scope, the work still in flight (videos
//! queued or at a provider, files stored after the cleanup ran, a request that reaches the
//! store after the erasure), and the files on an S3 blob store.

use crate::common::{TestApp, PASSWORD};
use crate::erasure::{
    app, clean_up, delete_me, files_are_deleted_and_facts_stay, user_with_a_video,
};

use std::sync::Arc;

use async_trait::async_trait;

use axum::body::Bytes;
use framegate_commands::blobs::{video_keys, Blobs, S3Config, S3Store};
use framegate_commands::erasure::CANCEL_REASON;
use framegate_commands::error::BoxError;
use framegate_commands::videos::{request_video, RequestError, WithinRequest};
use framegate_commands::StoredEvent;
use framegate_commands::{Actor, CommandError, CommandMetadata};
use framegate_domain::{
    Credits, ProviderKind, ProviderPreference, UserId, VideoCommand, VideoId, VideoSpec,
};
use framegate_projections::read_models::catch_up_all;
use framegate_projections::Subscription;
use framegate_workers::settlement::{self, Settlement};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

/// A registration sent anonymously with an Idempotency-Key, as a client that retries would.
async fn register_with_key(app: &TestApp, email: &str, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/register"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("idempotency-key", key)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_registrations_stored_reply_is_not_replayed_after_the_erasure() {
    let app = app().await;
    let email = "replayed@example.com";
    let first = register_with_key(&app, email, "signup-1").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let id: Uuid = first.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let retried = register_with_key(&app, email, "signup-1").await;
    assert_eq!(
        retried
            .headers()
            .get("idempotency-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "a retry replays the stored reply"
    );
    let named: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE user_id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("records");
    assert_eq!(
        named, 1,
        "the anonymous record names the user it registered"
    );

    let (_, admin) = app.admin("root@example.com").await;
    let erased = app
        .post(
            &format!("/v1/admin/users/{id}/erase"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(erased.status(), StatusCode::OK);

    // The reply held the address and the id: it is gone, and the same request runs anew.
    let after = register_with_key(&app, email, "signup-1").await;
    assert_eq!(after.status(), StatusCode::CREATED);
    assert!(after.headers().get("idempotency-replayed").is_none());
    let again: Value = after.json().await.expect("json");
    assert_ne!(
        again["id"],
        json!(id),
        "a new account, not the erased one's reply"
    );
}

async fn video_command(app: &TestApp, video: Uuid, command: VideoCommand) {
    app.state
        .store
        .videos()
        .execute(
            &video.to_string(),
            command,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("video command");
}

/// (balance, reserved) of the user's account.
async fn money(app: &TestApp, user: Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT balance, reserved FROM credit_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.db.pool)
        .await
        .expect("account")
}

/// (status, estimated cost) of a video.
async fn video(app: &TestApp, id: Uuid) -> (String, i64) {
    sqlx::query_as("SELECT status, estimated_cost FROM videos WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("video")
}

async fn settle(app: &TestApp) {
    Subscription::new(settlement::SUBSCRIPTION, app.db.pool.clone())
        .drain(&Settlement::new(app.state.store.clone()))
        .await
        .expect("settle");
    catch_up_all(&app.db.pool).await.expect("project");
}

/// A request of `user`'s that was authenticated before the erasure.
fn late_spec(user: Uuid) -> VideoSpec {
    VideoSpec {
        owner: UserId::from_uuid(user),
        prompt: "sent before the erasure".into(),
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

/// The metadata of `user`'s own request, from their client.
fn by(user: Uuid) -> CommandMetadata {
    CommandMetadata::new_request(Actor::User(UserId::from_uuid(user)))
        .with_client(Some("203.0.113.9".into()), Some("late-client/1".into()))
}

#[tokio::test]
async fn work_in_flight_is_cancelled_and_files_stored_after_the_cleanup_are_deleted() {
    let app = app().await;
    let (user, access) = user_with_a_video(&app, "in-flight@example.com").await;
    let queued: Uuid = sqlx::query_scalar("SELECT id FROM videos WHERE owner_id = $1")
        .bind(user)
        .fetch_one(&app.db.pool)
        .await
        .expect("video");
    // A second video a provider holds.
    let created: Value = app
        .post(
            "/v1/videos",
            Some(&access),
            json!({"prompt": "a second one", "provider": "simulator", "duration_seconds": 5,
                   "aspect_ratio": "16:9", "resolution": "720p"}),
        )
        .await
        .json()
        .await
        .expect("json");
    let running: Uuid = created["id"].as_str().expect("id").parse().expect("uuid");
    let start = VideoCommand::StartSubmission {
        attempt: 1,
        provider: ProviderKind::Simulator,
        model: "simulator-v1".into(),
    };
    video_command(&app, running, start).await;
    let submitted = VideoCommand::MarkSubmitted {
        provider_job_id: format!("sim-{running}"),
    };
    video_command(&app, running, submitted).await;
    let (balance, reserved) = money(&app, user).await;
    let (_, queued_cost) = video(&app, queued).await;
    let (_, running_cost) = video(&app, running).await;
    assert_eq!(reserved, queued_cost + running_cost);

    let erased = delete_me(&app, &access, PASSWORD).await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    // In the erasure's own transaction: nothing of the user is dispatched any more.
    assert_eq!(video(&app, queued).await.0, "cancelled");
    assert_eq!(video(&app, running).await.0, "cancel_requested");
    clean_up(&app).await;

    // A request that passed authentication before the erasure and reaches the store after
    // it: refused there, so nothing new is recorded about the user and no provider is paid
    // to render a prompt that now reads `[erased]`.
    let late = VideoId::from_uuid(Uuid::now_v7());
    let refused = request_video(&app.state.store, late, late_spec(user), &by(user), None).await;
    assert!(
        matches!(
            refused,
            Err(RequestError::Video(CommandError::AccountErased))
        ),
        "{refused:?}"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 OR payload::text LIKE $2",
    )
    .bind(late.to_string())
    .bind(format!("%{late}%"))
    .fetch_one(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(recorded, 0, "neither the video nor its reservation");
    // The render finished upstream before the provider could stop it: the worker stores
    // the files (after the cleanup ran), the provider bills the cancellation.
    let keys = video_keys(VideoId::from_uuid(running)).expect("keys");
    for key in [&keys.video, &keys.poster, &keys.thumbnail] {
        app.state
            .blobs
            .put(
                key,
                Bytes::from_static(b"late frames"),
                "application/octet-stream",
            )
            .await
            .expect("put");
    }
    video_command(&app, running, VideoCommand::Cancel { charged: true }).await;
    clean_up(&app).await;

    for key in [&keys.video, &keys.poster, &keys.thumbnail] {
        assert_eq!(
            app.state.blobs.head(key).await.expect("head"),
            None,
            "{key:?} stored after the cleanup, deleted"
        );
    }
    // Money is exact: the queued video released, the billed one captured.
    settle(&app).await;
    assert_eq!(money(&app, user).await, (balance - running_cost, 0));
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM credit_ledger WHERE user_id = $1 AND kind IN ('released', 'captured')
          ORDER BY global_position",
    )
    .bind(user)
    .fetch_all(&app.db.pool)
    .await
    .expect("ledger");
    assert_eq!(
        kinds.iter().filter(|k| *k == "released").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "captured").count(),
        1,
        "{kinds:?}"
    );
}

/// Holds a request's transaction open after its events were appended (it holds its user's
/// key row, as every write of personal data does) until released.
struct Holding {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl WithinRequest for Holding {
    async fn run(
        &self,
        _conn: &mut PgConnection,
        _written: &[StoredEvent],
    ) -> Result<bool, BoxError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(false)
    }
}

/// Waits until a backend of the test database waits for a lock.
async fn until_a_lock_is_awaited(pool: &sqlx::PgPool) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("activity");
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("nothing waited for a lock");
}

/// A request that appended before the erasure read the user's videos and commits while the
/// erasure waits for the user's key: the erasure sees it once it holds the key, decides
/// again, and cancels that video in its own transaction, before any cleanup runs.
#[tokio::test]
async fn a_request_committing_while_the_erasure_waits_is_cancelled_by_the_erasure() {
    let app = app().await;
    let (user, access) = user_with_a_video(&app, "racing@example.com").await;
    let late = VideoId::from_uuid(Uuid::now_v7());
    let hold = Holding {
        entered: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
    };
    let meta = by(user);
    let request = request_video(&app.state.store, late, late_spec(user), &meta, Some(&hold));
    let erasure = async {
        hold.entered.notified().await;
        let release = async {
            until_a_lock_is_awaited(&app.db.pool).await;
            hold.release.notify_one();
        };
        tokio::join!(delete_me(&app, &access, PASSWORD), release).0
    };
    let (requested, erased) = tokio::join!(request, erasure);
    requested.expect("the request committed before the erasure");
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        video(&app, late.as_uuid()).await.0,
        "cancelled",
        "cancelled by the erasure itself"
    );
}

/// A request recorded after the erasure by a process from before the store refused such
/// writes (a rolling upgrade) is still cancelled by the cleanup. The old process's row is
/// made by copying the user's earlier request to a new video.
#[tokio::test]
async fn a_request_an_older_process_recorded_after_the_erasure_is_cancelled() {
    let app = app().await;
    let (user, access) = user_with_a_video(&app, "upgrade@example.com").await;
    let erased = delete_me(&app, &access, PASSWORD).await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    clean_up(&app).await;

    let late = Uuid::now_v7();
    let copied = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT aggregate_type, $1, 1, event_type, event_version, payload, metadata
           FROM events
          WHERE event_type = 'VideoRequested'
            AND payload -> 'VideoRequested' -> 'spec' ->> 'owner' = $2
          LIMIT 1",
    )
    .bind(late.to_string())
    .bind(user.to_string())
    .execute(&app.db.pool)
    .await
    .expect("an older process's row");
    assert_eq!(copied.rows_affected(), 1);
    clean_up(&app).await;

    let reason: String = sqlx::query_scalar(
        "SELECT payload -> 'CancelRequested' ->> 'reason' FROM events
          WHERE aggregate_id = $1 AND event_type = 'CancelRequested'",
    )
    .bind(late.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("cancellation");
    assert_eq!(reason, CANCEL_REASON);
}

/// An S3 store on a bucket of its own (moto at FRAMEGATE_TEST_S3_ENDPOINT, as
/// `scripts/services.sh` starts it).
async fn s3_blobs() -> Blobs {
    let endpoint = std::env::var("FRAMEGATE_TEST_S3_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:9000".to_owned());
    let bucket = format!("framegate-test-{}", Uuid::new_v4().simple());
    let config = S3Config::new(bucket, "us-east-1", Some(endpoint.clone()))
        .with_static_credentials("test", "test");
    let store = S3Store::new(&config).await.expect("S3 client");
    if let Err(error) = store.ensure_bucket().await {
        panic!("no S3 test server at {endpoint} ({error}): start it with scripts/services.sh");
    }
    Arc::new(store)
}

#[tokio::test]
async fn an_erased_users_files_are_deleted_from_s3() {
    let app = TestApp::with_blobs(s3_blobs().await).await;
    files_are_deleted_and_facts_stay(&app).await;
}

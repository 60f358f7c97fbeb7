//! The test rig: a database, an owner with credits, a receiver, endpoints, videos driven
//! through their commands, and the delivery subscription and sender running in the
//! background until the rig is dropped.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use framegate_commands::blobs::{Blobs, FilesystemStore};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::webhook_signature::{verify, WebhookSecret};
use framegate_commands::webhooks::{self as endpoints, NewEndpoint};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoCommand, VideoId,
    VideoSpec, VideoWebhook, WebhookEndpointId,
};
use framegate_projections::notify::Notifications;
use framegate_projections::read_models::webhook_endpoints;
use framegate_projections::Subscription;
use framegate_workers::webhooks::{Sender, WebhookConfig, WebhookEnqueuer, SUBSCRIPTION};
use tokio::sync::watch;
use uuid::Uuid;

use super::receiver::{self, Receiver};

/// A delivery row: type, status, attempts, last status code, last error.
pub type DeliveryState = (String, String, i32, Option<i32>, Option<String>);

pub const WAIT: Duration = Duration::from_secs(15);

pub struct Rig {
    pub db: TestDatabase,
    pub store: EventStore,
    pub owner: UserId,
    pub receiver: Receiver,
    blobs: Blobs,
    _blob_dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

pub fn config() -> WebhookConfig {
    WebhookConfig {
        allow_private: true,
        retry_schedule: vec![Duration::from_millis(100)],
        timeout: Duration::from_secs(3),
        ..WebhookConfig::default()
    }
}

impl Rig {
    pub async fn new() -> Self {
        let db = TestDatabase::new().await;
        let store = framegate_projections::inline::event_store(db.pool.clone());
        let owner = UserId::from_uuid(Uuid::now_v7());
        store
            .credits()
            .execute(
                &owner.to_string(),
                CreditCommand::Grant {
                    amount: Credits::new(10_000),
                    reason: "test".into(),
                    granted_by: "system".into(),
                },
                &CommandMetadata::new_request(Actor::System),
            )
            .await
            .expect("grant");
        let blob_dir = tempfile::tempdir().expect("blobs");
        let blobs: Blobs = Arc::new(FilesystemStore::new(
            blob_dir.path().to_path_buf(),
            b"0123456789abcdef0123456789abcdef".to_vec(),
            "http://127.0.0.1:8080".to_owned(),
        ));
        Self {
            db,
            store,
            owner,
            receiver: Receiver::start().await,
            blobs,
            _blob_dir: blob_dir,
            stop: watch::channel(false).0,
        }
    }

    /// Runs the subscription and a sender with `config` until the rig is dropped.
    pub fn start(&self, config: WebhookConfig) {
        self.start_subscription();
        self.start_sender(config);
    }

    pub fn start_subscription(&self) {
        let subscription = Subscription::new(SUBSCRIPTION, self.db.pool.clone())
            .with_poll_interval(Duration::from_millis(20));
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            let handler = WebhookEnqueuer::new(Duration::from_secs(3600));
            let _ = subscription
                .run(&handler, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
    }

    pub fn start_sender(&self, config: WebhookConfig) {
        let (notifications, _listening) =
            Notifications::spawn(self.db.pool.clone(), self.stop.subscribe());
        let sender = Sender::new(
            self.db.pool.clone(),
            self.store.clone(),
            config,
            Some(self.blobs.clone()),
        )
        .expect("client");
        tokio::spawn(sender.run(Some(notifications), self.stop.subscribe()));
    }

    /// A new endpoint of the owner at `path` of the receiver; returns its id and secret.
    pub async fn endpoint(&self, path: &str, events: Option<&[&str]>) -> (Uuid, WebhookSecret) {
        self.endpoint_at(&self.receiver.url(path), events).await
    }

    pub async fn endpoint_at(&self, url: &str, events: Option<&[&str]>) -> (Uuid, WebhookSecret) {
        let id = Uuid::now_v7();
        let secret = endpoints::create(
            &self.store,
            NewEndpoint {
                endpoint_id: WebhookEndpointId::from_uuid(id),
                owner: self.owner,
                url: url.to_owned(),
                events: events.map(|e| e.iter().map(|s| (*s).to_owned()).collect()),
                description: None,
            },
            &CommandMetadata::new_request(Actor::User(self.owner)),
        )
        .await
        .expect("create endpoint");
        (id, secret)
    }

    pub async fn request(&self, webhook: Option<VideoWebhook>) -> VideoId {
        let video = VideoId::from_uuid(Uuid::now_v7());
        let spec = VideoSpec {
            owner: self.owner,
            prompt: "a paper boat on a rainy street".into(),
            negative_prompt: None,
            provider: ProviderPreference::Simulator,
            model: None,
            duration_seconds: 4,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            image_id: None,
            seed: None,
            estimated_cost: Credits::new(4),
            generate_audio: false,
            external_id: Some("boat-1".into()),
            webhook,
        };
        let meta = CommandMetadata::new_request(Actor::User(self.owner));
        request_video(&self.store, video, spec, &meta, None)
            .await
            .expect("request");
        video
    }

    pub async fn video(&self, video: VideoId, command: VideoCommand) {
        self.store
            .videos()
            .execute(
                &video.to_string(),
                command,
                &CommandMetadata::new_request(Actor::System),
            )
            .await
            .expect("video command");
    }

    pub async fn start_video(&self, video: VideoId) {
        self.video(
            video,
            VideoCommand::StartSubmission {
                attempt: 1,
                provider: ProviderKind::Simulator,
                model: "simulator-v1".into(),
            },
        )
        .await;
        self.video(
            video,
            VideoCommand::MarkSubmitted {
                provider_job_id: "sim-1".into(),
            },
        )
        .await;
    }

    pub async fn complete(&self, video: VideoId) {
        self.video(
            video,
            VideoCommand::Deliver {
                blob_key: format!("videos/{video}/video.mp4"),
                bytes: 1000,
                sha256: "ab".repeat(32),
                duration_ms: 4000,
                width: 1280,
                height: 720,
                final_cost: Credits::new(4),
            },
        )
        .await;
    }

    /// The event ids of the video's events of `event_type`, in order.
    pub async fn event_ids(&self, video: VideoId, event_type: &str) -> Vec<Uuid> {
        sqlx::query_scalar(
            "SELECT event_id FROM events WHERE aggregate_id = $1 AND event_type = $2 ORDER BY sequence",
        )
        .bind(video.to_string())
        .bind(event_type)
        .fetch_all(&self.db.pool)
        .await
        .expect("events")
    }

    pub async fn delivery_state(&self, endpoint: Uuid) -> Vec<DeliveryState> {
        sqlx::query_as(
            "SELECT event_type, status, attempts, last_status, last_error
               FROM webhook_delivery_states WHERE endpoint_id = $1 ORDER BY seq",
        )
        .bind(endpoint)
        .fetch_all(&self.db.pool)
        .await
        .expect("deliveries")
    }

    /// Waits until `condition` holds of the endpoint's deliveries.
    pub async fn wait_deliveries(
        &self,
        endpoint: Uuid,
        condition: impl Fn(&[DeliveryState]) -> bool,
    ) -> Vec<DeliveryState> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let state = self.delivery_state(endpoint).await;
            if condition(&state) {
                return state;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Checks a received delivery as a receiver would (our verifier).
pub fn assert_signed(received: &receiver::Received, secret: &WebhookSecret) {
    let timestamp: i64 = received
        .header("webhook-timestamp")
        .parse()
        .expect("timestamp");
    assert_eq!(
        verify(
            secret,
            received.header("webhook-id"),
            timestamp,
            received.body.as_bytes(),
            received.header("webhook-signature"),
            chrono::Utc::now().timestamp(),
        ),
        Ok(()),
        "signature of {}",
        received.body
    );
    assert_eq!(received.header("content-type"), "application/json");
    assert!(received
        .header("user-agent")
        .starts_with("Framegate-Webhooks/"));
}

/// What the official `standardwebhooks` library (PyPI, pinned in scripts/services.sh) says
/// of a received delivery: `ok` or the exception's name.
pub fn official_verdict(received: &receiver::Received, secret: &WebhookSecret) -> String {
    let python =
        std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys
from standardwebhooks.webhooks import Webhook
secret, msg_id, timestamp, signature, body = sys.argv[1:6]
try:
    payload = Webhook(secret).verify(body, {"webhook-id": msg_id,
        "webhook-timestamp": timestamp, "webhook-signature": signature})
    print("ok" if payload["id"] == msg_id else "wrong id")
except Exception as error:
    print(type(error).__name__)
"#;
    let output = Command::new(&python)
        .args(["-c", script])
        .args([
            secret.expose().as_str(),
            received.header("webhook-id"),
            received.header("webhook-timestamp"),
            received.header("webhook-signature"),
            received.body.as_str(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {python} (FRAMEGATE_TEST_CLIENTS_PYTHON): {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until the delivery subscription has read event `event_id`.
pub async fn wait_read(rig: &Rig, event_id: Uuid) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let read: bool = sqlx::query_scalar(
            "SELECT (c.last_tx_id, c.last_position) >= (e.tx_id, e.global_position)
               FROM subscription_checkpoints c, events e
              WHERE c.name = $1 AND e.event_id = $2",
        )
        .bind(SUBSCRIPTION)
        .bind(event_id)
        .fetch_optional(&rig.db.pool)
        .await
        .expect("checkpoint")
        .unwrap_or(false);
        if read {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription never read it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the endpoint is disabled; returns its row.
pub async fn wait_disabled(rig: &Rig, endpoint: Uuid) -> webhook_endpoints::WebhookEndpointRow {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let row = webhook_endpoints::get(
            &rig.db.pool,
            rig.owner,
            WebhookEndpointId::from_uuid(endpoint),
        )
        .await
        .expect("endpoint")
        .expect("exists");
        if !row.is_enabled() {
            return row;
        }
        assert!(std::time::Instant::now() < deadline, "never disabled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

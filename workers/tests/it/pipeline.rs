//! The video pipeline end to end on the simulator: real Postgres, real ffmpeg, filesystem
//! blobs; credits settled by the settlement process manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use framegate_commands::blobs::{BlobKey, Blobs, FilesystemStore};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ImageCommand, ImageContentType, ImageExif, ImageId, ModerationDecision,
    ProviderKind, ProviderPreference, UserId, VideoCommand, VideoId, VideoSpec,
};
use framegate_projections::read_models::{catch_up_all, credits, videos};
use framegate_projections::Subscription;
use framegate_workers::media::{probe, MediaTools};
use framegate_workers::pipeline::{Dispatcher, Poller, Providers, DISPATCHER};
use framegate_workers::provider::{Job, VideoProvider};
use framegate_workers::settlement::{self, Settlement};
use framegate_workers::simulator::{Simulator, SimulatorConfig};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

struct Rig {
    db: TestDatabase,
    store: EventStore,
    simulator: Arc<Simulator>,
    poller: Poller,
    blobs_dir: tempfile::TempDir,
    owner: UserId,
}

async fn rig(config: SimulatorConfig) -> Rig {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let tools = MediaTools::from_env().expect("media tools");
    let simulator = Arc::new(Simulator::new(db.pool.clone(), tools.clone(), config));
    let mut map: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    map.insert(ProviderKind::Simulator, simulator.clone());
    let providers: Providers = Arc::new(map);
    let blobs_dir = tempfile::tempdir().expect("blobs dir");
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        blobs_dir.path().to_path_buf(),
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let poller = Poller {
        store: store.clone(),
        pool: db.pool.clone(),
        providers,
        blobs,
        tools,
        max_job_time: Duration::from_secs(120),
        catalog: framegate_domain::catalog::Catalog::defaults(),
        pacing: Default::default(),
    };
    let owner = UserId::from_uuid(Uuid::now_v7());
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "test".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(
            &owner.to_string(),
            grant,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
    Rig {
        db,
        store,
        simulator,
        poller,
        blobs_dir,
        owner,
    }
}

impl Rig {
    async fn request(&self, seconds: u32) -> VideoId {
        self.request_with_image(seconds, None).await
    }

    async fn request_with_image(&self, seconds: u32, image_id: Option<ImageId>) -> VideoId {
        let video_id = VideoId::from_uuid(Uuid::now_v7());
        let spec = VideoSpec {
            owner: self.owner,
            prompt: "a paper boat on a rainy street".into(),
            negative_prompt: None,
            provider: ProviderPreference::Auto,
            model: Some("simulator-v1".into()),
            duration_seconds: seconds,
            aspect_ratio: "16:9".into(),
            resolution: "480p".into(),
            image_id,
            seed: Some(7),
            estimated_cost: Credits::new(i64::from(seconds)),
            generate_audio: false,
            external_id: None,
            webhook: None,
        };
        request_video(
            &self.store,
            video_id,
            spec,
            &CommandMetadata::new_request(Actor::User(self.owner)),
            None,
        )
        .await
        .expect("request");
        video_id
    }

    fn dispatcher(&self) -> (Subscription, Dispatcher) {
        (
            Subscription::new(DISPATCHER, self.db.pool.clone()),
            Dispatcher::new(
                self.store.clone(),
                self.poller.providers.clone(),
                self.poller.blobs.clone(),
            ),
        )
    }

    /// Dispatch, project, poll and settle until `video` is terminal (bounded).
    async fn drive(&self, video: VideoId) -> videos::VideoRow {
        let (subscription, dispatcher) = self.dispatcher();
        let settlement_sub = Subscription::new(settlement::SUBSCRIPTION, self.db.pool.clone());
        let settlement = Settlement::new(self.store.clone());
        for _ in 0..200 {
            subscription.drain(&dispatcher).await.expect("dispatch");
            catch_up_all(&self.db.pool).await.expect("project");
            let row = videos::get(&self.db.pool, video)
                .await
                .expect("row")
                .expect("video");
            if matches!(row.status.as_str(), "completed" | "failed" | "cancelled") {
                settlement_sub.drain(&settlement).await.expect("settle");
                catch_up_all(&self.db.pool).await.expect("project");
                return row;
            }
            self.poller.sweep().await.expect("sweep");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("video {video} did not finish");
    }

    /// Stores `bytes` as an uploaded image of the rig's owner, as the images API does.
    async fn upload_image(&self, bytes: Vec<u8>) -> ImageId {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let image_id = ImageId::for_content(self.owner, &sha256);
        let key = format!("images/{}/{image_id}/original.png", self.owner);
        self.poller
            .blobs
            .put(
                &BlobKey::new(key.clone()).expect("key"),
                bytes.clone().into(),
                "image/png",
            )
            .await
            .expect("put");
        let upload = ImageCommand::Upload {
            image_id,
            owner: self.owner,
            sha256,
            content_type: ImageContentType::Png,
            bytes: bytes.len() as u64,
            width: 640,
            height: 360,
            orientation: 1,
            exif: ImageExif::default(),
            blob_key: key,
            thumbnail_key: format!("images/{}/{image_id}/thumbnail.jpg", self.owner),
            moderation: ModerationDecision::allow(),
        };
        self.store
            .images()
            .execute(
                &image_id.to_string(),
                upload,
                &CommandMetadata::new_request(Actor::User(self.owner)),
            )
            .await
            .expect("upload");
        image_id
    }

    async fn account(&self) -> (i64, i64) {
        let account = credits::account(&self.db.pool, self.owner)
            .await
            .expect("account");
        (account.balance, account.reserved)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_video_is_rendered_stored_validated_and_charged_once() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_millis(300),
        ..SimulatorConfig::default()
    })
    .await;
    let video = rig.request(2).await;
    let row = rig.drive(video).await;
    assert_eq!(row.status, "completed", "{row:?}");
    assert_eq!(row.provider.as_deref(), Some("simulator"));
    assert_eq!(row.final_cost, Some(2));
    let key = row.blob_key.clone().expect("stored");
    assert_eq!(key, format!("videos/{video}/video.mp4"));
    // The stored file is a real H.264 MP4 of the requested length and size.
    let file = rig.blobs_dir.path().join("objects").join(&key);
    let report = probe(&MediaTools::from_env().expect("tools"), &file)
        .await
        .expect("probe");
    assert_eq!(
        (report.codec.as_str(), report.width, report.height),
        ("h264", 854, 480)
    );
    assert!(
        (1_900..=2_100).contains(&report.duration_ms),
        "{}",
        report.duration_ms
    );
    assert_eq!(Some(report.sha256.clone()), row.sha256);
    for derived in ["poster.jpg", "thumbnail.jpg"] {
        let head = rig
            .poller
            .blobs
            .head(&BlobKey::new(format!("videos/{video}/{derived}")).expect("key"))
            .await
            .expect("head");
        assert!(head.is_some_and(|bytes| bytes > 0), "{derived}");
    }
    assert_eq!(
        rig.account().await,
        (98, 0),
        "the final cost is captured, the reservation settled"
    );

    // Settling again (a replay after a crash) changes nothing.
    sqlx::query(
        "UPDATE subscription_checkpoints SET last_tx_id = '0', last_position = 0 WHERE name = $1",
    )
    .bind(settlement::SUBSCRIPTION)
    .execute(&rig.db.pool)
    .await
    .expect("rewind");
    Subscription::new(settlement::SUBSCRIPTION, rig.db.pool.clone())
        .drain(&Settlement::new(rig.store.clone()))
        .await
        .expect("settle");
    catch_up_all(&rig.db.pool).await.expect("project");
    assert_eq!(rig.account().await, (98, 0));
}

/// A solid green 640×360 PNG.
fn green_png() -> Vec<u8> {
    let image = image::RgbImage::from_pixel(640, 360, image::Rgb([20, 220, 40]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("png");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_to_video_request_opens_on_the_uploaded_image() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_millis(50),
        ..SimulatorConfig::default()
    })
    .await;
    let image = rig.upload_image(green_png()).await;
    let video = rig.request_with_image(2, Some(image)).await;
    let row = rig.drive(video).await;
    assert_eq!(row.status, "completed", "{row:?}");

    // The provider received a re-encoded copy of the image, not the stored original.
    let (sent_type,): (String,) =
        sqlx::query_as("SELECT start_image_type FROM simulator_jobs WHERE video_id = $1")
            .bind(video.as_uuid())
            .fetch_one(&rig.db.pool)
            .await
            .expect("job");
    assert_eq!(sent_type, "image/jpeg");

    // The first frame is the green image.
    let file = rig
        .blobs_dir
        .path()
        .join("objects")
        .join(row.blob_key.expect("stored"));
    let frame = rig.blobs_dir.path().join("first.jpg");
    framegate_workers::media::extract_poster(
        &MediaTools::from_env().expect("tools"),
        &file,
        0.0,
        &frame,
    )
    .await
    .expect("frame");
    let pixels = image::open(&frame).expect("decode").to_rgb8();
    let centre = pixels.get_pixel(pixels.width() / 2, pixels.height() / 2);
    // Away from the clock in the top-left corner.
    let edge = pixels.get_pixel(pixels.width() - 16, pixels.height() / 2);
    for pixel in [centre, edge] {
        assert!(
            pixel[1] > 150 && pixel[0] < 100 && pixel[2] < 110,
            "expected the green start image, got {pixel:?}"
        );
    }
}

#[tokio::test]
async fn a_video_whose_image_was_deleted_fails_without_charge() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_millis(50),
        ..SimulatorConfig::default()
    })
    .await;
    let image = rig.upload_image(green_png()).await;
    let video = rig.request_with_image(2, Some(image)).await;
    rig.store
        .images()
        .execute(
            &image.to_string(),
            ImageCommand::Delete { by: rig.owner },
            &CommandMetadata::new_request(Actor::User(rig.owner)),
        )
        .await
        .expect("delete");
    let row = rig.drive(video).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("image_unavailable"))
    );
    assert_eq!(rig.account().await, (100, 0), "released, not charged");
    let submitted: i64 = sqlx::query_scalar("SELECT count(*) FROM simulator_jobs")
        .fetch_one(&rig.db.pool)
        .await
        .expect("count");
    assert_eq!(submitted, 0, "nothing was sent to the provider");
}

/// A `VideoRequested` handled again after its video was submitted (a lagging or restarted
/// dispatcher, a sweep that got there first) must not fail the job the provider holds, even
/// when the state it was requested in no longer holds (its image deleted since).
#[tokio::test]
async fn a_request_handled_again_after_submission_leaves_the_job_alone() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_secs(600),
        ..SimulatorConfig::default()
    })
    .await;
    let image = rig.upload_image(green_png()).await;
    let video = rig.request_with_image(2, Some(image)).await;
    let (subscription, dispatcher) = rig.dispatcher();
    subscription.drain(&dispatcher).await.expect("dispatch");
    let submitted = videos::get(&rig.db.pool, video)
        .await
        .expect("row")
        .expect("video");
    assert_eq!(submitted.status, "submitted");
    rig.store
        .images()
        .execute(
            &image.to_string(),
            ImageCommand::Delete { by: rig.owner },
            &CommandMetadata::new_request(Actor::User(rig.owner)),
        )
        .await
        .expect("delete");
    // The dispatcher meets the request again from the start of the log.
    sqlx::query(
        "UPDATE subscription_checkpoints SET last_tx_id = '0', last_position = 0 WHERE name = $1",
    )
    .bind(DISPATCHER)
    .execute(&rig.db.pool)
    .await
    .expect("rewind");
    subscription
        .drain(&dispatcher)
        .await
        .expect("dispatch again");
    let row = videos::get(&rig.db.pool, video)
        .await
        .expect("row")
        .expect("video");
    assert_eq!(
        (row.status.as_str(), row.provider_job_id.as_deref()),
        ("submitted", submitted.provider_job_id.as_deref()),
        "still the provider's job"
    );
    let (balance, reserved) = rig.account().await;
    assert_eq!((balance, reserved), (100, 2), "still reserved");
}

#[tokio::test]
async fn a_moderated_video_fails_finally_and_is_not_charged() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_millis(50),
        moderation_rate: 1.0,
        ..SimulatorConfig::default()
    })
    .await;
    let video = rig.request(3).await;
    let row = rig.drive(video).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("moderated"))
    );
    assert_eq!(
        (row.error_retryable, row.error_charged),
        (Some(false), Some(false))
    );
    assert_eq!(rig.account().await, (100, 0), "released, not charged");
}

#[tokio::test]
async fn a_crash_between_submitting_and_recording_finds_the_job_instead_of_submitting_twice() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_millis(50),
        ..SimulatorConfig::default()
    })
    .await;
    let video = rig.request(1).await;
    // The dispatcher recorded its intent and the provider accepted the job, then it died.
    let meta = CommandMetadata::new_request(Actor::System);
    let intent = VideoCommand::StartSubmission {
        attempt: 1,
        provider: ProviderKind::Simulator,
        model: "simulator-v1".into(),
    };
    rig.store
        .videos()
        .execute(&video.to_string(), intent, &meta)
        .await
        .expect("intent");
    let job = Job {
        video_id: video,
        model: "simulator-v1".into(),
        prompt: "p".into(),
        negative_prompt: None,
        duration_seconds: 1,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        seed: None,
        image: None,
    };
    let job_id = rig
        .simulator
        .submit(&job)
        .await
        .expect("submitted before the crash");

    let row = rig.drive(video).await;
    assert_eq!(row.status, "completed");
    assert_eq!(row.provider_job_id.as_deref(), Some(job_id.as_str()));
    let attempts: i32 =
        sqlx::query_scalar("SELECT submit_attempts FROM simulator_jobs WHERE video_id = $1")
            .bind(video.as_uuid())
            .fetch_one(&rig.db.pool)
            .await
            .expect("attempts");
    assert_eq!(attempts, 1, "never submitted upstream twice");
    // And a second submission is refused by the simulator itself.
    assert!(rig.simulator.submit(&job).await.is_err());
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_and_releases_its_credits() {
    let mut rig = rig(SimulatorConfig {
        latency: Duration::from_secs(3600),
        ..SimulatorConfig::default()
    })
    .await;
    rig.poller.max_job_time = Duration::from_millis(200);
    let video = rig.request(4).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let row = rig.drive(video).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("deadline_exceeded"))
    );
    assert_eq!(rig.account().await, (100, 0));
}

#[tokio::test]
async fn a_request_that_cannot_be_recorded_reserves_nothing() {
    let rig = rig(SimulatorConfig::default()).await;
    let video = rig.request(3).await;
    assert_eq!(rig.account().await, (100, 3));
    // The same video id again: the video stream refuses it, and the reservation that was
    // appended before it in the same transaction is rolled back with it.
    let spec = VideoSpec {
        owner: rig.owner,
        prompt: "again".into(),
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
    let meta = CommandMetadata::new_request(Actor::User(rig.owner));
    let refused = request_video(&rig.store, video, spec, &meta, None).await;
    assert!(
        refused.is_err(),
        "a second request under a taken id is refused"
    );
    catch_up_all(&rig.db.pool).await.expect("project");
    assert_eq!(
        rig.account().await,
        (100, 3),
        "no reservation for the refused request"
    );
    let account = rig
        .store
        .credits()
        .load(&rig.owner.to_string())
        .await
        .expect("account");
    assert_eq!(account.reserved(), Credits::new(3));
    let reservations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'CreditAccount'
            AND event_type = 'CreditsReserved'",
    )
    .fetch_one(&rig.db.pool)
    .await
    .expect("count");
    assert_eq!(reservations, 1);
}

#[tokio::test]
async fn a_failed_generation_fails_the_video_and_releases_its_credits() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_millis(50),
        failure_rate: 1.0,
        ..SimulatorConfig::default()
    })
    .await;
    let video = rig.request(3).await;
    let row = rig.drive(video).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some("generation_failed"))
    );
    assert_eq!(row.error_charged, Some(false));
    assert_eq!(rig.account().await, (100, 0), "released, not charged");
    assert!(row.blob_key.is_none(), "nothing stored");
}

#[tokio::test]
async fn cancelling_a_running_job_cancels_it_upstream_and_releases_its_credits() {
    let rig = rig(SimulatorConfig {
        latency: Duration::from_secs(3600),
        ..SimulatorConfig::default()
    })
    .await;
    let video = rig.request(4).await;
    // Dispatch it, so that it is in flight at the provider.
    let (subscription, dispatcher) = rig.dispatcher();
    subscription.drain(&dispatcher).await.expect("dispatch");
    catch_up_all(&rig.db.pool).await.expect("project");
    let row = videos::get(&rig.db.pool, video)
        .await
        .expect("row")
        .expect("video");
    assert_eq!(row.status, "submitted");
    assert_eq!(rig.account().await, (100, 4));

    rig.store
        .videos()
        .execute(
            &video.to_string(),
            VideoCommand::RequestCancel {
                reason: "changed my mind".into(),
            },
            &CommandMetadata::new_request(Actor::User(rig.owner)),
        )
        .await
        .expect("cancel");
    let row = rig.drive(video).await;
    assert_eq!(row.status, "cancelled");
    assert_eq!(rig.account().await, (100, 0), "released once");
    let cancelled_upstream: bool = sqlx::query_scalar(
        "SELECT cancelled_at IS NOT NULL FROM simulator_jobs WHERE video_id = $1",
    )
    .bind(video.as_uuid())
    .fetch_one(&rig.db.pool)
    .await
    .expect("job");
    assert!(cancelled_upstream, "the provider was told to stop");
}

#[tokio::test]
async fn a_cancel_after_the_worker_submitted_cancels_the_provider_job_though_no_projector_ran() {
    // A slow job, so it is still running at the provider when the cancel comes.
    let rig = rig(SimulatorConfig {
        latency: Duration::from_secs(600),
        ..SimulatorConfig::default()
    })
    .await;
    let video = rig.request(3).await;
    let (subscription, dispatcher) = rig.dispatcher();
    subscription.drain(&dispatcher).await.expect("dispatch");
    // No asynchronous projector has run: the videos row is the inline one.
    let row = videos::get(&rig.db.pool, video)
        .await
        .expect("row")
        .expect("video");
    assert_eq!(row.status, "submitted");
    let meta = CommandMetadata::new_request(Actor::User(rig.owner));
    rig.store
        .videos()
        .execute(
            &video.to_string(),
            VideoCommand::RequestCancel {
                reason: "changed my mind".into(),
            },
            &meta,
        )
        .await
        .expect("cancel");
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Video' AND aggregate_id = $1
          ORDER BY sequence",
    )
    .bind(video.to_string())
    .fetch_all(&rig.db.pool)
    .await
    .expect("events");
    assert_eq!(
        types.last().map(String::as_str),
        Some("CancelRequested"),
        "the provider has the job: the cancel waits for the worker, it does not end the video: {types:?}"
    );

    rig.poller.sweep().await.expect("sweep");
    let cancelled_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT cancelled_at FROM simulator_jobs WHERE video_id = $1")
            .bind(video.as_uuid())
            .fetch_one(&rig.db.pool)
            .await
            .expect("job");
    assert!(cancelled_at.is_some(), "the provider job was cancelled");
    let row = rig.drive(video).await;
    assert_eq!(row.status, "cancelled");
    assert_eq!(rig.account().await, (100, 0), "released");
}

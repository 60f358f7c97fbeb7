//! `framegate worker` as a process: killed with SIGKILL at random moments and restarted, every
//! job still reaches exactly one terminal state, is submitted to the simulator once, and its
//! credits settle once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits, UserId, VideoId};
use rand::Rng;
use uuid::Uuid;

fn start_worker(db: &TestDatabase, blobs: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("worker")
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_BLOB_DIR", blobs)
        .env(
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "0123456789abcdef0123456789abcdef",
        )
        .env("FRAMEGATE_SIMULATOR_LATENCY_MS", "400")
        .env("FRAMEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker")
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_points_finishes_every_job_exactly_once() {
    let db = TestDatabase::new().await;
    let blobs = tempfile::tempdir().expect("blobs");
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    let meta = CommandMetadata::new_request(Actor::System);
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "test".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&owner.to_string(), grant, &meta)
        .await
        .expect("grant");
    let jobs = 6;
    for n in 0..jobs {
        let spec = crate::common::simulator_job(owner, n);
        request_video(
            &store,
            VideoId::from_uuid(Uuid::now_v7()),
            spec,
            &meta,
            None,
        )
        .await
        .expect("request");
    }
    // The poller reads the videos read model: projectors run in this process throughout.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    framegate_projections::read_models::spawn_all(db.pool.clone(), stopped);

    for _ in 0..4 {
        let mut worker = start_worker(&db, blobs.path());
        let pause = rand::thread_rng().gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        worker.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        worker.wait().expect("reaped");
    }
    let mut worker = start_worker(&db, blobs.path());
    let terminal = "SELECT count(*) FROM events WHERE aggregate_type = 'Video'
                      AND event_type IN ('VideoCompleted', 'VideoFailed', 'VideoCancelled')";
    let settled = "SELECT count(*) FROM events WHERE aggregate_type = 'CreditAccount'
                     AND event_type IN ('ReservationCaptured', 'ReservationReleased')";
    let deadline = Instant::now() + Duration::from_secs(120);
    while (count(&db, terminal).await < jobs || count(&db, settled).await < jobs)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.kill().expect("stop worker");
    worker.wait().expect("reaped");

    // Exactly one terminal event per video, and every one completed.
    let per_video: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FILTER (WHERE event_type IN ('VideoCompleted', 'VideoFailed', 'VideoCancelled'))
           FROM events WHERE aggregate_type = 'Video' GROUP BY aggregate_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("per video");
    assert_eq!(per_video.len() as i64, jobs);
    assert!(
        per_video.iter().all(|(_, terminal)| *terminal == 1),
        "{per_video:?}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM events WHERE event_type = 'VideoCompleted'"
        )
        .await,
        jobs
    );
    // Submitted to the simulator once each, settled once each.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM simulator_jobs WHERE submit_attempts = 1"
        )
        .await,
        jobs
    );
    assert_eq!(count(&db, settled).await, jobs);
    let state = store
        .credits()
        .load(&owner.to_string())
        .await
        .expect("account");
    assert_eq!(
        (state.balance(), state.reserved()),
        (Credits::new(100 - 2 * jobs), Credits::ZERO)
    );
}

//! (c) Jobs in flight: the real `framegate worker` binary following many slow jobs, and its
//! peak RSS.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{UserId, VideoId};
use framegate_projections::read_models;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::{grant, spec, SIGNING_KEY};

/// `VmRSS` and `VmHWM` of `pid`, in kB.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

pub(super) async fn in_flight(jobs: usize, hold: Duration) {
    let db = TestDatabase::with_pool_size(16).await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let scratch = tempfile::tempdir().expect("scratch dir");
    let (_stop, stopped) = watch::channel(false);
    read_models::spawn_all(db.pool.clone(), stopped);
    let binary = std::env::var_os("FRAMEGATE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_framegate")),
        PathBuf::from,
    );
    let log = scratch.path().join("worker.log");
    // Ten minutes of simulated latency: nothing finishes (and renders) while we measure.
    let mut worker = tokio::process::Command::new(&binary)
        .arg("worker")
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_SIMULATOR_LATENCY_MS", "600000")
        .env("FRAMEGATE_BLOB_DIR", scratch.path().join("blobs"))
        .env("FRAMEGATE_BLOB_SIGNING_KEY", SIGNING_KEY)
        .env("FRAMEGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("worker log"))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let pid = worker.id().expect("worker pid");

    // Started once its dispatcher has registered its checkpoint.
    let started = Instant::now();
    while count(
        &db.pool,
        "SELECT count(*) FROM subscription_checkpoints WHERE name = 'worker.dispatcher'",
    )
    .await
        == 0
    {
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the worker exited ({status}); see {}", log.display());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "worker start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = memory_kb(pid).expect("worker memory");

    let peak_rss = Arc::new(AtomicUsize::new(0));
    let (done, mut sampling) = watch::channel(false);
    let sampler = tokio::spawn({
        let peak_rss = peak_rss.clone();
        async move {
            while !*sampling.borrow() {
                if let Some((rss, _)) = memory_kb(pid) {
                    peak_rss.fetch_max(rss as usize, Ordering::Relaxed);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = sampling.changed() => {}
                }
            }
        }
    });

    let owners = 10;
    let requested = Instant::now();
    let tasks: Vec<_> = (0..owners)
        .map(|o| {
            let store = store.clone();
            let share = jobs / owners + usize::from(o < jobs % owners);
            tokio::spawn(async move {
                let owner = UserId::from_uuid(Uuid::now_v7());
                grant(&store, owner).await;
                let meta = CommandMetadata::new_request(Actor::User(owner));
                for _ in 0..share {
                    let video = VideoId::from_uuid(Uuid::now_v7());
                    request_video(&store, video, spec(owner), &meta, None)
                        .await
                        .expect("request");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("request task");
    }
    let requesting = requested.elapsed();
    let in_flight_sql = "SELECT count(*) FROM videos WHERE status IN ('submitted', 'running')";
    while count(&db.pool, in_flight_sql).await < jobs as i64 {
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the worker exited ({status}); see {}", log.display());
        }
        assert!(
            requested.elapsed() < Duration::from_secs(600),
            "not all videos were submitted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submitting = requested.elapsed();
    tokio::time::sleep(hold).await;
    let _ = done.send(true);
    sampler.await.expect("sampler");
    let (rss, hwm) = memory_kb(pid).expect("worker memory");
    let still = count(&db.pool, in_flight_sql).await;
    let polls = count(
        &db.pool,
        "SELECT count(*) FROM events WHERE event_type = 'VideoProgressed'",
    )
    .await;
    worker.start_kill().expect("kill the worker");
    let _ = worker.wait().await;

    let mib = |kb: u64| kb as f64 / 1024.0;
    println!(
        "== (c) {jobs} jobs in flight: `framegate worker` ({}) ==",
        binary.display()
    );
    println!(
        "requested {jobs} in {:.1} s; all submitted after {:.1} s; then followed for {} s ({still} still in flight, {polls} progress events)",
        requesting.as_secs_f64(),
        submitting.as_secs_f64(),
        hold.as_secs()
    );
    println!(
        "worker RSS idle                 : {:>7.1} MiB",
        mib(idle_rss)
    );
    println!(
        "worker RSS at the end           : {:>7.1} MiB   (sampled peak {:.1} MiB)",
        mib(rss),
        mib(peak_rss.load(Ordering::Relaxed) as u64)
    );
    println!(
        "worker peak RSS (VmHWM)         : {:>7.1} MiB   (target < 256 MB = 244.1 MiB)",
        mib(hwm)
    );
}

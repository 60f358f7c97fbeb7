//! (b) Platform overhead per job: the pipeline in-process with a provider that finishes at
//! once, and the post-processing next to the one plain ffmpeg command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_commands::blobs::{Blobs, FilesystemStore};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{ProviderKind, UserId, VideoId};
use framegate_projections::notify::Notifications;
use framegate_projections::{read_models, Subscription};
use framegate_workers::media::{
    extract_stills, render_simulated, validate_video, Expectation, MediaTools, RenderRequest,
    Stills,
};
use framegate_workers::pipeline::{Dispatcher, PollPacing, Poller, Providers, DISPATCHER};
use framegate_workers::provider::{
    Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider,
};
use framegate_workers::settlement::{self, Settlement};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::{grant, ms, percentile, sorted, spec, PROMPT, SIGNING_KEY};

/// A provider that has finished every job the moment it is asked, delivering a pre-rendered
/// MP4: what is left to measure is the platform.
struct Finished {
    fixture: PathBuf,
}

#[async_trait]
impl VideoProvider for Finished {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }

    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        Ok(format!("done_{}", job.video_id.as_uuid().simple()))
    }

    async fn find(&self, _job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        Ok(Lookup::NotSubmitted)
    }

    async fn poll(&self, _job_id: &str) -> Result<JobState, ProviderFailure> {
        Ok(JobState::Succeeded)
    }

    async fn fetch(&self, _job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        tokio::fs::copy(&self.fixture, destination)
            .await
            .map(drop)
            .map_err(|e| ProviderFailure::new("upstream_unavailable", e.to_string(), true, false))
    }

    async fn cancel(&self, _job_id: &str) -> Result<Cancellation, ProviderFailure> {
        Ok(Cancellation::Stopped)
    }
}

/// Runs `handler` on its subscription until `stopped` flips, as the worker role does.
fn run_subscription<H: framegate_projections::EventHandler + 'static>(
    subscription: Subscription,
    handler: H,
    mut stopped: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        subscription
            .run(&handler, stop)
            .await
            .expect("subscription");
    });
}

/// The video's events, oldest first: (type, recorded_at).
async fn timeline(pool: &PgPool, video: VideoId) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT event_type, recorded_at FROM events
          WHERE aggregate_type = 'Video' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(video.to_string())
    .fetch_all(pool)
    .await
    .expect("timeline")
}

/// Waits for the video's terminal event; its timeline.
async fn finished(pool: &PgPool, video: VideoId) -> Vec<(String, DateTime<Utc>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = timeline(pool, video).await;
        match events.last().map(|(event, _)| event.as_str()) {
            Some("VideoCompleted") => return events,
            Some(terminal @ ("VideoFailed" | "VideoCancelled")) => {
                panic!("video {video} ended with {terminal}")
            }
            _ if Instant::now() > deadline => panic!("video {video} did not finish: {events:?}"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Once the video's reservation is captured: how many events the whole chain wrote (the
/// video's stream and the credit events naming it) and in how many transactions.
async fn settled_chain(pool: &PgPool, video: VideoId) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (events, transactions, captured): (i64, i64, bool) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT tx_id), bool_or(event_type = 'ReservationCaptured')
               FROM events
              WHERE (aggregate_type = 'Video' AND aggregate_id = $1)
                 OR (aggregate_type = 'CreditAccount'
                     AND (SELECT v ->> 'video_id' FROM jsonb_each(payload) AS p(k, v) LIMIT 1) = $1)",
        )
        .bind(video.to_string())
        .fetch_one(pool)
        .await
        .expect("chain");
        if captured {
            return (events, transactions);
        }
        assert!(Instant::now() < deadline, "video {video} was never settled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) async fn overhead(jobs: usize, poll_interval: Duration) {
    let db = TestDatabase::with_pool_size(24).await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let scratch = tempfile::tempdir().expect("scratch dir");
    let tools = MediaTools::from_env().expect("media tools");
    tools
        .check()
        .await
        .expect("ffmpeg (scripts/install-ffmpeg.sh)");
    let fixture = scratch.path().join("fixture.mp4");
    render_simulated(&tools, &RenderRequest::new(PROMPT, 1, 854, 480), &fixture)
        .await
        .expect("render the fixture");

    let provider: Arc<dyn VideoProvider> = Arc::new(Finished {
        fixture: fixture.clone(),
    });
    let providers: Providers = Arc::new(HashMap::from([(ProviderKind::Simulator, provider)]));
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        scratch.path().join("blobs"),
        SIGNING_KEY.as_bytes().to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let (_stop, stopped) = watch::channel(false);
    // As the worker role runs them: woken by the process's one listener.
    let (notifications, _listening) = Notifications::spawn(db.pool.clone(), stopped.clone());
    read_models::spawn_all_with(db.pool.clone(), &notifications, stopped.clone());
    run_subscription(
        Subscription::new(DISPATCHER, db.pool.clone()).with_notifications(notifications.clone()),
        Dispatcher::new(store.clone(), providers.clone(), blobs.clone()),
        stopped.clone(),
    );
    run_subscription(
        Subscription::new(settlement::SUBSCRIPTION, db.pool.clone())
            .with_notifications(notifications.clone()),
        Settlement::new(store.clone()),
        stopped.clone(),
    );
    let poller = Poller {
        store: store.clone(),
        pool: db.pool.clone(),
        providers,
        blobs,
        tools: tools.clone(),
        max_job_time: Duration::from_secs(1800),
        catalog: framegate_domain::catalog::Catalog::defaults(),
        // No pacing for the simulator kind, which the bench's provider reports.
        pacing: PollPacing::default(),
    };
    let wake = notifications.clone();
    tokio::spawn(async move { poller.run_woken(poll_interval, stopped, Some(wake)).await });

    let owner = UserId::from_uuid(Uuid::now_v7());
    grant(&store, owner).await;
    let meta = CommandMetadata::new_request(Actor::User(owner));
    // (label, from, to): the log's view of each step of a job. Generated, stored and
    // completed are one append: finishing is one step.
    let steps = [
        ("total", "VideoRequested", "VideoCompleted"),
        ("dispatch", "VideoRequested", "VideoSubmitted"),
        ("finish", "VideoSubmitted", "VideoCompleted"),
    ];
    let mut stages: HashMap<&str, Vec<Duration>> = HashMap::new();
    let expectation = Expectation::duration(1, 1_000);
    let (poster, thumbnail) = (scratch.path().join("p.jpg"), scratch.path().join("t.jpg"));
    // Events and writing transactions of each job, from request to credit capture.
    let mut chain: Vec<(i64, i64)> = Vec::new();
    // One warm-up job (connections, page cache) that is not counted.
    for job in 0..=jobs {
        let video = VideoId::from_uuid(Uuid::now_v7());
        request_video(&store, video, spec(owner), &meta, None)
            .await
            .expect("request");
        let events = finished(&db.pool, video).await;
        let at = |name: &str| {
            events
                .iter()
                .find(|(event, _)| event == name)
                .map(|(_, at)| *at)
                .unwrap_or_else(|| panic!("no {name} in {events:?}"))
        };
        if job == 0 {
            continue;
        }
        let (events, transactions) = settled_chain(&db.pool, video).await;
        chain.push((events, transactions));
        for (label, from, to) in steps {
            let step = (at(to) - at(from)).to_std().unwrap_or_default();
            stages.entry(label).or_default().push(step);
        }
        // The worker's post-processing again on the same file right after the job, then the
        // one plain ffmpeg command that writes the same poster and thumbnail, so both are
        // timed under the same conditions as the job itself.
        let started = Instant::now();
        let report = validate_video(&tools, &fixture, &expectation)
            .await
            .expect("validate");
        let stills = Stills {
            poster_at_seconds: 0.5,
            poster_jpeg: &poster,
            thumbnail_max_side: 320,
            thumbnail_jpeg: &thumbnail,
        };
        extract_stills(&tools, &fixture, &report, &stills)
            .await
            .expect("stills");
        let ours = started.elapsed();
        let plain = plain_stills(&tools, &fixture, &poster, &thumbnail).await;
        let total = (at("VideoCompleted") - at("VideoRequested"))
            .to_std()
            .unwrap_or_default();
        stages.entry("media").or_default().push(ours);
        stages.entry("plain").or_default().push(plain);
        stages
            .entry("platform")
            .or_default()
            .push(total.saturating_sub(ours));
    }

    println!(
        "== (b) platform overhead per job: {jobs} jobs one at a time, instant provider, poller woken by the log (else every {} ms) ==",
        poll_interval.as_millis()
    );
    let line = |label: &str, values: &[Duration], note: &str| {
        println!(
            "{label:<32}: median {:>7.1} ms   p90 {:>7.1} ms   {note}",
            ms(percentile(values, 0.5)),
            ms(percentile(values, 0.9))
        );
    };
    let stage = |name: &str| sorted(stages.get(name).cloned().unwrap_or_default());
    let total = stage("total");
    line(
        "requested -> completed (log)",
        &total,
        "(target median < 100 ms)",
    );
    line("  requested -> submitted", &stage("dispatch"), "dispatcher");
    line(
        "  submitted -> completed",
        &stage("finish"),
        "poller pick-up, fetch, validation, stills, blob writes, one append",
    );
    let (events, transactions) = chain
        .iter()
        .fold((0, 0), |(e, t), (ce, ct)| (e.max(*ce), t.max(*ct)));
    println!(
        "{:<32}: {events} events in {transactions} transactions, request to credit capture (most of any job; target <= 8 transactions)",
        "one completed video"
    );
    let (media, plain) = (stage("media"), stage("plain"));
    line(
        "post-processing (after each job)",
        &media,
        "validation (MP4 read in-process) + one ffmpeg run for the stills",
    );
    line(
        "plain ffmpeg, same two stills",
        &plain,
        "the single command alone",
    );
    println!(
        "{:<32}: {:>7.2}      (medians; target <= 1.3)",
        "  post-processing / plain ffmpeg",
        ms(percentile(&media, 0.5)) / ms(percentile(&plain, 0.5)).max(f64::EPSILON)
    );
    line(
        "excluding post-processing",
        &stage("platform"),
        "each job minus its own post-processing time",
    );
}

/// The poster (0.5 s, full size) and the thumbnail (the middle of the 1 s fixture, 320 px
/// wide) in one plain ffmpeg command: the baseline of the worker's post-processing.
async fn plain_stills(
    tools: &MediaTools,
    video: &Path,
    poster: &Path,
    thumbnail: &Path,
) -> Duration {
    let started = Instant::now();
    let status = tokio::process::Command::new(&tools.ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-ss", "0.500", "-i"])
        .arg(video)
        .args(["-ss", "0.500", "-i"])
        .arg(video)
        .args(["-map", "0:v:0", "-frames:v", "1", "-an", "-q:v", "3"])
        .arg(poster)
        .args(["-map", "1:v:0", "-vf", "scale=320:180,setsar=1"])
        .args(["-frames:v", "1", "-an", "-q:v", "3"])
        .arg(thumbnail)
        .status()
        .await
        .expect("ffmpeg");
    assert!(status.success(), "plain ffmpeg failed");
    started.elapsed()
}

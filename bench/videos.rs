//! Video benchmarks, printing figures (run: `cargo bench --bench videos`).
//!
//! (a) Accepting: POST /v1/videos (simulator, 1 s, 480p) through the real router on loopback
//!     at 16 and 32 concurrent clients, each client its own user with plenty of credits, once
//!     without and once with a fresh Idempotency-Key per request, next to the raw single-row
//!     INSERT rate of the same Postgres at the same concurrency in the same run, and (to tell
//!     where the time goes) the same command sent straight to the event store, and the rows
//!     it writes written by hand in one transaction (`floor`). No worker runs.
//! (b) Platform overhead per job: the pipeline in-process, wired as `framegate worker` wires it
//!     (dispatcher, poller, settlement, plus the read-model projectors), with a provider that
//!     finishes at once and delivers a pre-rendered MP4, so no render is measured. For jobs one
//!     after another: VideoRequested to VideoCompleted as recorded in the log, and the events
//!     and transactions each cost from request to credit capture. The worker's
//!     post-processing (validation, one ffmpeg run for poster and thumbnail) is timed
//!     again on the same MP4 right after each job, next to the one plain ffmpeg command that
//!     writes the same two stills, so the overhead without media work and the media work's
//!     ratio to its baseline can both be stated.
//! (c) 1,000 jobs in flight: the real `framegate worker` binary with a simulator slow enough
//!     that none finishes; its peak RSS (VmHWM) while it follows them all.
//!
//! Settings: FRAMEGATE_BENCH_PARTS (`a,b,c`), FRAMEGATE_BENCH_SECONDS (10 per load run),
//! FRAMEGATE_BENCH_CONCURRENCY (`16,32`), FRAMEGATE_BENCH_JOBS (50), FRAMEGATE_BENCH_POLL_MS
//! (250, the worker role's poller interval), FRAMEGATE_BENCH_IN_FLIGHT (1000),
//! FRAMEGATE_BENCH_HOLD_SECONDS (15), FRAMEGATE_BIN (the binary for (c); default: the
//! `framegate` cargo builds along with this bench). Uses DATABASE_URL's server, in private
//! databases; needs ffmpeg (scripts/install-ffmpeg.sh). The machine should be otherwise idle:
//! the figures are only comparable with the raw INSERT rate measured in the same run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Params;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_api::config::ApiConfig;
use framegate_api::AppState;
use framegate_commands::blobs::{Blobs, FilesystemStore};
use framegate_commands::passwords::PasswordHasher;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoId, VideoSpec,
};
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
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

#[path = "videos/floor.rs"]
mod floor;

const PROMPT: &str = "a paper boat drifting down a rainy street at dusk";
const SIGNING_KEY: &str = "framegate-bench-signing-key-0123456789";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn sorted(mut values: Vec<Duration>) -> Vec<Duration> {
    values.sort();
    values
}

#[tokio::main]
async fn main() {
    let parts = std::env::var("FRAMEGATE_BENCH_PARTS").unwrap_or_else(|_| "a,b,c".to_owned());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    if parts.contains(&"a") {
        accepting(env_u64("FRAMEGATE_BENCH_SECONDS", 10)).await;
    }
    if parts.contains(&"b") {
        overhead(
            env_u64("FRAMEGATE_BENCH_JOBS", 50) as usize,
            Duration::from_millis(env_u64("FRAMEGATE_BENCH_POLL_MS", 250)),
        )
        .await;
    }
    if parts.contains(&"c") {
        in_flight(
            env_u64("FRAMEGATE_BENCH_IN_FLIGHT", 1000) as usize,
            Duration::from_secs(env_u64("FRAMEGATE_BENCH_HOLD_SECONDS", 15)),
        )
        .await;
    }
}

/// Grants `user` more credits than any run can spend.
async fn grant(store: &EventStore, user: UserId) {
    let grant = CreditCommand::Grant {
        amount: Credits::new(1_000_000_000),
        reason: "benchmark".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(
            &user.to_string(),
            grant,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
}

// ---------------------------------------------------------------------------------------------
// (a) accepting requests

struct Figures {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn p(&self, p: f64) -> f64 {
        ms(percentile(&self.latencies, p))
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<32}: {:>7.0} /s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.rate(),
            self.p(0.50),
            self.p(0.99)
        );
    }
}

/// Runs `concurrency` loops of `call(client index)` for `seconds`, timing each call.
async fn load<F, Fut>(concurrency: usize, seconds: u64, call: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|client| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if let Err(error) = call(client).await {
                        panic!("request failed: {error}");
                    }
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("load task"));
    }
    Figures {
        elapsed: started.elapsed(),
        latencies: sorted(latencies),
    }
}

/// The real router on a random port, wired as `framegate api` wires it: the projectors and
/// the credential cache's follower on one shared listener. Returns its base URL.
async fn spawn_api(db: &TestDatabase, scratch: &Path, stopped: watch::Receiver<bool>) -> String {
    let mut config = ApiConfig::development();
    config.rate.user_per_minute = u32::MAX / 2;
    config.rate.anonymous_per_minute = u32::MAX / 2;
    config.rate.login_per_minute = u32::MAX / 2;
    config.mail.mailbox_dir = scratch.join("mail");
    config.blobs.dir = scratch.join("blobs");
    let hasher = PasswordHasher::with_params(Params::new(1024, 1, 1, None).expect("params"), 4)
        .expect("hasher");
    let state = AppState::with_passwords(config, db.pool.clone(), hasher).expect("state");
    let (notifications, _listening) = Notifications::spawn(db.pool.clone(), stopped.clone());
    read_models::spawn_all_with(db.pool.clone(), &notifications, stopped.clone());
    framegate_api::spawn_credentials_listener(&state, &notifications, stopped);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(framegate_api::serve(
        state,
        listener,
        std::future::pending(),
    ));
    base
}

/// Registers `n` fresh users, grants them credits; their access tokens.
async fn users(client: &reqwest::Client, base: &str, store: &EventStore, n: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let email = format!("bench-{}@example.com", Uuid::new_v4().simple());
        let credentials = json!({"email": email, "password": "benchmark password"});
        let registered: Value = client
            .post(format!("{base}/v1/auth/register"))
            .json(&credentials)
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("json");
        let id: Uuid = registered["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        grant(store, UserId::from_uuid(id)).await;
        let login: Value = client
            .post(format!("{base}/v1/auth/login"))
            .json(&credentials)
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        tokens.push(login["access_token"].as_str().expect("token").to_owned());
    }
    tokens
}

/// POST /v1/videos from `concurrency` users for `seconds`.
async fn post_videos(
    client: &reqwest::Client,
    base: &str,
    store: &EventStore,
    concurrency: usize,
    seconds: u64,
    idempotency_keys: bool,
) -> Figures {
    let tokens = Arc::new(users(client, base, store, concurrency).await);
    let url = Arc::new(format!("{base}/v1/videos"));
    let body = json!({
        "prompt": PROMPT, "provider": "simulator", "duration_seconds": 1,
        "aspect_ratio": "16:9", "resolution": "480p"
    });
    load(concurrency, seconds, {
        let client = client.clone();
        move |user| {
            let (client, url, tokens) = (client.clone(), url.clone(), tokens.clone());
            let body = body.clone();
            async move {
                let mut request = client.post(url.as_str()).bearer_auth(&tokens[user]);
                if idempotency_keys {
                    request = request.header("Idempotency-Key", Uuid::new_v4().to_string());
                }
                let response = request
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status().as_u16() {
                    201 | 202 => Ok(()),
                    status => Err(format!(
                        "{status}: {}",
                        response.text().await.unwrap_or_default()
                    )),
                }
            }
        }
    })
    .await
}

/// FRAMEGATE_BENCH_CONCURRENCY: a comma-separated list, `16,32` unless set.
fn concurrencies() -> Vec<usize> {
    let list = std::env::var("FRAMEGATE_BENCH_CONCURRENCY").unwrap_or_else(|_| "16,32".into());
    list.split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// The same command straight through the event store (inline read models included), one
/// owner per client: what the request costs without HTTP and auth.
async fn commands_only(store: &EventStore, concurrency: usize, seconds: u64) -> Figures {
    let mut owners = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let owner = UserId::from_uuid(Uuid::now_v7());
        grant(store, owner).await;
        owners.push(owner);
    }
    let (store, owners) = (store.clone(), Arc::new(owners));
    load(concurrency, seconds, move |client| {
        let (store, owner) = (store.clone(), owners[client]);
        async move {
            let meta = CommandMetadata::new_request(Actor::User(owner));
            let video = VideoId::from_uuid(Uuid::now_v7());
            request_video(&store, video, spec(owner), &meta, None)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

async fn accepting(seconds: u64) {
    let db = TestDatabase::with_pool_size(48).await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let (_stop, stopped) = watch::channel(false);
    let base = spawn_api(&db, scratch.path(), stopped).await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let client = reqwest::Client::new();
    sqlx::query(
        "CREATE TABLE bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .expect("create bench_raw");
    println!("== (a) POST /v1/videos (simulator, 1 s 480p, JWT) vs raw single-row INSERT, {seconds} s each ==");
    for concurrency in concurrencies() {
        let pool = db.pool.clone();
        let raw = load(concurrency, seconds, move |_| {
            let pool = pool.clone();
            async move {
                sqlx::query("INSERT INTO bench_raw (payload) VALUES ($1)")
                    .bind(json!({"VideoRequested": {"prompt": PROMPT, "duration_seconds": 1}}))
                    .execute(&pool)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        println!("-- {concurrency} concurrent clients, one user each --");
        raw.print("raw single-row INSERT");
        let by_hand = floor::by_hand(&db.pool, concurrency, seconds).await;
        by_hand.print("the same rows by hand (floor)");
        println!(
            "{:<32}: {:>7.2}",
            "  ratio to raw INSERT",
            by_hand.rate() / raw.rate()
        );
        let command = commands_only(&store, concurrency, seconds).await;
        command.print("request_video, no HTTP");
        println!(
            "{:<32}: {:>7.2}",
            "  ratio to the floor",
            command.rate() / by_hand.rate()
        );
        for keys in [false, true] {
            let api = post_videos(&client, &base, &store, concurrency, seconds, keys).await;
            let label = if keys {
                "POST /v1/videos, Idempotency-Key"
            } else {
                "POST /v1/videos, no key"
            };
            api.print(label);
            println!(
                "{:<32}: {:>7.2}      (target >= 0.25; p99 target < 50 ms)",
                "  ratio to raw INSERT",
                api.rate() / raw.rate(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) platform overhead per job

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

fn spec(owner: UserId) -> VideoSpec {
    VideoSpec {
        owner,
        prompt: PROMPT.into(),
        negative_prompt: None,
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 1,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(1),
        generate_audio: false,
        external_id: None,
        webhook: None,
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

async fn overhead(jobs: usize, poll_interval: Duration) {
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

// ---------------------------------------------------------------------------------------------
// (c) jobs in flight

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

async fn in_flight(jobs: usize, hold: Duration) {
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

//! (a) Accepting: POST /v1/videos and the same command straight to the store, next to the raw
//! single-row INSERT and the floor of the same rows written by hand.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Params;
use framegate_api::config::ApiConfig;
use framegate_api::AppState;
use framegate_commands::passwords::PasswordHasher;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{UserId, VideoId};
use framegate_projections::notify::Notifications;
use framegate_projections::read_models;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

#[path = "floor.rs"]
mod floor;

use super::{grant, ms, percentile, sorted, spec, PROMPT};

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

pub(super) async fn accepting(seconds: u64) {
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

//! API benchmark, printing figures (run: `cargo bench --bench api`).
//!
//! GET /v1/credits authenticated with an API key, at FRAMEGATE_BENCH_CONCURRENCY (32) for
//! FRAMEGATE_BENCH_SECONDS (10), against the real router on loopback, next to a raw Postgres
//! primary-key SELECT of the same row at the same concurrency in the same run.

use std::time::{Duration, Instant};

use argon2::Params;
use framegate_api::config::ApiConfig;
use framegate_api::AppState;
use framegate_commands::passwords::PasswordHasher;
use framegate_commands::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn percentile(&self, p: f64) -> f64 {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<28}: {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99)
        );
    }
}

/// Runs `concurrency` loops of `call` for `seconds`, timing each call.
async fn load<F, Fut>(concurrency: u64, seconds: u64, call: F) -> Figures
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                assert!(call().await, "request failed");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    latencies.sort();
    Figures {
        requests: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let concurrency = env_u64("FRAMEGATE_BENCH_CONCURRENCY", 32);
    let seconds = env_u64("FRAMEGATE_BENCH_SECONDS", 10);
    let db = TestDatabase::with_pool_size(40).await;
    let mut config = ApiConfig::development();
    config.rate.user_per_minute = u32::MAX / 2;
    config.mail.mailbox_dir = std::env::temp_dir().join(format!("fg-bench-{}", Uuid::new_v4()));
    let hasher = PasswordHasher::with_params(Params::new(1024, 1, 1, None).expect("params"), 2)
        .expect("hasher");
    let state = AppState::with_passwords(config, db.pool.clone(), hasher).expect("state");
    let (_stop, stopped) = watch::channel(false);
    framegate_projections::read_models::spawn_all(db.pool.clone(), stopped.clone());
    let (notifications, _listening) =
        framegate_projections::notify::Notifications::spawn(db.pool.clone(), stopped.clone());
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

    let client = reqwest::Client::new();
    let email = "bench@example.com";
    let password = "benchmark password";
    let registered: Value = client
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let user_id: Uuid = registered["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let login: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let access = login["access_token"].as_str().expect("token");
    let key: Value = client
        .post(format!("{base}/v1/api-keys"))
        .bearer_auth(access)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let secret = key["secret"].as_str().expect("secret").to_owned();

    println!("== GET /v1/credits (API key) vs raw PK SELECT: {concurrency} concurrent, {seconds} s each ==");
    let url = format!("{base}/v1/credits");
    let api = load(concurrency, seconds, {
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        move || {
            let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
            async move {
                client
                    .get(&url)
                    .bearer_auth(&secret)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }
    })
    .await;
    let pool = db.pool.clone();
    let raw = load(concurrency, seconds, move || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT balance, reserved FROM credit_accounts WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .is_ok()
        }
    })
    .await;
    api.print("GET /v1/credits (API key)");
    raw.print("raw PK SELECT");
    println!(
        "throughput ratio            : {:>9.2}   (target >= 0.30; p99 target < 10 ms)",
        api.rate() / raw.rate()
    );
}

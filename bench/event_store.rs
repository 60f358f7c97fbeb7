//! Event store benchmarks, printing figures (run: `cargo bench --bench event_store`).
//!
//! (a) Command throughput: concurrent clients executing a credits command through the whole
//!     framework (load, decide, append with metadata) against Postgres, next to the raw
//!     single-row INSERT rate of the same database at the same concurrency, in the same run.
//! (b) Log catch-up: a subscription with a no-op handler reading a million stored events.
//!
//! Sizes: FRAMEGATE_BENCH_CLIENTS (16), FRAMEGATE_BENCH_COMMANDS (6000),
//! FRAMEGATE_BENCH_EVENTS (1000000). Uses DATABASE_URL's server, in a private database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use framegate_commands::testing::TestDatabase;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent, Subscription};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let clients = env_usize("FRAMEGATE_BENCH_CLIENTS", 16);
    let commands = env_usize("FRAMEGATE_BENCH_COMMANDS", 6000);
    let events = env_usize("FRAMEGATE_BENCH_EVENTS", 1_000_000);

    let db = TestDatabase::with_pool_size(clients as u32 + 4).await;
    println!("== (a) command throughput: {clients} clients, {commands} commands ==");
    let raw = raw_insert_rate(&db.pool, clients, commands).await;
    let framework = command_rate(&db.pool, clients, commands).await;
    println!("raw single-row INSERT : {raw:>10.0} rows/s");
    println!("credits Grant command : {framework:>10.0} commands/s");
    println!(
        "ratio                 : {:>10.2}   (target >= 0.40)",
        framework / raw
    );
    drop(db);

    let db = TestDatabase::with_pool_size(4).await;
    println!("== (b) log catch-up: {events} events ==");
    let started = Instant::now();
    seed_events(&db.pool, events).await;
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    let (handled, elapsed) = catch_up(&db.pool).await;
    println!(
        "caught up {handled} events in {:.2} s: {:>10.0} events/s   (target >= 50000)",
        elapsed.as_secs_f64(),
        handled as f64 / elapsed.as_secs_f64()
    );
}

async fn raw_insert_rate(pool: &PgPool, clients: usize, total: usize) -> f64 {
    sqlx::query("CREATE TABLE bench_raw (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(pool)
        .await
        .expect("create bench_raw");
    let per_client = total / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_client {
                sqlx::query("INSERT INTO bench_raw (payload) VALUES ($1)")
                    .bind(serde_json::json!({"CreditsGranted": {"amount": n, "reason": "bench", "granted_by": "bench"}}))
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (per_client * clients) as f64 / started.elapsed().as_secs_f64()
}

async fn command_rate(pool: &PgPool, clients: usize, total: usize) -> f64 {
    let store = EventStore::new(pool.clone());
    let per_client = total / clients;
    // Each client spreads its commands over its own accounts, as real users' traffic does; the
    // streams stay short enough that replaying them on load is part of what is measured.
    let accounts_per_client = 25;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let accounts: Vec<String> = (0..accounts_per_client)
                .map(|_| Uuid::now_v7().to_string())
                .collect();
            let meta = CommandMetadata::new_request(Actor::System);
            for n in 0..per_client {
                let command = CreditCommand::Grant {
                    amount: Credits::new(1),
                    reason: "bench".into(),
                    granted_by: "bench".into(),
                };
                store
                    .credits()
                    .execute(&accounts[n % accounts.len()], command, &meta)
                    .await
                    .expect("command");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    (per_client * clients) as f64 / started.elapsed().as_secs_f64()
}

async fn seed_events(pool: &PgPool, total: usize) {
    // Rows shaped like real Grant events (payload and metadata), 50,000 per statement.
    let chunk = 50_000;
    let mut written = 0;
    while written < total {
        let n = chunk.min(total - written);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'CreditAccount', 'bench-' || ($1 + g) / 10, ($1 + g) % 10 + 1, 'CreditsGranted', '1.0',
                    jsonb_build_object('CreditsGranted', jsonb_build_object('amount', g, 'reason', 'benchmark seed', 'granted_by', 'system')),
                    jsonb_build_object('actor', 'system', 'request_id', gen_random_uuid()::text,
                                       'correlation_id', gen_random_uuid()::text, 'causation_id', 'request:bench')
               FROM generate_series(0, $2 - 1) g",
        )
        .bind(written as i64)
        .bind(n as i64)
        .execute(pool)
        .await
        .expect("seed");
        written += n;
    }
    sqlx::query("ANALYZE events")
        .execute(pool)
        .await
        .expect("analyze");
}

struct Noop;

#[async_trait]
impl EventHandler for Noop {
    async fn handle(&self, _conn: &mut PgConnection, _event: &StoredEvent) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn catch_up(pool: &PgPool) -> (u64, Duration) {
    let subscription = Subscription::new("bench-catch-up", pool.clone()).with_batch_size(5000);
    let handler = Arc::new(Noop);
    let started = Instant::now();
    let handled = subscription
        .drain(handler.as_ref())
        .await
        .expect("catch up");
    (handled, started.elapsed())
}

//! The connection budget: a process holds at most its configured pool of Postgres
//! connections, its one shared LISTEN connection included, and a server out of connection
//! slots stops it with a message that names the setting to change.

use crate::common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use framegate_commands::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions as _;

use common::Dev;

/// Connections to `db` by application name, and how many of them are listening.
async fn connections(db: &TestDatabase) -> (Vec<(String, i64)>, i64) {
    let by_name: Vec<(String, i64)> = sqlx::query_as(
        "SELECT application_name, count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND application_name LIKE 'framegate%'
            -- The test's own pool (TestDatabase connects the way the CLI does).
            AND application_name <> 'framegate-cli'
          GROUP BY application_name ORDER BY application_name",
    )
    .fetch_all(&db.pool)
    .await
    .expect("pg_stat_activity");
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND query LIKE 'LISTEN %'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("listeners");
    (by_name, listening)
}

#[tokio::test]
async fn a_busy_dev_server_stays_within_its_pool_and_listens_on_one_connection() {
    const POOL: i64 = 8;
    let db = TestDatabase::unmigrated(2).await;
    let dev = Dev::start(
        &db,
        &[
            ("FRAMEGATE_DATABASE_POOL_SIZE", POOL.to_string()),
            ("FRAMEGATE_RATE_ANONYMOUS_PER_MINUTE", "10000".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;

    // Sample the server's connections all through the load below.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (seen, done) = (seen.clone(), done.clone());
        let pool = db.pool.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let sample: (i64, i64) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE application_name = 'framegate-dev'),
                            count(*) FILTER (WHERE query LIKE 'LISTEN %')
                       FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .fetch_one(&pool)
                .await
                .expect("sample");
                seen.lock().expect("samples").push(sample);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Registrations (events for every projector, announcements for the cache) and reads,
    // many at once.
    let registrations = (0..24).map(|n| {
        let client = client.clone();
        let url = dev.url("/v1/auth/register");
        async move {
            client
                .post(url)
                .json(&json!({"email": format!("budget{n}@example.com"), "password": "correct horse battery staple"}))
                .send()
                .await
                .expect("register")
                .status()
        }
    });
    let statuses = futures::future::join_all(registrations).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    let login: Value = client
        .post(dev.url("/v1/auth/login"))
        .json(&json!({"email": "budget0@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let reads = (0..64).map(|_| {
        let request = client.get(dev.url("/v1/credits")).bearer_auth(&token);
        async move { request.send().await.expect("credits").status() }
    });
    let statuses = futures::future::join_all(reads).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Release);
    sampler.await.expect("sampler");

    let samples = seen.lock().expect("samples").clone();
    assert!(samples.len() > 5, "too few samples: {samples:?}");
    let most = samples.iter().map(|(open, _)| *open).max().unwrap_or(0);
    assert!(
        most <= POOL,
        "framegate dev held {most} connections with a pool of {POOL}"
    );
    assert!(
        samples.iter().all(|(_, listening)| *listening <= 1),
        "more than one LISTEN connection: {samples:?}"
    );
    // Every connection names its role, and exactly one listens.
    let (by_name, listening) = connections(&db).await;
    assert_eq!(listening, 1, "{by_name:?}");
    assert!(
        !by_name.is_empty() && by_name.iter().all(|(name, _)| name == "framegate-dev"),
        "{by_name:?}"
    );
    drop(dev);
}

#[tokio::test]
async fn a_server_out_of_connection_slots_stops_with_the_setting_to_change() {
    let db = TestDatabase::unmigrated(2).await;
    let role = format!("fg_nolimit_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
        .execute(&db.pool)
        .await
        .expect("create role");
    let url = db
        .url()
        .parse::<PgConnectOptions>()
        .expect("url")
        .username(&role)
        .to_url_lossy()
        .to_string();

    for role_command in ["migrate", "api"] {
        let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
            .arg(role_command)
            .env("DATABASE_URL", &url)
            .env("FRAMEGATE_DATABASE_POOL_SIZE", "7")
            .env("FRAMEGATE_HTTP_ADDR", "127.0.0.1:0")
            .output()
            .expect("run framegate");
        assert!(!output.status.success(), "{role_command} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no connection slot left")
                && stderr.contains("up to 7 connections (FRAMEGATE_DATABASE_POOL_SIZE)"),
            "{role_command}: {stderr}"
        );
    }

    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_DATABASE_POOL_SIZE", "lots")
        .output()
        .expect("run framegate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FRAMEGATE_DATABASE_POOL_SIZE must be a whole number"),
        "{stderr}"
    );
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&db.pool)
        .await
        .expect("drop role");
}

//! `framegate dev` killed with SIGKILL in the middle of `POST /v1/videos`, 20 times: a retry
//! with the same Idempotency-Key after the restart gets the one video that was created, or
//! creates it if nothing had committed; never two, and `idempotency_in_progress` for no
//! longer than the claim's lease.

use crate::common;

use std::time::{Duration, Instant};

use common::Dev;
use framegate_commands::testing::TestDatabase;
use rand::Rng as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

const LEASE: Duration = Duration::from_secs(2);
const ROUNDS: usize = 20;

async fn count(db: &TestDatabase, sql: &str, key: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_mid_request_never_creates_two_videos_for_one_key() {
    let db = TestDatabase::new().await;
    let mut dev = Dev::start(
        &db,
        &[
            (
                "FRAMEGATE_IDEMPOTENCY_LEASE_SECONDS",
                LEASE.as_secs().to_string(),
            ),
            // Nothing renders while the API is being killed.
            ("FRAMEGATE_SIMULATOR_LATENCY_MS", "600000".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    let credentials = json!({"email": "crash@example.com", "password": "correct horse battery"});
    let registered = client
        .post(dev.url("/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    dev.verify_email(&client, "crash@example.com").await;
    let login: Value = client
        .post(dev.url("/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();

    let (mut committed_before_retry, mut waited_for_lease) = (0, 0);
    for round in 0..ROUNDS {
        let key = format!("crash-{round}");
        let body = json!({"prompt": "a lighthouse in a storm", "provider": "simulator",
                          "duration_seconds": 4, "aspect_ratio": "16:9", "resolution": "480p",
                          "external_id": key});
        let send = {
            let (client, url, token, key, body) = (
                client.clone(),
                dev.url("/v1/videos"),
                token.clone(),
                key.clone(),
                body.clone(),
            );
            move || {
                client
                    .post(url.clone())
                    .bearer_auth(token.clone())
                    .header("Idempotency-Key", key.clone())
                    .json(&body)
                    .send()
            }
        };
        let in_flight = tokio::spawn(send());
        let delay = rand::thread_rng().gen_range(0..30);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        dev.kill_and_restart();
        let killed_at = Instant::now();
        let _ = in_flight.await; // answered before the kill, or cut off by it
        committed_before_retry += count(
            &db,
            "SELECT count(*) FROM events WHERE event_type = 'VideoRequested'
                AND payload -> 'VideoRequested' -> 'spec' ->> 'external_id' = $1",
            &key,
        )
        .await;
        dev.wait_ready(&client).await;

        let video: Value = loop {
            let response = send().await.expect("retry");
            match response.status() {
                StatusCode::CREATED => break response.json().await.expect("json"),
                StatusCode::CONFLICT => {
                    waited_for_lease += 1;
                    let problem: Value = response.json().await.expect("json");
                    assert_eq!(problem["code"], "idempotency_in_progress", "{problem}");
                    assert!(
                        killed_at.elapsed() < LEASE + Duration::from_secs(3),
                        "round {round}: still in progress {:?} after the kill",
                        killed_at.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!(
                    "round {round}: {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        };
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT aggregate_id FROM events WHERE event_type = 'VideoRequested'
                AND payload -> 'VideoRequested' -> 'spec' ->> 'external_id' = $1",
        )
        .bind(&key)
        .fetch_all(&db.pool)
        .await
        .expect("videos");
        assert_eq!(ids.len(), 1, "round {round}: one video for the key");
        assert_eq!(Some(ids[0].as_str()), video["id"].as_str(), "round {round}");
    }
    let reservations = count(
        &db,
        "SELECT count(*) FROM events WHERE event_type = 'CreditsReserved' AND $1 = $1",
        "",
    )
    .await;
    assert_eq!(reservations, ROUNDS as i64, "one reservation per video");
    // Which rounds committed before the kill is up to the timing; say so when a run left
    // the retry path that replays a committed request untested.
    eprintln!(
        "{committed_before_retry} of {ROUNDS} requests had committed when the API was killed; \
         retries waited out a dead request's lease {waited_for_lease} times"
    );
}

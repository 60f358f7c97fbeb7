//! A running platform heals: every backend of its database is terminated twice in the
//! middle of a busy run, and every subscription recovers and every job finishes with exact
//! credits; an event no subscription can decode is parked, named by `projections status`
//! and `/health/ready`, while everything else keeps flowing.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use framegate_commands::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{Dev, PATIENCE};

const VIDEOS: usize = 12;

/// Ends every connection to the test database but the caller's, as an operator's
/// `pg_terminate_backend` or a database failover would.
async fn terminate_backends(db: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&db.pool)
    .await
    .expect("terminate")
}

/// GET that rides out the moments the API itself has no database.
async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = client.get(url).bearer_auth(token).send().await {
            if response.status() == StatusCode::OK {
                return response.json().await.expect("json");
            }
        }
        assert!(Instant::now() < deadline, "GET {url} never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn framegate(db: &TestDatabase, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_LOG", "warn")
        .output()
        .expect("run framegate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_twice_and_a_poison_event_leave_every_job_finished() {
    let db = TestDatabase::unmigrated(2).await;
    let mut dev = Dev::start(
        &db,
        &[
            ("FRAMEGATE_SIMULATOR_LATENCY_MS", "1500".to_owned()),
            ("FRAMEGATE_SIGNUP_CREDITS", "1000".to_owned()),
            ("FRAMEGATE_RATE_USER_PER_MINUTE", "10000".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    let password = "correct horse battery staple";
    let registered = client
        .post(dev.url("/v1/auth/register"))
        .json(&json!({"email": "healer@example.com", "password": password}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    dev.verify_email(&client, "healer@example.com").await;
    let login: Value = client
        .post(dev.url("/v1/auth/login"))
        .json(&json!({"email": "healer@example.com", "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();

    // A Video event nobody can decode, as a bad deploy or a hand-made insert leaves behind.
    let poison: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Video', gen_random_uuid()::text, 1, 'VideoRequested', '1.0',
                 '{\"VideoRequested\": {\"garbage\": true}}', '{}')
         RETURNING global_position",
    )
    .fetch_one(&db.pool)
    .await
    .expect("poison");

    let mut ids = Vec::new();
    for n in 0..VIDEOS {
        // A client retries a request the server could not answer, with the same key.
        let body = json!({
            "prompt": format!("a lighthouse in a storm, take {n}"),
            "provider": "simulator",
            "duration_seconds": 1,
            "aspect_ratio": "16:9",
            "resolution": "480p",
        });
        let mut attempts = 0;
        let video: Value = loop {
            attempts += 1;
            let response = client
                .post(dev.url("/v1/videos"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("healing-{n}"))
                .json(&body)
                .send()
                .await
                .expect("request video");
            let status = response.status();
            let video: Value = response.json().await.expect("json");
            if status.is_server_error() && attempts < 5 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(status, StatusCode::CREATED, "{video}");
            break video;
        };
        ids.push(video["id"].as_str().expect("id").to_owned());
        if n == VIDEOS / 3 || n == 2 * VIDEOS / 3 {
            // Mid-run, with jobs queued, submitted and in flight at once.
            let terminated = terminate_backends(&db).await;
            assert!(terminated > 0, "the server held no connection to terminate");
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }

    // Every job finishes, and the process is still up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut charged = 0;
    for id in &ids {
        loop {
            let video = get_json(&client, &dev.url(&format!("/v1/videos/{id}")), &token).await;
            match video["status"].as_str().expect("status") {
                "completed" => {
                    charged += video["final_cost"].as_i64().expect("final cost");
                    break;
                }
                "failed" | "cancelled" => panic!("{id} ended as {video}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "{id} never finished: {video}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(dev.is_running(), "framegate dev exited");

    // Credits are exact: every reservation captured at the final cost, nothing left held.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let credits = get_json(&client, &dev.url("/v1/credits"), &token).await;
        if credits["reserved"] == 0 {
            assert_eq!(
                credits["balance"].as_i64(),
                Some(1000 - charged),
                "{credits}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "credits still reserved: {credits}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The poison event is parked where it could not be handled, and said so.
    let (ok, status) = framegate(&db, &["projections", "status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("read_model.videos")
            && status.contains(&format!("#{poison} VideoRequested"))
            && status.contains("passed over"),
        "{status}"
    );
    let ready: Value = client
        .get(dev.url("/health/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["subscriptions"]["with_parked"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == "read_model.videos")),
        "{ready}"
    );
    // Every subscription catches up past it: nothing waits in the log (the projectors let
    // events gather for a moment after each wake-up, so give them a few seconds).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lagging: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.name, (SELECT count(*) FROM events e
                              WHERE (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position))
               FROM subscription_checkpoints c",
        )
        .fetch_all(&db.pool)
        .await
        .expect("lag");
        if lagging.iter().all(|(_, lag)| *lag == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "{lagging:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A retry of an event that still cannot be decoded fails again and keeps it parked.
    let (ok, retried) = framegate(&db, &["projections", "retry", "read_model.videos"]);
    assert!(!ok, "{retried}");
    assert!(retried.contains("still parked"), "{retried}");
    assert!(dev.is_running(), "framegate dev exited");
}

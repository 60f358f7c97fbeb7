//! The Idempotency-Key protocol against a real Postgres: the record functions directly, and
//! `execute_once` in front of a tiny router whose handlers count how often they really run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use framegate_api::idempotency::{
    abandon, begin, complete, execute_once, fingerprint, purge_expired, renew, requested_key,
    Begin, Protocol, ResponseSeal, StoredResponse,
};
use framegate_commands::testing::TestDatabase;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Notify;
use tower::ServiceExt as _;

const SCOPE: &str = "user:00000000-0000-0000-0000-000000000001";
const LEASE: Duration = Duration::from_secs(10);

fn stored(status: StatusCode, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.as_bytes().to_vec(),
        content_type: Some("application/json".to_owned()),
    }
}

async fn claim(
    pool: &PgPool,
    scope: &str,
    key: &str,
    hash: &str,
) -> framegate_api::idempotency::Claim {
    match begin(pool, scope, key, hash, LEASE).await.expect("begin") {
        Begin::Execute(claim) => claim,
        other => panic!("expected Execute, got {other:?}"),
    }
}

async fn age_records(pool: &PgPool, by: &str) {
    sqlx::query(&format!(
        "UPDATE idempotency_keys SET created_at = created_at - interval '{by}'"
    ))
    .execute(pool)
    .await
    .expect("age records");
}

#[tokio::test]
async fn the_first_request_executes_and_a_repeat_replays_its_stored_response() {
    let db = TestDatabase::new().await;
    let first = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::InProgress
    );

    let response = stored(StatusCode::CREATED, r#"{"id":7}"#);
    complete(&db.pool, &first, &response, false)
        .await
        .expect("complete");
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::Replay(response)
    );
}

#[tokio::test]
async fn a_different_request_under_a_used_key_is_a_mismatch_even_while_in_progress() {
    let db = TestDatabase::new().await;
    let first = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-b", LEASE)
            .await
            .expect("begin"),
        Begin::Mismatch
    );
    complete(&db.pool, &first, &stored(StatusCode::OK, "{}"), false)
        .await
        .expect("complete");
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-b", LEASE)
            .await
            .expect("begin"),
        Begin::Mismatch
    );
}

#[tokio::test]
async fn keys_are_scoped_per_caller() {
    let db = TestDatabase::new().await;
    claim(&db.pool, SCOPE, "shared-key", "hash-a").await;
    claim(&db.pool, "ip:203.0.113.9", "shared-key", "hash-b").await;
}

#[tokio::test]
async fn an_abandoned_key_can_be_used_again() {
    let db = TestDatabase::new().await;
    let first = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    abandon(&db.pool, &first).await.expect("abandon");
    claim(&db.pool, SCOPE, "k1", "hash-a").await;
}

#[tokio::test]
async fn a_record_older_than_24_hours_is_forgotten() {
    let db = TestDatabase::new().await;
    let first = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    complete(&db.pool, &first, &stored(StatusCode::CREATED, "{}"), false)
        .await
        .expect("complete");
    age_records(&db.pool, "23 hours").await;
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-b", LEASE)
            .await
            .expect("begin"),
        Begin::Mismatch,
        "still kept at 23 h"
    );
    age_records(&db.pool, "2 hours").await;
    claim(&db.pool, SCOPE, "k1", "hash-b").await;
}

#[tokio::test]
async fn a_late_completion_of_an_expired_claim_does_not_touch_its_replacement() {
    let db = TestDatabase::new().await;
    let stale = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    age_records(&db.pool, "25 hours").await;
    let fresh = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    assert_ne!(stale.owner, fresh.owner);

    complete(
        &db.pool,
        &stale,
        &stored(StatusCode::CREATED, "stale"),
        false,
    )
    .await
    .expect("complete");
    abandon(&db.pool, &stale).await.expect("abandon");
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::InProgress
    );
    complete(
        &db.pool,
        &fresh,
        &stored(StatusCode::CREATED, "fresh"),
        false,
    )
    .await
    .expect("complete");
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::Replay(stored(StatusCode::CREATED, "fresh"))
    );
}

/// Ends every running claim's lease, as if their processes had died long ago.
async fn expire_leases(pool: &PgPool) {
    sqlx::query("UPDATE idempotency_keys SET lease_until = now() - interval '1 second'")
        .execute(pool)
        .await
        .expect("expire leases");
}

async fn mark_committed(pool: &PgPool, claim: &framegate_api::idempotency::Claim) {
    let mut conn = pool.acquire().await.expect("connection");
    framegate_commands::idempotency::mark_committed(&mut conn, claim, None)
        .await
        .expect("mark committed");
}

#[tokio::test]
async fn a_claim_whose_owner_died_is_taken_over_once_its_lease_ran_out() {
    let db = TestDatabase::new().await;
    let dead = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::InProgress,
        "within the lease the first request may still be running"
    );
    expire_leases(&db.pool).await;
    let retry = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    assert_ne!(retry.owner, dead.owner);
    // The first owner, had it only been frozen, can no longer commit or complete.
    let mut conn = db.pool.acquire().await.expect("connection");
    assert!(
        framegate_commands::idempotency::mark_committed(&mut conn, &dead, None)
            .await
            .is_err(),
        "a taken-over claim cannot mark anything committed"
    );
    assert!(
        !complete(&db.pool, &dead, &stored(StatusCode::CREATED, "dead"), false)
            .await
            .expect("complete")
    );
    assert!(complete(
        &db.pool,
        &retry,
        &stored(StatusCode::CREATED, "retry"),
        false
    )
    .await
    .expect("complete"));
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::Replay(stored(StatusCode::CREATED, "retry"))
    );
}

#[tokio::test]
async fn a_renewed_lease_keeps_the_claim_in_progress() {
    let db = TestDatabase::new().await;
    let running = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    expire_leases(&db.pool).await;
    assert!(renew(&db.pool, &running, LEASE).await.expect("renew"));
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::InProgress
    );
}

#[tokio::test]
async fn a_request_that_committed_is_never_run_again_even_without_its_response() {
    let db = TestDatabase::new().await;
    let first = claim(&db.pool, SCOPE, "k1", "hash-a").await;
    mark_committed(&db.pool, &first).await;
    // Its response was lost (a 5xx after the commit): the claim is given up, and the
    // record stays, its lease ended, so the retry learns at once that it took effect.
    abandon(&db.pool, &first).await.expect("abandon");
    assert_eq!(
        begin(&db.pool, SCOPE, "k1", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::Committed
    );
    // Likewise after a crash: the lease runs out, the record says committed.
    let other = claim(&db.pool, SCOPE, "k2", "hash-a").await;
    mark_committed(&db.pool, &other).await;
    expire_leases(&db.pool).await;
    assert_eq!(
        begin(&db.pool, SCOPE, "k2", "hash-a", LEASE)
            .await
            .expect("begin"),
        Begin::Committed
    );
}

#[tokio::test]
async fn of_concurrent_duplicates_exactly_one_executes() {
    let db = TestDatabase::new().await;
    let attempts = (0..12).map(|_| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            begin(&pool, SCOPE, "race", "hash-a", LEASE)
                .await
                .expect("begin")
        })
    });
    let mut executed = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Begin::Execute(_) => executed += 1,
            Begin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(executed, 1);
}

#[tokio::test]
async fn purging_removes_only_expired_records() {
    let db = TestDatabase::new().await;
    let old = claim(&db.pool, SCOPE, "old", "hash-a").await;
    complete(&db.pool, &old, &stored(StatusCode::OK, "{}"), false)
        .await
        .expect("complete");
    age_records(&db.pool, "25 hours").await;
    claim(&db.pool, SCOPE, "new", "hash-a").await;

    assert_eq!(purge_expired(&db.pool).await.expect("purge"), 1);
    assert_eq!(purge_expired(&db.pool).await.expect("purge"), 0);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&db.pool)
        .await
        .expect("keys");
    assert_eq!(left, vec!["new".to_owned()]);
}

// ---- Over HTTP: execute_once in front of counting handlers -------------------------------

#[derive(Clone, Default)]
struct Handlers {
    calls: Arc<AtomicUsize>,
    started: Arc<Notify>,
    release: Arc<Notify>,
}

async fn create(State(h): State<Handlers>, body: Bytes) -> Response {
    let n = h.calls.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        Json(json!({"call": n, "echo": String::from_utf8_lossy(&body)})),
    )
        .into_response()
}

async fn fail_first(State(h): State<Handlers>) -> Response {
    match h.calls.fetch_add(1, Ordering::SeqCst) {
        0 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        n => (StatusCode::CREATED, Json(json!({"call": n + 1}))).into_response(),
    }
}

async fn panic_first(State(h): State<Handlers>) -> Response {
    if h.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("boom");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn slow(State(h): State<Handlers>) -> Response {
    h.started.notify_one();
    h.release.notified().await;
    let n = h.calls.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(json!({"call": n}))).into_response()
}

fn app(pool: PgPool, handlers: Handlers) -> Router {
    Router::new()
        .route("/things", post(create).get(create))
        .route("/flaky", post(fail_first))
        .route("/panics", post(panic_first))
        .route("/slow", post(slow))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let pool = pool.clone();
            async move {
                match requested_key(&request) {
                    None => next.run(request).await,
                    Some(Err(error)) => error.into_response(),
                    Some(Ok(key)) => {
                        let seal = ResponseSeal::derive(b"middleware test secret");
                        let protocol = Protocol {
                            pool: &pool,
                            seal: &seal,
                            lease: LEASE,
                            body_limit: 1024,
                        };
                        execute_once(&protocol, SCOPE, &key, request, next).await
                    }
                }
            }
        }))
        .with_state(handlers)
}

fn post_json(path: &str, key: Option<&str>, body: &str) -> Request {
    let mut builder =
        axum::http::Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body.to_owned())).expect("request")
}

async fn body_json(response: Response) -> Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test]
async fn a_retried_post_gets_the_first_response_without_running_again() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());

    let first = app
        .clone()
        .oneshot(post_json("/things", Some("k1"), r#"{"a":1}"#))
        .await
        .expect("call");
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let first = body_json(first).await;

    let again = app
        .clone()
        .oneshot(post_json("/things", Some("k1"), r#"{"a":1}"#))
        .await
        .expect("call");
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        again
            .headers()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(
        again
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(body_json(again).await, first);
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 1);

    let other = app
        .clone()
        .oneshot(post_json("/things", Some("k1"), r#"{"a":2}"#))
        .await
        .expect("call");
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body_json(other).await["code"], "idempotency_key_reused");
    let elsewhere = app
        .clone()
        .oneshot(post_json("/things?page=2", Some("k1"), r#"{"a":1}"#))
        .await
        .expect("call");
    assert_eq!(
        elsewhere.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "another path is another request"
    );
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn requests_without_a_key_or_other_methods_are_not_touched() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());
    for _ in 0..2 {
        let response = app
            .clone()
            .oneshot(post_json("/things", None, "{}"))
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let get = axum::http::Request::get("/things")
        .header("idempotency-key", "k1")
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        app.clone().oneshot(get).await.expect("call").status(),
        StatusCode::CREATED
    );
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 3);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_malformed_key_is_a_400_problem() {
    let db = TestDatabase::new().await;
    let app = app(db.pool.clone(), Handlers::default());
    let long = "k".repeat(256);
    for key in ["", "with space", long.as_str()] {
        let response = app
            .clone()
            .oneshot(post_json("/things", Some(key), "{}"))
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(body_json(response).await["code"], "invalid_idempotency_key");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_anything_is_recorded() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
    let declared = axum::http::Request::post("/things")
        .header("idempotency-key", "big")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .expect("request");
    let response = app.clone().oneshot(declared).await.expect("call");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_json(response).await["code"], "body_too_large");

    // Without Content-Length (a stream of unknown size), the limit still holds.
    let stream = Body::from(big).into_data_stream();
    let streamed = axum::http::Request::post("/things")
        .header("idempotency-key", "big")
        .body(Body::from_stream(stream))
        .expect("request");
    let response = app.clone().oneshot(streamed).await.expect("call");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_json(response).await["code"], "body_too_large");
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_server_error_is_not_stored_so_the_retry_runs_again() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());
    let failed = app
        .clone()
        .oneshot(post_json("/flaky", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retried = app
        .clone()
        .oneshot(post_json("/flaky", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert!(retried.headers().get("idempotency-replayed").is_none());
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500_and_releases_the_key() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());
    let crashed = app
        .clone()
        .oneshot(post_json("/panics", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(crashed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body_json(crashed).await["code"], "internal");
    let retried = app
        .clone()
        .oneshot(post_json("/panics", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(retried.status(), StatusCode::NO_CONTENT);
    let replayed = app
        .clone()
        .oneshot(post_json("/panics", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(replayed.status(), StatusCode::NO_CONTENT);
    assert!(replayed.headers().get("idempotency-replayed").is_some());
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_duplicate_sent_while_the_first_runs_gets_409_with_retry_after() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());
    let first = tokio::spawn(app.clone().oneshot(post_json("/slow", Some("k1"), "{}")));
    handlers.started.notified().await;

    let duplicate = app
        .clone()
        .oneshot(post_json("/slow", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert_eq!(
        duplicate
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        body_json(duplicate).await["code"],
        "idempotency_in_progress"
    );

    handlers.release.notify_one();
    let first = first.await.expect("task").expect("call");
    assert_eq!(first.status(), StatusCode::CREATED);
    let replayed = app
        .clone()
        .oneshot(post_json("/slow", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(body_json(replayed).await["call"], 1);
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_request_still_gets_its_outcome_recorded() {
    let db = TestDatabase::new().await;
    let handlers = Handlers::default();
    let app = app(db.pool.clone(), handlers.clone());
    let impatient = tokio::spawn(app.clone().oneshot(post_json("/slow", Some("k1"), "{}")));
    handlers.started.notified().await;
    impatient.abort();
    let _ = impatient.await;
    handlers.release.notify_one();

    let mut status: Option<i32> = None;
    for _ in 0..100 {
        status = sqlx::query_scalar("SELECT status_code FROM idempotency_keys WHERE key = 'k1'")
            .fetch_one(&db.pool)
            .await
            .expect("row");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(201));
    let retried = app
        .clone()
        .oneshot(post_json("/slow", Some("k1"), "{}"))
        .await
        .expect("call");
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert!(retried.headers().get("idempotency-replayed").is_some());
    assert_eq!(handlers.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn the_fingerprint_is_stable_hex() {
    let hash = fingerprint(
        &axum::http::Method::POST,
        &"/v1/x".parse().expect("uri"),
        b"{}",
    );
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
}

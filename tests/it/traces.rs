//! One trace from the HTTP request to the webhook (issue 14, ADR 0037): `framegate dev` as a
//! real process with `OTEL_EXPORTER_OTLP_ENDPOINT` pointed at an OTLP/HTTP receiver started
//! here, a video requested with the caller's `traceparent` and run through the simulator.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{Dev, PATIENCE};
use framegate_commands::testing::TestDatabase;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::{json, Value};

/// What the receiver was sent.
#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    /// `service.name` of every batch.
    services: BTreeSet<String>,
    /// The `traceparent` header of each webhook delivery.
    webhooks: Vec<Option<String>>,
}

#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// The traces it is linked to.
    linked_traces: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

fn received(shared: &Shared) -> std::sync::MutexGuard<'_, Received> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `POST /v1/traces` as a collector answers it: protobuf in, an empty success out.
async fn collect(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = received(&shared);
    for resource_spans in request.resource_spans {
        for attribute in resource_spans.resource.iter().flat_map(|r| &r.attributes) {
            if attribute.key == "service.name" {
                if let Some(AnyValue::StringValue(name)) =
                    attribute.value.as_ref().and_then(|v| v.value.clone())
                {
                    received.services.insert(name);
                }
            }
        }
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.spans.push(ReceivedSpan {
                name: span.name,
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                linked_traces: span
                    .links
                    .iter()
                    .map(|l| hex::encode(&l.trace_id))
                    .collect(),
            });
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// A webhook receiver: records the trace header, answers 204.
async fn hook(State(shared): State<Shared>, headers: HeaderMap) -> StatusCode {
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    received(&shared).webhooks.push(traceparent);
    StatusCode::NO_CONTENT
}

/// Starts the receiver on a free port; returns its base URL.
async fn start_receiver(shared: Shared) -> String {
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .route("/hook", post(hook))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver");
    });
    base
}

/// Waits until `done` holds for what was received, at most [`PATIENCE`].
async fn until(shared: &Shared, what: &str, done: impl Fn(&Received) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done(&received(shared)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_request_through_the_simulator_to_the_webhook() {
    let db = TestDatabase::unmigrated(2).await;
    let shared = Shared::default();
    let receiver = start_receiver(shared.clone()).await;
    let dev = Dev::start(
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.clone()),
            // Batches go out every 200 ms instead of 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
            ("FRAMEGATE_SIMULATOR_LATENCY_MS", "1000".to_owned()),
            // Logs carry the trace id; JSON as in production.
            ("FRAMEGATE_LOG_FORMAT", "json".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    let token = dev.sign_up(&client, "tracer@example.com").await;

    // The caller's own trace: the API continues it.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = "1f2e3d4c5b6a7988";
    let requested = client
        .post(dev.url("/v1/videos"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({
            "prompt": "a lantern drifting over a dark lake",
            "provider": "simulator",
            "duration_seconds": 1,
            "aspect_ratio": "16:9",
            "resolution": "480p",
            "webhook_url": format!("{receiver}/hook"),
            "webhook_events_filter": ["video.completed"],
        }))
        .send()
        .await
        .expect("request video");
    assert_eq!(requested.status(), StatusCode::CREATED);
    let video: Value = requested.json().await.expect("json");
    let video_id = video["id"].as_str().expect("id").to_owned();

    // The video completes and its webhook arrives.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let current: Value = client
            .get(dev.url(&format!("/v1/videos/{video_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("video")
            .json()
            .await
            .expect("json");
        match current["status"].as_str() {
            Some("completed") => break,
            Some("failed" | "cancelled") => panic!("the video did not complete: {current}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the video never completed: {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(&shared, "the webhook", |r| !r.webhooks.is_empty()).await;
    // The credits are settled once the capture is in the trace.
    until(&shared, "the settlement span", |r| {
        r.spans
            .iter()
            .any(|s| s.trace_id == trace_id && s.name == "settlement")
    })
    .await;

    // SIGTERM: the process stops cleanly and flushes the spans it still holds.
    let status = dev.terminate();
    assert!(status.success(), "{status:?}");

    let (spans, services, webhooks) = {
        let received = received(&shared);
        (
            received.spans.clone(),
            received.services.clone(),
            received.webhooks.clone(),
        )
    };
    let ours: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let names: BTreeSet<&str> = ours.iter().map(|s| s.name.as_str()).collect();
    // The request (named by its route, a child of the caller's span), the command it ran,
    // the dispatcher's subscription handling the request's event, the call to the provider,
    // the poller finishing the job and recording completion, the credit settlement and the
    // webhook delivery: one trace.
    let request = ours
        .iter()
        .find(|s| s.name == "POST /v1/videos")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(request.parent_span_id, caller_span);
    for name in [
        "command",
        "dispatcher.dispatch",
        "provider.submit",
        "provider.poll",
        "poller.follow",
        "poller.finish",
        "settlement",
        "webhook.delivery",
    ] {
        assert!(
            names.contains(name),
            "{name} missing from the trace: {names:?}"
        );
    }
    // Every span of the trace hangs from the caller's span: no orphans.
    let ids: BTreeSet<&str> = ours.iter().map(|s| s.span_id.as_str()).collect();
    for span in &ours {
        assert!(
            span.parent_span_id == caller_span || ids.contains(span.parent_span_id.as_str()),
            "{span:?} has a parent outside the trace"
        );
    }
    // The projectors' batches are traces of their own, linked to the request's.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "subscription.batch" && s.linked_traces.contains(&trace_id)),
        "no subscription batch is linked to the request's trace"
    );
    // The subscription loop itself is never exported.
    assert!(!spans
        .iter()
        .any(|s| s.name == "subscription.poll" || s.name == "subscription.run"));
    assert!(services.contains("framegate"), "{services:?}");

    // The webhook delivery passed the trace on.
    let delivered = webhooks[0].as_deref().expect("a traceparent header");
    assert_eq!(delivered.split('-').nth(1), Some(trace_id.as_str()));

    // Every event of the video, and the credit events it caused, keep the trace in their
    // metadata: what the Kafka relay and later consumers continue from.
    let stored: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT event_type, metadata ->> 'traceparent' FROM events
          WHERE (aggregate_type = 'Video' AND aggregate_id = $1)
             OR (aggregate_type = 'CreditAccount' AND payload::text LIKE '%' || $1 || '%')
          ORDER BY global_position",
    )
    .bind(&video_id)
    .fetch_all(&db.pool)
    .await
    .expect("events");
    let types: Vec<&str> = stored.iter().map(|(t, _)| t.as_str()).collect();
    for expected in [
        "CreditsReserved",
        "VideoRequested",
        "VideoSubmitted",
        "VideoCompleted",
        "ReservationCaptured",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    for (event_type, traceparent) in &stored {
        let traceparent = traceparent
            .as_deref()
            .unwrap_or_else(|| panic!("{event_type} has no traceparent"));
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(trace_id.as_str()),
            "{event_type}: {traceparent}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_events_carry_no_trace_context() {
    let db = TestDatabase::unmigrated(2).await;
    let dev = Dev::start(&db, &[]);
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    // Even a caller's traceparent is not stored: nothing would export the trace.
    let registered = client
        .post(dev.url("/v1/auth/register"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"email": "untraced@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let metadata: Vec<Value> = sqlx::query_scalar("SELECT metadata FROM events")
        .fetch_all(&db.pool)
        .await
        .expect("events");
    assert!(!metadata.is_empty(), "the registration recorded events");
    for stored in &metadata {
        assert!(
            stored.get("traceparent").is_none() && stored.get("tracestate").is_none(),
            "{stored}"
        );
    }
    let status = dev.terminate();
    assert!(status.success(), "{status:?}");
}

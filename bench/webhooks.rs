//! Webhook delivery benchmark, printing figures (run: `cargo bench --bench webhooks`).
//!
//! A local receiver (axum on loopback) and FRAMEGATE_BENCH_ENDPOINTS (8) endpoints at it.
//! (a) Throughput: FRAMEGATE_BENCH_DELIVERIES (4000) deliveries queued over the endpoints,
//!     drained by the real sender (subscription-free: rows inserted as the subscription
//!     would), next to a plain HTTP loop posting the same bodies to the same receiver with
//!     one request in flight per endpoint, as the sender's order allows (with reqwest, and
//!     on hyper's connection API, the leanest client in-process), and `wrk` with one
//!     connection per endpoint, in the same run.
//! (b) Latency: FRAMEGATE_BENCH_VIDEOS (100) videos driven to completion by 4 clients, the
//!     delivery subscription and the sender running as in `framegate worker`; the delay from
//!     each `VideoCompleted` commit to the receiver's 2xx, per endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::webhook_deliveries::{enqueue, Envelope, NewDelivery, Target};
use framegate_commands::webhooks::NewEndpoint;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoCommand, VideoId,
    VideoSpec, WebhookEndpointId,
};
use framegate_projections::notify::Notifications;
use framegate_projections::Subscription;
use framegate_workers::webhooks::{Sender, WebhookConfig, WebhookEnqueuer, SUBSCRIPTION};
use tokio::sync::watch;
use uuid::Uuid;

/// The allocator the `framegate` binary ships with (ADR 0046), so the sender runs as in
/// production. The receiver shares it: it serves every client of part (a) alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Arrivals by `webhook-id`, kept only while `recording` (part (b)): in part (a) the receiver
/// does the same work for every client (the sender, the HTTP loops, wrk), so their rates
/// compare. Keeping 200,000 arrivals in a map grown under a lock costs per request, and it
/// cost the sender alone.
#[derive(Default)]
struct Arrivals {
    recording: AtomicBool,
    seen: Mutex<HashMap<String, Vec<Instant>>>,
}

async fn receiver() -> (String, Arc<Arrivals>) {
    let arrivals: Arc<Arrivals> = Arc::default();
    let kept = arrivals.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: axum::body::Bytes| {
        let kept = kept.clone();
        async move {
            if kept.recording.load(Ordering::Relaxed) {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.seen
                    .lock()
                    .expect("arrivals")
                    .entry(id)
                    .or_default()
                    .push(Instant::now());
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, arrivals)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn sender(pool: &sqlx::PgPool, store: &EventStore) -> Sender {
    Sender::new(
        pool.clone(),
        store.clone(),
        WebhookConfig {
            allow_private: true,
            ..WebhookConfig::default()
        },
        None,
    )
    .expect("client")
}

/// Whether every delivery is recorded: the senders' scan has seen every row and every
/// queue's cursor is at its tail (a record moves the cursor with its rows' states in one
/// transaction). Read from the queues, not the outbox: polling must not cost the database a
/// scan of the outbox while the sender works.
async fn drained(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM webhook_queues WHERE sent_through < tail_seq)
            AND (SELECT scanned_through FROM webhook_outbox_scan)
                >= (SELECT COALESCE(max(seq), 0) FROM webhook_deliveries)",
    )
    .fetch_one(pool)
    .await
    .expect("pending")
}

#[tokio::main]
async fn main() {
    let endpoints_n = env_u64("FRAMEGATE_BENCH_ENDPOINTS", 8) as usize;
    let deliveries_n = env_u64("FRAMEGATE_BENCH_DELIVERIES", 4000) as usize;
    let videos_n = env_u64("FRAMEGATE_BENCH_VIDEOS", 100) as usize;
    let db = TestDatabase::with_pool_size(24).await;
    let pool = db.pool.clone();
    let store = framegate_projections::inline::event_store(pool.clone());
    let (url, arrivals) = receiver().await;
    let owner = UserId::from_uuid(Uuid::now_v7());
    let meta = CommandMetadata::new_request(Actor::User(owner));
    let mut endpoints = Vec::new();
    for i in 0..endpoints_n {
        let id = Uuid::now_v7();
        framegate_commands::webhooks::create(
            &store,
            NewEndpoint {
                endpoint_id: WebhookEndpointId::from_uuid(id),
                owner,
                url: format!("{url}/hooks/{i}"),
                events: Some(vec!["video.completed".into()]),
                description: None,
            },
            &meta,
        )
        .await
        .expect("endpoint");
        endpoints.push(id);
    }
    let (stop, stopped) = watch::channel(false);
    let (notifications, _listening) = Notifications::spawn(pool.clone(), stopped.clone());

    // (a) Throughput: queued while no sender runs, then drained.
    let body = serde_json::to_string(&Envelope {
        id: "msg_bench",
        event_type: "webhook.test",
        created_at: chrono::Utc::now(),
        data: serde_json::json!({"id": Uuid::now_v7(), "status": "completed", "progress": 100,
            "prompt": "a paper boat on a rainy street", "final_cost": 4}),
    })
    .expect("body");
    let mut tx = pool.begin().await.expect("tx");
    let rows: Vec<NewDelivery> = (0..deliveries_n)
        .map(|i| NewDelivery {
            target: Target::Endpoint(endpoints[i % endpoints_n]),
            owner: owner.as_uuid(),
            message_id: format!("msg_{}", Uuid::now_v7().simple()),
            event_type: "webhook.test".into(),
            event_at: chrono::Utc::now(),
            video_id: None,
            body: body.clone(),
            trace: None,
        })
        .collect();
    enqueue(&mut tx, &rows).await.expect("enqueue");
    tx.commit().await.expect("commit");
    let started = Instant::now();
    let (drain_stop, drain_stopped) = watch::channel(false);
    let draining =
        tokio::spawn(sender(&pool, &store).run(Some(notifications.clone()), drain_stopped));
    while !drained(&pool).await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sender_elapsed = started.elapsed();
    let _ = drain_stop.send(true);
    draining.await.expect("sender");
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_delivery_states WHERE status = 'delivered'",
    )
    .fetch_one(&pool)
    .await
    .expect("delivered");
    assert_eq!(
        delivered, deliveries_n as i64,
        "every delivery recorded as delivered"
    );

    let client = reqwest::Client::new();
    let started = Instant::now();
    let per_endpoint = deliveries_n / endpoints_n;
    let mut loops = Vec::new();
    for i in 0..endpoints_n {
        let (client, url, body) = (client.clone(), format!("{url}/raw/{i}"), body.clone());
        loops.push(tokio::spawn(async move {
            for _ in 0..per_endpoint {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("raw post");
                assert!(response.status().is_success());
                let _ = response.bytes().await;
            }
        }));
    }
    for task in loops {
        task.await.expect("raw loop");
    }
    let raw_elapsed = started.elapsed();
    let hyper_rate = hyper_loops(&url, &body, endpoints_n, per_endpoint).await;
    let sender_rate = deliveries_n as f64 / sender_elapsed.as_secs_f64();
    let raw_rate = (per_endpoint * endpoints_n) as f64 / raw_elapsed.as_secs_f64();
    println!(
        "(a) sender      : {deliveries_n} deliveries over {endpoints_n} endpoints in {:.2} s = {sender_rate:>7.0}/s",
        sender_elapsed.as_secs_f64()
    );
    println!(
        "    reqwest loop: same receiver, {endpoints_n} loops, one request each in flight = {raw_rate:>7.0}/s   ratio {:.2}",
        sender_rate / raw_rate
    );
    println!(
        "    hyper loop  : same receiver, {endpoints_n} connections, one request each in flight = {hyper_rate:>7.0}/s   ratio {:.2}",
        sender_rate / hyper_rate
    );
    match wrk(&format!("{url}/wrk"), &body, endpoints_n).await {
        Ok(wrk_rate) => println!(
            "    wrk         : same receiver, {endpoints_n} connections, same body = {wrk_rate:>7.0}/s   ratio {:.2}",
            sender_rate / wrk_rate
        ),
        Err(why) => println!("    wrk         : not run ({why}; scripts/install-bench-tools.sh installs it)"),
    }

    // (b) Latency: the subscription and the sender as the worker runs them.
    arrivals.recording.store(true, Ordering::Relaxed);
    let subscription =
        Subscription::new(SUBSCRIPTION, pool.clone()).with_notifications(notifications.clone());
    let mut sub_stopped = stopped.clone();
    tokio::spawn(async move {
        let handler = WebhookEnqueuer::new(Duration::from_secs(3600));
        let _ = subscription
            .run(&handler, async move {
                let _ = sub_stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    tokio::spawn(sender(&pool, &store).run(Some(notifications.clone()), stopped.clone()));
    store
        .credits()
        .execute(
            &owner.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(1_000_000),
                reason: "bench".into(),
                granted_by: "system".into(),
            },
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
    let commits: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let clients = 4;
    let mut drivers = Vec::new();
    for _ in 0..clients {
        let (store, commits, meta) = (store.clone(), commits.clone(), meta.clone());
        let pool = pool.clone();
        drivers.push(tokio::spawn(async move {
            for _ in 0..videos_n / clients {
                let video = drive(&store, owner, &meta).await;
                let committed = Instant::now();
                let id: Uuid = sqlx::query_scalar(
                    "SELECT event_id FROM events WHERE aggregate_id = $1 AND event_type = 'VideoCompleted'",
                )
                .bind(video.to_string())
                .fetch_one(&pool)
                .await
                .expect("completed");
                commits
                    .lock()
                    .expect("commits")
                    .insert(format!("msg_{}", id.simple()), committed);
            }
        }));
    }
    for driver in drivers {
        driver.await.expect("driver");
    }
    let expected = (videos_n / clients) * clients * endpoints_n;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut latencies = Vec::new();
    loop {
        latencies.clear();
        let commits = commits.lock().expect("commits").clone();
        let arrivals = arrivals.seen.lock().expect("arrivals").clone();
        for (id, committed) in &commits {
            for arrived in arrivals.get(id).into_iter().flatten() {
                latencies.push(arrived.saturating_duration_since(*committed));
            }
        }
        if latencies.len() >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    println!(
        "(b) VideoCompleted commit -> receiver 2xx: {} deliveries ({} videos x {endpoints_n} endpoints): p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        latencies.len(),
        expected / endpoints_n,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    // Where the time goes: event -> enqueued (the subscription), enqueued -> delivered (the
    // sender), by the database's clock.
    let (enqueue_p50, enqueue_p99, send_p50, send_p99): (f64, f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - event_at)) * 1000,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - event_at)) * 1000,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)) * 1000,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)) * 1000
           FROM webhook_delivery_states WHERE event_type = 'video.completed'",
    )
    .fetch_one(&pool)
    .await
    .expect("split");
    println!(
        "    of which event -> enqueued p50 {enqueue_p50:.1} ms p99 {enqueue_p99:.1} ms; enqueued -> delivered p50 {send_p50:.1} ms p99 {send_p99:.1} ms"
    );
    let _ = stop.send(true);
}

/// The rate of `endpoints` loops posting `body` to the receiver, each on one HTTP/1.1
/// connection of hyper's connection API with one request in flight (the leanest client in
/// this process: no pool, no signing, no database).
async fn hyper_loops(url: &str, body: &str, endpoints: usize, per_endpoint: usize) -> f64 {
    use http_body_util::{BodyExt as _, Full};
    let address = url.trim_start_matches("http://").to_owned();
    let body = bytes::Bytes::from(body.to_owned());
    let started = Instant::now();
    let mut loops = Vec::new();
    for i in 0..endpoints {
        let (address, body) = (address.clone(), body.clone());
        loops.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut send, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let path = format!("/hyper/{i}");
            for _ in 0..per_endpoint {
                send.ready().await.expect("ready");
                let request = hyper::Request::post(path.as_str())
                    .header("host", address.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("request");
                let response = send.send_request(request).await.expect("hyper post");
                assert!(response.status().is_success());
                response.into_body().collect().await.expect("body");
            }
        }));
    }
    for task in loops {
        task.await.expect("hyper loop");
    }
    (per_endpoint * endpoints) as f64 / started.elapsed().as_secs_f64()
}

/// The rate `wrk` (`WRK`, default on PATH) posts `body` to `url` at, over `connections`
/// connections for FRAMEGATE_BENCH_WRK_SECONDS (3).
async fn wrk(url: &str, body: &str, connections: usize) -> Result<f64, String> {
    let wrk = std::env::var("WRK").unwrap_or_else(|_| "wrk".to_owned());
    let seconds = env_u64("FRAMEGATE_BENCH_WRK_SECONDS", 3);
    let script = tempfile::Builder::new()
        .suffix(".lua")
        .tempfile()
        .map_err(|e| e.to_string())?;
    std::fs::write(
        script.path(),
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{body}]==]\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let output = tokio::process::Command::new(&wrk)
        .arg(format!("-t{}", connections.clamp(1, 2)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script.path())
        .arg(url)
        .output()
        .await
        .map_err(|e| format!("{wrk}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .ok_or_else(|| format!("no rate in wrk's output: {text}"))
}

/// Requests, starts and completes one video; returns it once `VideoCompleted` is committed.
async fn drive(store: &EventStore, owner: UserId, meta: &CommandMetadata) -> VideoId {
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "a paper boat on a rainy street".into(),
        negative_prompt: None,
        provider: ProviderPreference::Simulator,
        model: None,
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "720p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    request_video(store, video, spec, meta, None)
        .await
        .expect("request");
    let system = CommandMetadata::new_request(Actor::System);
    for command in [
        VideoCommand::StartSubmission {
            attempt: 1,
            provider: ProviderKind::Simulator,
            model: "simulator-v1".into(),
        },
        VideoCommand::MarkSubmitted {
            provider_job_id: "sim".into(),
        },
        VideoCommand::Deliver {
            blob_key: format!("videos/{video}/video.mp4"),
            bytes: 1000,
            sha256: "ab".repeat(32),
            duration_ms: 4000,
            width: 1280,
            height: 720,
            final_cost: Credits::new(4),
        },
    ] {
        store
            .videos()
            .execute(&video.to_string(), command, &system)
            .await
            .expect("video command");
    }
    video
}

//! `GET /v1/videos/{id}/events` through the real router: streams fed by the process's one
//! video watcher (the database's work does not grow with the streams), capped per user and
//! per process, ended after their lifetime with a retry hint and resumed with
//! `Last-Event-ID`, and ended when their credentials are revoked.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_problem, TestApp};
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{ProviderKind, UserCommand, VideoCommand};
use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(20);

/// One event of a stream as a client sees it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Frame {
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
}

impl Frame {
    fn video(&self) -> Option<Value> {
        (self.event.as_deref() == Some("video"))
            .then(|| serde_json::from_str(self.data.as_deref()?).ok())
            .flatten()
    }
}

/// An open stream: its frames as they arrive; `None` once the server ended it.
struct Stream {
    frames: mpsc::UnboundedReceiver<Frame>,
    reader: tokio::task::JoinHandle<()>,
}

impl Stream {
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, self.frames.recv())
            .await
            .expect("a frame or the end in time")
    }

    /// The next frame that is not only a keep-alive comment.
    async fn next_video(&mut self) -> Value {
        loop {
            let frame = self.next().await.expect("the stream goes on");
            if let Some(video) = frame.video() {
                return video;
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Drops the response: the client closes its connection.
        self.reader.abort();
    }
}

/// Parses an SSE body into frames (comments and blank keep-alives are skipped).
fn spawn_reader(response: reqwest::Response) -> Stream {
    let (sender, frames) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "event" => frame.event = Some(value),
                        "id" => frame.id = Some(value),
                        "data" => frame.data = Some(value),
                        "retry" => frame.retry = value.parse().ok(),
                        _ => {}
                    }
                }
                if frame != Frame::default() && sender.send(frame).is_err() {
                    return;
                }
            }
        }
    });
    Stream { frames, reader }
}

async fn request_stream(
    app: &TestApp,
    credential: &str,
    video: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/v1/videos/{video}/events")))
        .bearer_auth(credential);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("request")
}

async fn open(app: &TestApp, credential: &str, video: &str) -> Stream {
    let response = request_stream(app, credential, video, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    spawn_reader(response)
}

async fn new_video(app: &TestApp, token: &str) -> String {
    let video: Value = app
        .post(
            "/v1/videos",
            Some(token),
            json!({"prompt": "a lighthouse in a storm", "provider": "simulator",
                   "duration_seconds": 10, "aspect_ratio": "16:9", "resolution": "720p"}),
        )
        .await
        .json()
        .await
        .expect("json");
    video["id"].as_str().expect("id").to_owned()
}

/// What a worker records, through the event store (the inline read model follows).
async fn worker(app: &TestApp, video: &str, command: VideoCommand) {
    let meta = CommandMetadata::new_request(Actor::System);
    app.state
        .store
        .videos()
        .execute(video, command, &meta)
        .await
        .expect("command");
}

/// Takes a new video to a provider that accepted it (`submitted`).
async fn submit(app: &TestApp, video: &str) {
    for (command, _, _) in changes().into_iter().take(2) {
        worker(app, video, command).await;
    }
}

/// The steps a video goes through until it runs: each changes its status or progress.
fn changes() -> Vec<(VideoCommand, &'static str, i64)> {
    vec![
        (
            VideoCommand::StartSubmission {
                attempt: 1,
                provider: ProviderKind::Simulator,
                model: "simulator-v1".into(),
            },
            "submitted",
            0,
        ),
        (
            VideoCommand::MarkSubmitted {
                provider_job_id: "job-1".into(),
            },
            "submitted",
            0,
        ),
        (VideoCommand::RecordProgress { percent: 30 }, "running", 30),
        (VideoCommand::RecordProgress { percent: 60 }, "running", 60),
        (VideoCommand::RecordProgress { percent: 90 }, "running", 90),
    ]
}

/// Transactions committed in the test's database, as the statistics collector has them
/// (each backend reports when it goes idle, at most once a second, so a window is read late).
async fn commits(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("stats")
}

/// Opens `n` streams on a new video, then takes it through [`changes`]; every stream must
/// receive every change. Returns (looks per change, transactions committed in a quiet
/// window of three seconds with the streams open).
async fn watch_with(app: &TestApp, token: &str, n: usize) -> (f64, i64) {
    let video = new_video(app, token).await;
    let watcher = &app.state.streams.videos;
    let mut streams = futures::future::join_all((0..n).map(|_| open(app, token, &video))).await;
    for stream in &mut streams {
        assert_eq!(stream.next_video().await["status"], "queued");
    }

    // Quiet: the streams wait; nothing may poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = commits(app).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet = commits(app).await - before;

    let looks = watcher.looks();
    let steps = changes();
    for (command, status, progress) in &steps {
        worker(app, &video, command.clone()).await;
        for stream in &mut streams {
            let seen = stream.next_video().await;
            assert_eq!(
                (&seen["status"], &seen["progress"]),
                (&json!(status), &json!(progress)),
                "{seen}"
            );
        }
    }
    let per_change = (watcher.looks() - looks) as f64 / steps.len() as f64;
    (per_change, quiet)
}

#[tokio::test]
async fn five_hundred_streams_on_one_video_cost_the_database_what_five_do() {
    let app = TestApp::with_config(|config| {
        config.streams.max_per_user = 1_000;
        config.streams.max_total = 1_000;
        // Only notifications wake the watcher here.
        config.streams.recheck = Duration::from_secs(600);
        config.rate.user_per_minute = 100_000;
    })
    .await;
    let (_, token, _) = app.signed_in_user("many@example.com").await;

    let (five_looks, five_quiet) = watch_with(&app, &token, 5).await;
    let (many_looks, many_quiet) = watch_with(&app, &token, 500).await;
    println!(
        "looks per change: 5 streams {five_looks}, 500 streams {many_looks}; \
         commits in 3 quiet seconds: 5 streams {five_quiet}, 500 streams {many_quiet}"
    );
    // One look per change, two when a notification arrives while a look runs.
    assert!(five_looks <= 2.0, "{five_looks}");
    assert!(many_looks <= 2.0, "{many_looks}");
    // The window's commits are background work (the projectors, the listener's heartbeat)
    // and vary between runs; one query per stream every 250 ms would add 6,000, one a
    // second 1,500.
    assert!(
        many_quiet < five_quiet + 500,
        "500 streams: {many_quiet} commits, 5 streams: {five_quiet}"
    );
}

#[tokio::test]
async fn the_eleventh_stream_of_a_user_is_refused_until_one_of_ten_closes() {
    let app = TestApp::with_config(|config| {
        config.streams.max_per_user = 10;
        config.streams.max_total = 12;
    })
    .await;
    let (alice, alice_token, _) = app.signed_in_user("alice@example.com").await;
    let (_, bob_token, _) = app.signed_in_user("bob@example.com").await;
    let video = new_video(&app, &alice_token).await;
    let bobs_video = new_video(&app, &bob_token).await;

    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut stream = open(&app, &alice_token, &video).await;
        stream.next_video().await;
        streams.push(stream);
    }
    let refused = request_stream(&app, &alice_token, &video, None).await;
    let retry_after = refused.headers()["retry-after"]
        .to_str()
        .expect("text")
        .to_owned();
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    assert!(retry_after.parse::<u64>().expect("seconds") >= 1);

    // The cap is per user; the process's (12) refuses with 503.
    let _bob1 = open(&app, &bob_token, &bobs_video).await;
    let _bob2 = open(&app, &bob_token, &bobs_video).await;
    let full = request_stream(&app, &bob_token, &bobs_video, None).await;
    assert!(full.headers().contains_key("retry-after"));
    assert_problem(full, StatusCode::SERVICE_UNAVAILABLE, "streams_at_capacity").await;

    // A stream the client closes frees its place.
    drop(streams.pop());
    let deadline = Instant::now() + PATIENCE;
    while app.state.streams.slots.open(alice).1 != 9 {
        assert!(Instant::now() < deadline, "the closed stream kept its slot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = open(&app, &alice_token, &video).await;
    assert_eq!(again.next_video().await["status"], "queued");
    let refused = request_stream(&app, &alice_token, &video, None).await;
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
}

#[tokio::test]
async fn a_stream_ends_at_its_lifetime_and_resumes_without_repeating_the_last_state() {
    let app = TestApp::with_config(|config| {
        config.streams.max_lifetime = Duration::from_secs(2);
    })
    .await;
    let (_, token, _) = app.signed_in_user("resume@example.com").await;
    let video = new_video(&app, &token).await;
    submit(&app, &video).await;

    let mut stream = open(&app, &token, &video).await;
    let first = stream.next().await.expect("the current state");
    assert_eq!(first.video().expect("video")["status"], "submitted");
    let last_id = first.id.clone().expect("an id");
    let started = Instant::now();
    let end = stream.next().await.expect("a last frame");
    assert!(end.retry.is_some_and(|ms| ms >= 1_000), "{end:?}");
    assert!(end.video().is_none());
    assert_eq!(stream.next().await, None, "the stream ended");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Resumed: nothing until the video changes, then the change only.
    let resumed = request_stream(&app, &token, &video, Some(&last_id)).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let mut stream = spawn_reader(resumed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker(&app, &video, VideoCommand::RecordProgress { percent: 40 }).await;
    let next = stream.next().await.expect("the change");
    let shown = next.video().expect("a video event");
    assert_eq!(
        shown["progress"], 40,
        "not the state the client had: {shown}"
    );
    let id: i64 = next.id.expect("id").parse().expect("number");
    assert!(id > last_id.parse::<i64>().expect("number"));
    let end = stream.next().await.expect("the lifetime's end");
    assert!(end.retry.is_some(), "{end:?}");

    // Resumed with nothing new: only the end.
    let resumed = request_stream(&app, &token, &video, Some(&id.to_string())).await;
    let mut stream = spawn_reader(resumed);
    let end = stream.next().await.expect("the lifetime's end");
    assert!(end.video().is_none() && end.retry.is_some(), "{end:?}");

    // A finished video whose last state the client has: 204, so an EventSource stops.
    let mut stream =
        spawn_reader(request_stream(&app, &token, &video, Some(&id.to_string())).await);
    worker(
        &app,
        &video,
        VideoCommand::Fail {
            code: "generation_failed".into(),
            message: "upstream said no".into(),
            retryable: false,
            charged: false,
        },
    )
    .await;
    let last = stream.next().await.expect("the final state");
    assert_eq!(last.video().expect("video")["status"], "failed");
    assert_eq!(stream.next().await, None, "ends at the terminal state");
    let done = request_stream(&app, &token, &video, last.id.as_deref()).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
}

/// Waits for the stream to end with an `error` event carrying `code`.
async fn ends_with_error(stream: &mut Stream, code: &str) -> Duration {
    let started = Instant::now();
    loop {
        let frame = stream.next().await.expect("an error event before the end");
        if frame.event.as_deref() == Some("error") {
            let data: Value =
                serde_json::from_str(frame.data.as_deref().expect("data")).expect("json");
            assert_eq!(data["code"], code, "{data}");
            assert_eq!(stream.next().await, None, "the stream ended");
            return started.elapsed();
        }
        assert_eq!(frame.event.as_deref(), Some("video"), "{frame:?}");
    }
}

#[tokio::test]
async fn revoking_the_key_or_disabling_the_user_ends_open_streams_at_once() {
    let app = TestApp::spawn().await;
    let (user, access, _) = app.signed_in_user("revoked@example.com").await;
    let key: Value = app
        .post("/v1/api-keys", Some(&access), json!({"name": "stream"}))
        .await
        .json()
        .await
        .expect("json");
    let secret = key["secret"].as_str().expect("secret").to_owned();
    let video = new_video(&app, &access).await;
    submit(&app, &video).await;

    let mut by_key = open(&app, &secret, &video).await;
    by_key.next_video().await;
    let mut by_token = open(&app, &access, &video).await;
    by_token.next_video().await;
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{}", key["id"].as_str().expect("id")),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let took = ends_with_error(&mut by_key, "api_key_revoked").await;
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The token's stream goes on until the user is disabled, by another process say.
    worker(&app, &video, VideoCommand::RecordProgress { percent: 10 }).await;
    assert_eq!(by_token.next_video().await["progress"], 10);
    let meta = CommandMetadata::new_request(Actor::System);
    app.state
        .store
        .users()
        .execute(
            &user.to_string(),
            UserCommand::Disable {
                reason: "abuse".into(),
            },
            &meta,
        )
        .await
        .expect("disable");
    let took = ends_with_error(&mut by_token, "account_disabled").await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}

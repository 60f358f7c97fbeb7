//! The walk-through of `tests/dev.rs` once per real provider, each against its local fake
//! (`workers/tests/{veo,sora,kling}/fake.rs`): `framegate dev` runs as a process with only that
//! provider's keys, pointed at the fake, and the simulator off. The fake hands back a real MP4
//! rendered here at the requested size and length, so the pipeline's ffprobe validation, the
//! download, the captured credits and what the fake was sent are all checked for real.
//!
//! Where a fake needs telling when to finish, the test tells it from the SSE stream the client
//! is reading (finish once `running` was seen), never after a sleep: every run sees the same
//! states in the same order however slow the machine is.

#[path = "../../workers/tests/it/kling/fake.rs"]
#[expect(dead_code, reason = "its other scenarios serve the workers tests")]
mod kling_fake;
#[path = "../../workers/tests/it/sora/fake.rs"]
#[expect(dead_code, reason = "its other scenarios serve the workers tests")]
mod sora_fake;
#[path = "../../workers/tests/it/veo/fake.rs"]
#[expect(dead_code, reason = "its other scenarios serve the workers tests")]
mod veo_fake;

use crate::common;

use std::time::{Duration, Instant};

use common::{Dev, PATIENCE};
use framegate_commands::testing::TestDatabase;
use framegate_workers::media::{dimensions, probe, render_simulated, MediaTools, RenderRequest};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use veo_fake::Route;

const PROMPT: &str = "a paper boat drifting down a rain gutter";

/// What a test asks its provider for: parameters the provider's default model supports.
struct Ask {
    provider: &'static str,
    model: &'static str,
    duration_seconds: u32,
    aspect_ratio: &'static str,
    resolution: &'static str,
}

impl Ask {
    /// The frame size the pipeline expects for the request.
    fn size(&self) -> (u32, u32) {
        dimensions(self.aspect_ratio, self.resolution).expect("a supported size")
    }

    /// A real MP4 of the requested length and size, as the provider would hand it back.
    async fn render(&self) -> Vec<u8> {
        let (width, height) = self.size();
        let dir = tempfile::tempdir().expect("render dir");
        let file = dir.path().join("result.mp4");
        let request = RenderRequest::new(PROMPT, self.duration_seconds, width, height);
        render_simulated(&tools(), &request, &file)
            .await
            .expect("render the provider's result");
        std::fs::read(&file).expect("rendered mp4")
    }
}

fn tools() -> MediaTools {
    MediaTools::from_env().expect("ffmpeg and ffprobe")
}

/// A running `framegate dev` with one signed-in user.
struct Session {
    // Declared before the database so the process stops before its database is dropped.
    dev: Dev,
    _db: TestDatabase,
    client: reqwest::Client,
    token: String,
    starting_balance: i64,
}

impl Session {
    /// Starts `framegate dev` with `provider_env`, then registers and signs in.
    async fn start(provider_env: &[(&str, String)]) -> Session {
        let db = TestDatabase::unmigrated(2).await;
        let mut env = vec![
            ("FRAMEGATE_SIMULATOR", "off".to_owned()),
            ("FRAMEGATE_PROVIDER_POLL_INTERVAL_MS", "200".to_owned()),
            ("FRAMEGATE_SIGNUP_CREDITS", "1000".to_owned()),
        ];
        env.extend(provider_env.iter().cloned());
        let dev = Dev::start(&db, &env);
        let client = reqwest::Client::new();
        dev.wait_ready(&client).await;
        let (email, password) = ("tester@example.com", "correct horse battery staple");
        let registered = client
            .post(dev.url("/v1/auth/register"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("register");
        assert_eq!(registered.status(), StatusCode::CREATED);
        // The account's read models are written in the registration's own transaction:
        // it signs in and shows its balance at once.
        assert!(registered.headers().get("framegate-consistency").is_none());
        // The sign-up credits come with the verified address.
        dev.verify_email(&client, email).await;
        let login: Value = client
            .post(dev.url("/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let token = login["access_token"].as_str().expect("token").to_owned();
        let mut session = Session {
            dev,
            _db: db,
            client,
            token,
            starting_balance: 0,
        };
        session.starting_balance = session.get("/v1/credits").await["balance"]
            .as_i64()
            .expect("balance");
        session
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.dev.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("json")
    }

    /// Checks that `provider` is the only one enabled and returns its default model's price.
    async fn price_per_second(&self, ask: &Ask) -> i64 {
        let providers = self.get("/v1/providers").await;
        let providers = providers.as_array().expect("provider list");
        let enabled: Vec<&str> = providers
            .iter()
            .filter(|p| p["enabled"] == true)
            .map(|p| p["provider"].as_str().expect("name"))
            .collect();
        assert_eq!(enabled, [ask.provider], "{providers:#?}");
        let info = providers
            .iter()
            .find(|p| p["provider"] == ask.provider)
            .expect("listed");
        assert_eq!(info["health"], "healthy");
        let model = info["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["default"] == true)
            .expect("a default model");
        assert_eq!(model["model"], ask.model);
        model["credits_per_second"].as_i64().expect("price")
    }

    /// Requests `ask`, follows it to the end (calling `on_event` with every SSE event),
    /// downloads and probes the MP4 and checks the bill; returns the finished video.
    async fn generate(&self, ask: &Ask, on_event: impl FnMut(&Value)) -> Value {
        let price = self.price_per_second(ask).await;
        let requested = self
            .client
            .post(self.dev.url("/v1/videos"))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", format!("{}-1", ask.provider))
            .json(&json!({
                "prompt": PROMPT,
                "provider": ask.provider,
                "duration_seconds": ask.duration_seconds,
                "aspect_ratio": ask.aspect_ratio,
                "resolution": ask.resolution,
            }))
            .send()
            .await
            .expect("request video");
        assert_eq!(requested.status(), StatusCode::CREATED);
        let video: Value = requested.json().await.expect("json");
        let id = video["id"].as_str().expect("video id").to_owned();
        let estimate = video["estimated_cost"].as_i64().expect("estimate");
        assert_eq!(estimate, price * i64::from(ask.duration_seconds));

        let events = self.follow(&id, on_event).await;
        let statuses: Vec<&str> = events
            .iter()
            .map(|e| e["status"].as_str().expect("status"))
            .collect();
        if statuses.last() != Some(&"completed") {
            let video = self.get(&format!("/v1/videos/{id}")).await;
            panic!("the video did not complete: {statuses:?}\n{video:#}");
        }
        let progress: Vec<i64> = events
            .iter()
            .map(|e| e["progress"].as_i64().expect("progress"))
            .collect();
        assert!(
            progress.windows(2).all(|w| w[0] <= w[1]),
            "progress never goes back: {progress:?}"
        );
        assert!(statuses.contains(&"running"), "{statuses:?}");

        self.download_and_probe(&id, ask).await;

        let video = self.get(&format!("/v1/videos/{id}")).await;
        assert_eq!(video["provider"], ask.provider);
        assert_eq!(video["model"], ask.model);
        assert_eq!(video["final_cost"].as_i64(), Some(estimate));
        let attempts = video["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        assert_eq!(attempts[0]["provider"], ask.provider);
        assert_eq!(attempts[0]["model"], ask.model);
        assert!(attempts[0].get("error").is_none(), "{attempts:#?}");
        self.wait_captured(estimate).await;
        video
    }

    /// Reads `video` events off the SSE stream until it ends at the terminal state.
    async fn follow(&self, id: &str, mut on_event: impl FnMut(&Value)) -> Vec<Value> {
        let response = self
            .client
            .get(self.dev.url(&format!("/v1/videos/{id}/events")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("events");
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        let reading = async {
            while let Some(chunk) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut name = None;
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("event:") {
                            name = Some(value.trim().to_owned());
                        } else if let Some(value) = line.strip_prefix("data:") {
                            data.push_str(value.trim_start());
                        }
                    }
                    if name.as_deref() == Some("video") {
                        let event: Value = serde_json::from_str(&data).expect("event json");
                        on_event(&event);
                        events.push(event);
                    }
                }
            }
        };
        if tokio::time::timeout(PATIENCE, reading).await.is_err() {
            let video = self.get(&format!("/v1/videos/{id}")).await;
            panic!("the event stream did not end; the video is now {video:#}");
        }
        events
    }

    /// Downloads through the content redirect and checks the file is the video asked for.
    async fn download_and_probe(&self, id: &str, ask: &Ask) {
        let download = self
            .client
            .get(self.dev.url(&format!("/v1/videos/{id}/content")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("download");
        assert_eq!(download.status(), StatusCode::OK);
        assert_eq!(download.headers()["content-type"], "video/mp4");
        let bytes = download.bytes().await.expect("bytes");
        let file = self.dev.state_dir.path().join("downloaded.mp4");
        std::fs::write(&file, &bytes).expect("write");
        let report = probe(&tools(), &file).await.expect("ffprobe");
        let (width, height) = ask.size();
        assert_eq!(
            (report.codec.as_str(), report.width, report.height),
            ("h264", width, height)
        );
        let expected_ms = u64::from(ask.duration_seconds) * 1_000;
        assert!(
            report.duration_ms.abs_diff(expected_ms) <= 150,
            "{} ms, not {expected_ms}",
            report.duration_ms
        );
    }

    /// Waits until settlement captured `cost`: nothing reserved, the balance down by it.
    async fn wait_captured(&self, cost: i64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let credits = self.get("/v1/credits").await;
            if credits["reserved"] == 0 {
                assert_eq!(
                    credits["balance"].as_i64(),
                    Some(self.starting_balance - cost)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the reservation was never captured: {credits}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ctrl-C: the process must exit cleanly.
    fn interrupt(self) {
        let status = self.dev.interrupt();
        assert!(status.success(), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_veo_video_through_the_gemini_api_ends_as_a_playable_download() {
    let ask = Ask {
        provider: "veo",
        model: "veo-3.1-generate-001",
        duration_seconds: 8,
        aspect_ratio: "16:9",
        resolution: "720p",
    };
    let fake = veo_fake::Fake::start().await;
    let result = ask.render().await;
    let api_key = {
        let mut state = fake.state();
        state.video = result;
        // Unfinished until the client has seen the video running.
        state.pending_polls = usize::MAX;
        state.api_key.clone()
    };
    let session = Session::start(&[
        ("FRAMEGATE_VEO_API_KEY", api_key.clone()),
        ("FRAMEGATE_VEO_BASE_URL", format!("{}/v1beta", fake.base)),
    ])
    .await;

    session
        .generate(&ask, |event| {
            if event["status"] == "running" {
                fake.state().pending_polls = 0;
            }
        })
        .await;

    let submissions = fake.seen(Route::Submit);
    assert_eq!(submissions.len(), 1, "{submissions:#?}");
    let submission = &submissions[0];
    assert_eq!(
        submission.path,
        format!("/v1beta/models/{}:predictLongRunning", ask.model)
    );
    let body = submission.body.as_ref().expect("a JSON body");
    assert_eq!(body["instances"][0]["prompt"], PROMPT);
    assert_eq!(body["parameters"]["durationSeconds"], ask.duration_seconds);
    assert_eq!(body["parameters"]["aspectRatio"], ask.aspect_ratio);
    assert_eq!(body["parameters"]["resolution"], ask.resolution);
    assert!(fake.seen(Route::Poll).len() >= 2, "polled until done");
    assert_eq!(fake.seen(Route::Download).len(), 1);
    let requests = fake.state().requests.clone();
    for request in &requests {
        assert_eq!(
            request.header("x-goog-api-key"),
            Some(api_key.as_str()),
            "{} {}",
            request.method,
            request.path
        );
    }
    session.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sora_video_ends_as_a_playable_download() {
    let ask = Ask {
        provider: "sora",
        model: "sora-2",
        duration_seconds: 4,
        aspect_ratio: "16:9",
        resolution: "720p",
    };
    let fake = sora_fake::FakeSora::serving(Some(ask.render().await.into())).await;
    let session = Session::start(&[
        ("FRAMEGATE_SORA_API_KEY", sora_fake::KEY.to_owned()),
        ("FRAMEGATE_SORA_BASE_URL", fake.base_url.clone()),
    ])
    .await;

    // The fake's default script: queued, in progress at 35 % and 80 %, completed, with
    // `openai-poll-after-ms` pacing the polls so each state is visible for over a second.
    let video = session.generate(&ask, |_| {}).await;

    let requests = fake.requests();
    for request in &requests {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {}", sora_fake::KEY).as_str()),
            "{} {}",
            request.method,
            request.path
        );
        assert_eq!(request.status, 200, "{request:#?}");
    }
    let creations: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/videos")
        .collect();
    assert_eq!(creations.len(), 1, "{requests:#?}");
    let creation = creations[0];
    assert_eq!(creation.text("model").as_deref(), Some(ask.model));
    assert_eq!(creation.text("prompt").as_deref(), Some(PROMPT));
    assert_eq!(creation.text("seconds").as_deref(), Some("4"));
    assert_eq!(creation.text("size").as_deref(), Some("1280x720"));
    assert!(creation.part("input_reference").is_none());
    let job = creation.answer.as_ref().expect("answer")["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let downloads: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/v1/videos/{job}/content"))
        .collect();
    assert_eq!(downloads.len(), 1, "{requests:#?}");
    assert_eq!(video["progress"], 100);
    session.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kling_video_ends_as_a_playable_download() {
    let ask = Ask {
        provider: "kling",
        model: "kling-v2-6",
        duration_seconds: 5,
        aspect_ratio: "16:9",
        resolution: "720p",
    };
    let fake = kling_fake::Fake::start().await;
    let result = ask.render().await;
    let base = fake.with(|state| state.base.clone());
    let session = Session::start(&[
        (
            "FRAMEGATE_KLING_ACCESS_KEY",
            kling_fake::ACCESS_KEY.to_owned(),
        ),
        (
            "FRAMEGATE_KLING_SECRET_KEY",
            kling_fake::SECRET_KEY.to_owned(),
        ),
        ("FRAMEGATE_KLING_BASE_URL", base),
    ])
    .await;

    // Kling keeps a task `submitted` until it says otherwise: it starts processing once the
    // client saw the submission (2.5 minutes in, about half way by the adapter's estimate)
    // and succeeds once the client saw it running.
    let task_of = |id: &str| {
        fake.with(|state| {
            state
                .tasks
                .iter()
                .find(|task| task.external_task_id == id)
                .map(|task| (task.task_id.clone(), task.status.clone()))
        })
    };
    let mut progress_seen = Vec::new();
    let video = session
        .generate(&ask, |event| {
            let id = event["id"].as_str().expect("video id");
            let Some((task, status)) = task_of(id) else {
                return;
            };
            match (event["status"].as_str(), status.as_str()) {
                (Some("submitted"), "submitted") => {
                    fake.set_status(&task, "processing", "", Duration::from_secs(150));
                }
                (Some("running"), "processing") => {
                    progress_seen.push(event["progress"].as_i64().expect("progress"));
                    fake.succeed(&task, "result.mp4", Some(&result));
                }
                _ => {}
            }
        })
        .await;

    assert_eq!(
        progress_seen,
        [52],
        "the adapter's estimate for a task half way"
    );
    fake.assert_no_problems();
    let seen = fake.seen();
    assert!(
        seen.iter()
            .all(|request| request.path.starts_with("/files/") || request.token.is_some()),
        "every API call carried a token: {seen:#?}"
    );
    let creations: Vec<_> = seen.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(creations.len(), 1, "{seen:#?}");
    assert_eq!(creations[0].path, "/v1/videos/text2video");
    let body = creations[0].body.as_ref().expect("a JSON body");
    assert_eq!(body["model_name"], ask.model);
    assert_eq!(body["prompt"], PROMPT);
    assert_eq!(body["duration"], "5");
    assert_eq!(body["aspect_ratio"], ask.aspect_ratio);
    assert_eq!(body["mode"], "std");
    assert_eq!(body["external_task_id"], video["id"]);
    let downloads = seen.iter().filter(|r| r.path == "/files/result.mp4");
    assert_eq!(downloads.count(), 1, "{seen:#?}");
    session.interrupt();
}

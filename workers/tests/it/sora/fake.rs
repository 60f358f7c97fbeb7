//! A local Videos API that follows docs/providers.md and the official spec. It records every
//! request exactly as received (for the spec check), refuses what the real API would refuse
//! (wrong key, unknown or mistyped fields, a start image of the wrong size) and plays each
//! video through a script of states; `respond_next` makes it answer an error once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use framegate_workers::providers::sora::SoraConfig;
use serde_json::{json, Value};

pub const KEY: &str = "sk-test-sora";
pub const EXPIRED_KEY: &str = "sk-test-expired";
/// The path of the spec's server URL, `https://api.openai.com/v1`.
const BASE_PATH: &str = "/v1";
pub const POLL_AFTER_MS: u64 = 1500;
const SIZES: [(&str, u32, u32); 4] = [
    ("720x1280", 720, 1280),
    ("1280x720", 1280, 720),
    ("1024x1792", 1024, 1792),
    ("1792x1024", 1792, 1024),
];

/// A request as it arrived, and the fake's answer.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The full path, base path included.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Sent,
    pub status: u16,
    pub answer: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum Sent {
    Empty,
    Json(Value),
    Multipart(Vec<FormPart>),
    Other(Bytes),
}

#[derive(Debug, Clone)]
pub struct FormPart {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl Recorded {
    /// The multipart part called `name`.
    pub fn part(&self, name: &str) -> Option<&FormPart> {
        match &self.body {
            Sent::Multipart(parts) => parts.iter().find(|p| p.name == name),
            _ => None,
        }
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.part(name)
            .filter(|p| p.file_name.is_none())
            .map(|p| String::from_utf8_lossy(&p.bytes).into_owned())
    }
}

/// One state a video passes through, once per `GET /videos/{id}`.
#[derive(Debug, Clone)]
pub enum Stage {
    Queued,
    Running(u8),
    Completed,
    Failed {
        code: &'static str,
        message: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct Video {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    pub prompt: String,
    pub size: String,
    pub seconds: String,
    pub stage: Stage,
    pub script: VecDeque<Stage>,
    pub expired: bool,
}

impl Video {
    /// A video already on the account, finished, created at `created_at`.
    pub fn existing(id: &str, created_at: i64, prompt: &str) -> Video {
        Video {
            id: id.to_owned(),
            created_at,
            model: "sora-2".into(),
            prompt: prompt.into(),
            size: "1280x720".into(),
            seconds: "8".into(),
            stage: Stage::Completed,
            script: VecDeque::new(),
            expired: false,
        }
    }
}

/// An answer given once, instead of the normal one, to the next request.
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
    pub delay: Duration,
}

impl Canned {
    pub fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Canned {
        Canned {
            status,
            headers: Vec::new(),
            body: error_body(kind, code, None, message),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Canned {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Canned {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Account {
    requests: Vec<Recorded>,
    videos: Vec<Video>,
    canned: VecDeque<Canned>,
    next_script: Option<Vec<Stage>>,
    /// What `GET /videos/{id}/content` serves instead of [`video_bytes`].
    video: Option<Bytes>,
    minted: u32,
}

type Shared = Arc<Mutex<Account>>;

pub struct FakeSora {
    pub base_url: String,
    account: Shared,
}

impl FakeSora {
    pub async fn start() -> FakeSora {
        FakeSora::serving(None).await
    }

    /// A fake whose videos' content is `video` (e.g. a real MP4) instead of [`video_bytes`].
    pub async fn serving(video: Option<Bytes>) -> FakeSora {
        let account = Shared::new(Mutex::new(Account {
            video,
            ..Account::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(account.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake");
        let address = listener.local_addr().expect("fake address");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        FakeSora {
            base_url: format!("http://{address}{BASE_PATH}"),
            account,
        }
    }

    pub fn config(&self) -> SoraConfig {
        self.config_with_key(KEY)
    }

    pub fn config_with_key(&self, key: &str) -> SoraConfig {
        SoraConfig::new(&self.base_url, key).expect("fake config")
    }

    fn account(&self) -> MutexGuard<'_, Account> {
        self.account.lock().expect("fake state")
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.account().requests.clone()
    }

    pub fn videos(&self) -> Vec<Video> {
        self.account().videos.clone()
    }

    pub fn respond_next(&self, canned: Canned) {
        self.account().canned.push_back(canned);
    }

    /// The states the next created video passes through.
    pub fn script_next_video(&self, stages: Vec<Stage>) {
        self.account().next_script = Some(stages);
    }

    pub fn add_video(&self, video: Video) {
        self.account().videos.push(video);
    }

    pub fn expire(&self, id: &str) {
        let mut account = self.account();
        if let Some(video) = account.videos.iter_mut().find(|v| v.id == id) {
            video.expired = true;
        }
    }
}

async fn handle(State(account): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 64 << 20).await.unwrap_or_default();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(header::CONTENT_TYPE);
    let sent = read_body(content_type.as_deref(), bytes).await;
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let authorization = header(header::AUTHORIZATION);
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        authorization,
        content_type,
        body: sent,
        status: 0,
        answer: None,
    };
    let canned = account.lock().expect("fake state").canned.pop_front();
    let answer = match canned {
        Some(canned) => {
            tokio::time::sleep(canned.delay).await;
            let mut headers = HeaderMap::new();
            for (name, value) in canned.headers {
                headers.insert(name, value.parse().expect("header value"));
            }
            Answer::new(canned.status, canned.body).headers(headers)
        }
        None => answer(&account, &parts.method, &parts.uri, &recorded),
    };
    recorded.status = answer.status.as_u16();
    recorded.answer = answer.json.clone();
    account.lock().expect("fake state").requests.push(recorded);
    answer.into_response()
}

async fn read_body(content_type: Option<&str>, bytes: Bytes) -> Sent {
    match content_type {
        _ if bytes.is_empty() => Sent::Empty,
        Some(t) if t.starts_with("application/json") => serde_json::from_slice(&bytes)
            .map(Sent::Json)
            .unwrap_or(Sent::Other(bytes)),
        Some(t) if t.starts_with("multipart/form-data") => {
            let request = axum::http::Request::builder()
                .header(header::CONTENT_TYPE, t)
                .body(Body::from(bytes.clone()))
                .expect("request");
            let Ok(mut multipart) = Multipart::from_request(request, &()).await else {
                return Sent::Other(bytes);
            };
            let mut parts = Vec::new();
            while let Ok(Some(field)) = multipart.next_field().await {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    return Sent::Other(Bytes::new());
                };
                parts.push(FormPart {
                    name,
                    file_name,
                    content_type,
                    bytes,
                });
            }
            Sent::Multipart(parts)
        }
        _ => Sent::Other(bytes),
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Option<Value>,
    raw: Option<(&'static str, Bytes)>,
}

impl Answer {
    fn new(status: u16, json: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: HeaderMap::new(),
            json: Some(json),
            raw: None,
        }
    }

    fn ok(json: Value) -> Answer {
        Answer::new(200, json)
    }

    fn error(
        status: u16,
        kind: &str,
        code: Option<&str>,
        param: Option<&str>,
        message: &str,
    ) -> Answer {
        Answer::new(status, error_body(kind, code, param, message))
    }

    fn invalid(param: &str, message: &str) -> Answer {
        Answer::error(400, "invalid_request_error", None, Some(param), message)
    }

    fn not_found(id: &str) -> Answer {
        Answer::error(
            404,
            "invalid_request_error",
            None,
            None,
            &format!("Video with id '{id}' not found."),
        )
    }

    fn bytes(content_type: &'static str, bytes: Bytes) -> Answer {
        Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            json: None,
            raw: Some((content_type, bytes)),
        }
    }

    fn headers(mut self, headers: HeaderMap) -> Answer {
        self.headers.extend(headers);
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = match (self.raw, self.json) {
            (Some((content_type, bytes)), _) => {
                ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
            }
            (None, Some(json)) => axum::Json(json).into_response(),
            (None, None) => ().into_response(),
        };
        *response.status_mut() = self.status;
        response.headers_mut().extend(self.headers);
        response
    }
}

fn error_body(kind: &str, code: Option<&str>, param: Option<&str>, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn answer(account: &Shared, method: &Method, uri: &Uri, request: &Recorded) -> Answer {
    match request
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        Some(KEY) => {}
        Some(EXPIRED_KEY) => {
            return Answer::error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
                "The API key provided has expired.",
            )
        }
        _ => {
            return Answer::error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                None,
                "Incorrect API key provided.",
            )
        }
    }
    let Some(path) = uri.path().strip_prefix(BASE_PATH) else {
        return Answer::error(404, "invalid_request_error", None, None, "Unknown path.");
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut account = account.lock().expect("fake state");
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["videos"]) => create(&mut account, request),
        ("GET", ["videos"]) => list(&account, request),
        ("GET", ["videos", id]) => retrieve(&mut account, id),
        ("DELETE", ["videos", id]) => delete(&mut account, id),
        ("GET", ["videos", id, "content"]) => content(&account, id, request),
        _ => Answer::error(
            404,
            "invalid_request_error",
            None,
            None,
            "Unknown endpoint.",
        ),
    }
}

fn create(account: &mut Account, request: &Recorded) -> Answer {
    let Sent::Multipart(parts) = &request.body else {
        return Answer::invalid("body", "expected multipart/form-data");
    };
    for (i, part) in parts.iter().enumerate() {
        if !["prompt", "model", "seconds", "size", "input_reference"].contains(&part.name.as_str())
        {
            return Answer::invalid(&part.name, "Unknown parameter.");
        }
        if parts[..i].iter().any(|p| p.name == part.name) {
            return Answer::invalid(&part.name, "Duplicate parameter.");
        }
        if part.name != "input_reference" && part.file_name.is_some() {
            return Answer::invalid(&part.name, "Expected a string, got a file.");
        }
    }
    let prompt = request.text("prompt").unwrap_or_default();
    if prompt.is_empty() || prompt.chars().count() > 32_000 {
        return Answer::invalid("prompt", "prompt must have 1 to 32000 characters");
    }
    let model = request.text("model").unwrap_or_else(|| "sora-2".into());
    let seconds = request.text("seconds").unwrap_or_else(|| "4".into());
    if !["4", "8", "12"].contains(&seconds.as_str()) {
        return Answer::invalid("seconds", "seconds must be one of '4', '8', '12'");
    }
    let size = request.text("size").unwrap_or_else(|| "720x1280".into());
    let Some(&(_, width, height)) = SIZES.iter().find(|s| s.0 == size) else {
        return Answer::invalid("size", "unsupported size");
    };
    if let Some(image) = request.part("input_reference") {
        if let Err(message) = check_reference(image, width, height) {
            return Answer::invalid("input_reference", &message);
        }
    }
    account.minted += 1;
    let video = Video {
        id: format!(
            "video_{:032x}",
            u128::from(account.minted) * 0x9e37_79b9_7f4a_7c15
        ),
        created_at: chrono::Utc::now().timestamp(),
        model,
        prompt,
        size,
        seconds,
        stage: Stage::Queued,
        script: account
            .next_script
            .take()
            .unwrap_or_else(|| {
                vec![
                    Stage::Queued,
                    Stage::Running(35),
                    Stage::Running(80),
                    Stage::Completed,
                ]
            })
            .into(),
        expired: false,
    };
    let answer = Answer::ok(video_json(&video));
    account.videos.push(video);
    answer
}

/// What the API demands of an uploaded reference: a named JPEG/PNG/WebP file of `size`.
fn check_reference(part: &FormPart, width: u32, height: u32) -> Result<(), String> {
    let file_name = part
        .file_name
        .as_deref()
        .ok_or("input_reference must be a file")?;
    let format = match part.content_type.as_deref() {
        Some("image/jpeg") if file_name.ends_with(".jpg") || file_name.ends_with(".jpeg") => {
            image::ImageFormat::Jpeg
        }
        Some("image/png") if file_name.ends_with(".png") => image::ImageFormat::Png,
        other => return Err(format!("unsupported file {file_name} of type {other:?}")),
    };
    let image = image::load_from_memory_with_format(&part.bytes, format)
        .map_err(|e| format!("not a readable image: {e}"))?;
    if (image.width(), image.height()) != (width, height) {
        return Err(format!(
            "Inpaint image must match the requested width and height ({}x{} given)",
            image.width(),
            image.height()
        ));
    }
    Ok(())
}

fn list(account: &Account, request: &Recorded) -> Answer {
    let mut limit = 20;
    let mut descending = true;
    let mut after = None;
    for (name, value) in &request.query {
        match name.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if n <= 100 => limit = n,
                _ => return Answer::invalid("limit", "limit must be an integer from 0 to 100"),
            },
            "order" if value == "asc" || value == "desc" => descending = value == "desc",
            "after" => after = Some(value.clone()),
            other => return Answer::invalid(other, "Unknown or invalid parameter."),
        }
    }
    // Newest first; videos of one second in the order they were added.
    let mut videos: Vec<(usize, &Video)> = account.videos.iter().enumerate().collect();
    videos.sort_by_key(|(i, v)| (v.created_at, *i));
    if descending {
        videos.reverse();
    }
    let start = match after {
        Some(after) => match videos.iter().position(|(_, v)| v.id == after) {
            Some(position) => position + 1,
            None => return Answer::not_found(&after),
        },
        None => 0,
    };
    let page: Vec<&Video> = videos
        .iter()
        .skip(start)
        .take(limit)
        .map(|(_, v)| *v)
        .collect();
    Answer::ok(json!({
        "object": "list",
        "data": page.iter().map(|v| video_json(v)).collect::<Vec<_>>(),
        "first_id": page.first().map(|v| v.id.clone()),
        "last_id": page.last().map(|v| v.id.clone()),
        "has_more": start + page.len() < videos.len(),
    }))
}

fn retrieve(account: &mut Account, id: &str) -> Answer {
    let Some(video) = account.videos.iter_mut().find(|v| v.id == id) else {
        return Answer::not_found(id);
    };
    if let Some(stage) = video.script.pop_front() {
        video.stage = stage;
    }
    let mut headers = HeaderMap::new();
    if matches!(video.stage, Stage::Queued | Stage::Running(_)) {
        headers.insert("openai-poll-after-ms", POLL_AFTER_MS.into());
    }
    Answer::ok(video_json(video)).headers(headers)
}

fn delete(account: &mut Account, id: &str) -> Answer {
    let Some(position) = account.videos.iter().position(|v| v.id == id) else {
        return Answer::not_found(id);
    };
    account.videos.remove(position);
    Answer::ok(json!({"id": id, "object": "video.deleted", "deleted": true}))
}

fn content(account: &Account, id: &str, request: &Recorded) -> Answer {
    let Some(video) = account.videos.iter().find(|v| v.id == id) else {
        return Answer::not_found(id);
    };
    if video.expired {
        return Answer::error(
            410,
            "invalid_request_error",
            Some("video_expired"),
            None,
            "The video's assets have expired.",
        );
    }
    if !matches!(video.stage, Stage::Completed) {
        return Answer::invalid("video_id", "Video is not ready yet.");
    }
    let variant = request
        .query
        .iter()
        .find(|(name, _)| name == "variant")
        .map_or("video", |(_, value)| value.as_str());
    match variant {
        "video" => Answer::bytes(
            "video/mp4",
            account.video.clone().unwrap_or_else(|| video_bytes(id)),
        ),
        "thumbnail" => Answer::bytes("image/webp", thumbnail_bytes(id)),
        "spritesheet" => Answer::bytes("image/jpeg", Bytes::from_static(b"\xff\xd8\xff")),
        _ => Answer::invalid("variant", "variant must be video, thumbnail or spritesheet"),
    }
}

/// The MP4 the fake serves for `id`: big enough to arrive in several chunks.
pub fn video_bytes(id: &str) -> Bytes {
    let mut bytes = b"\x00\x00\x00\x18ftypmp42".to_vec();
    for i in 0..200_000u32 {
        bytes.extend_from_slice(&i.to_le_bytes());
    }
    bytes.extend_from_slice(id.as_bytes());
    Bytes::from(bytes)
}

pub fn thumbnail_bytes(id: &str) -> Bytes {
    Bytes::from(format!("RIFF\0\0\0\0WEBPVP8 {id}"))
}

fn video_json(video: &Video) -> Value {
    let (status, progress, error) = match &video.stage {
        Stage::Queued => ("queued", 0, Value::Null),
        Stage::Running(p) => ("in_progress", *p, Value::Null),
        Stage::Completed => ("completed", 100, Value::Null),
        Stage::Failed { code, message } => ("failed", 0, json!({"code": code, "message": message})),
    };
    let finished = matches!(video.stage, Stage::Completed | Stage::Failed { .. });
    json!({
        "id": video.id,
        "object": "video",
        "model": video.model,
        "status": status,
        "progress": progress,
        "created_at": video.created_at,
        "completed_at": finished.then_some(video.created_at + 60),
        "expires_at": finished.then_some(video.created_at + 3660),
        "prompt": video.prompt,
        "size": video.size,
        "seconds": video.seconds,
        "remixed_from_video_id": null,
        "error": error,
    })
}

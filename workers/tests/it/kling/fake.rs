//! A fake of Kling's API (docs/providers.md) that checks what it receives and records it.
//!
//! Every call's JWT is verified (HS256 with the secret, `typ` JWT, `iss` the access key, `nbf`
//! ≤ now ≤ `exp`, `exp` thirty minutes away); creation bodies must carry exactly the documented
//! fields with their types (`duration` a string, `image` raw standard base64). A violation is
//! answered 401/400 and recorded in `problems`, which every test asserts empty.
//!
//! Assumption encoded here (Kling does not document it): querying an unknown task id or
//! external task id answers HTTP 404 with code 1203, "the requested resource does not exist".

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use framegate_workers::providers::kling::{Kling, KlingConfig};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

pub const ACCESS_KEY: &str = "ak-test-access";
pub const SECRET_KEY: &str = "sk-test-secret";

/// What the fake saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: &'static str,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<Value>,
    /// image2video: the decoded `image` field.
    pub image: Option<Vec<u8>>,
    /// The W3C trace context header, if one was sent.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FakeTask {
    pub task_id: String,
    pub endpoint: String,
    pub external_task_id: String,
    pub status: String,
    pub status_msg: String,
    pub created_at: i64,
    pub url: Option<String>,
}

/// An answer the next API call gets instead of the normal one (after auth and checks).
#[derive(Debug, Clone)]
pub enum Scripted {
    Refuse {
        status: u16,
        code: i64,
        message: &'static str,
        retry_after: Option<&'static str>,
    },
    /// Create the task, then answer 500/5000 as if the answer were lost.
    AcceptThenFail,
    /// A 404 without Kling's envelope, as a proxy would answer.
    BareNotFound,
}

#[derive(Default)]
pub struct FakeState {
    pub base: String,
    pub seen: Vec<Seen>,
    pub problems: Vec<String>,
    pub tasks: Vec<FakeTask>,
    pub scripted: VecDeque<Scripted>,
    pub expired_tokens: HashSet<String>,
    pub every_token_expired: bool,
    pub files: HashMap<String, Vec<u8>>,
    pub next_task: u64,
}

pub type Shared = Arc<Mutex<FakeState>>;

pub struct Fake {
    base: String,
    state: Shared,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Shared::default();
        let router = Router::new()
            .route("/v1/videos/{endpoint}", post(create))
            .route("/v1/videos/{endpoint}/{id}", get(query))
            .route("/files/{name}", get(file))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        state.lock().expect("state").base = base.clone();
        Fake { base, state }
    }

    pub fn kling(&self) -> Kling {
        let base = self.base.clone();
        let config = KlingConfig::from_lookup(|name| match name {
            "FRAMEGATE_KLING_ACCESS_KEY" => Some(ACCESS_KEY.to_owned()),
            "FRAMEGATE_KLING_SECRET_KEY" => Some(SECRET_KEY.to_owned()),
            "FRAMEGATE_KLING_BASE_URL" => Some(base.clone()),
            _ => None,
        });
        Kling::new(config.expect("valid").expect("configured"))
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().expect("state"))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    pub fn script(&self, answer: Scripted) {
        self.with(|s| s.scripted.push_back(answer));
    }

    pub fn task(&self, task_id: &str) -> FakeTask {
        self.with(|s| s.tasks.iter().find(|t| t.task_id == task_id).cloned())
            .expect("task exists")
    }

    /// Moves a task on; `age` backdates its creation.
    pub fn set_status(&self, task_id: &str, status: &str, message: &str, age: Duration) {
        self.with(|s| {
            let task = s
                .tasks
                .iter_mut()
                .find(|t| t.task_id == task_id)
                .expect("task exists");
            task.status = status.to_owned();
            task.status_msg = message.to_owned();
            task.created_at = now_ms() - i64::try_from(age.as_millis()).expect("age");
        });
    }

    /// Finishes a task with a result at `/files/{name}` (served only if `bytes` is given).
    pub fn succeed(&self, task_id: &str, name: &str, bytes: Option<&[u8]>) {
        self.set_status(task_id, "succeed", "", Duration::from_secs(200));
        self.with(|s| {
            let url = format!("{}/files/{name}", s.base);
            if let Some(bytes) = bytes {
                s.files.insert(name.to_owned(), bytes.to_vec());
            }
            let task = s.tasks.iter_mut().find(|t| t.task_id == task_id);
            task.expect("task exists").url = Some(url);
        });
    }

    pub fn expire_seen_tokens(&self) {
        self.with(|s| {
            let tokens: Vec<String> = s.seen.iter().filter_map(|r| r.token.clone()).collect();
            s.expired_tokens.extend(tokens);
        });
    }

    pub fn assert_no_problems(&self) {
        let problems = self.with(|s| s.problems.clone());
        assert!(problems.is_empty(), "the fake saw problems: {problems:#?}");
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_millis()).expect("millis")
}

fn envelope(
    status: u16,
    code: i64,
    message: &str,
    data: Value,
    retry_after: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    let body = json!({
        "code": code,
        "message": message,
        "request_id": Uuid::new_v4().to_string(),
        "data": data,
    });
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        let value = seconds.parse().expect("header value");
        response.headers_mut().insert("retry-after", value);
    }
    response
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    exp: u64,
}

/// Checks the bearer JWT; `Some` is the refusal to answer instead.
fn unauthorized(state: &mut FakeState, headers: &HeaderMap) -> Option<Response> {
    let token = state.seen.last().and_then(|seen| seen.token.clone());
    let Some(token) = token else {
        state
            .problems
            .push("a call without `Authorization: Bearer`".into());
        return Some(envelope(
            401,
            1001,
            "Authorization is empty",
            Value::Null,
            None,
        ));
    };
    if headers.get_all("authorization").iter().count() != 1 {
        state.problems.push("several Authorization headers".into());
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_issuer(&[ACCESS_KEY]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss"]);
    let header = jsonwebtoken::decode_header(&token);
    let decoded = jsonwebtoken::decode::<Claims>(
        &token,
        &DecodingKey::from_secret(SECRET_KEY.as_bytes()),
        &validation,
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let problem = match (header, decoded) {
        (Ok(header), _) if header.typ.as_deref() != Some("JWT") => {
            Some("header typ is not JWT".to_owned())
        }
        (_, Err(error)) => Some(format!("token refused: {error}")),
        (_, Ok(data)) if data.claims.iss != ACCESS_KEY => Some("wrong iss".to_owned()),
        (_, Ok(data)) if data.claims.exp.abs_diff(now + 1800) > 5 => Some(format!(
            "exp is {}s from now, not 1800",
            data.claims.exp.saturating_sub(now)
        )),
        _ => None,
    };
    if let Some(problem) = problem {
        state.problems.push(problem);
        return Some(envelope(
            401,
            1002,
            "Authorization is invalid",
            Value::Null,
            None,
        ));
    }
    if state.every_token_expired || state.expired_tokens.contains(&token) {
        return Some(envelope(
            401,
            1004,
            "Authorization has expired",
            Value::Null,
            None,
        ));
    }
    None
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

/// The documented creation fields, their types and values; `Err` is a problem.
fn check_create(endpoint: &str, body: &Map<String, Value>) -> Result<Option<Vec<u8>>, String> {
    let text = |name: &str| {
        body.get(name)
            .map(|v| v.as_str().ok_or(format!("{name} is not a string")))
    };
    let allowed: &[&str] = match endpoint {
        "text2video" => &[
            "model_name",
            "prompt",
            "negative_prompt",
            "mode",
            "aspect_ratio",
            "duration",
            "external_task_id",
        ],
        "image2video" => &[
            "model_name",
            "image",
            "prompt",
            "negative_prompt",
            "mode",
            "duration",
            "external_task_id",
        ],
        other => return Err(format!("unknown endpoint {other}")),
    };
    if let Some(extra) = body.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(format!("unexpected field {extra} on {endpoint}"));
    }
    let model = text("model_name").ok_or("model_name missing")??;
    if !model.starts_with("kling-") {
        return Err(format!("model_name {model}"));
    }
    let prompt = text("prompt").ok_or("prompt missing")??;
    if prompt.chars().count() > 2500 {
        return Err("prompt over 2500 characters".into());
    }
    text("negative_prompt").transpose()?;
    if !matches!(text("mode").ok_or("mode missing")??, "std" | "pro") {
        return Err("mode is not std|pro".into());
    }
    if !matches!(text("duration").ok_or("duration missing")??, "5" | "10") {
        return Err("duration is not \"5\"|\"10\"".into());
    }
    let external = text("external_task_id").ok_or("external_task_id missing")??;
    Uuid::parse_str(external).map_err(|_| "external_task_id is not our video id".to_owned())?;
    if endpoint == "text2video" {
        let ratio = text("aspect_ratio").ok_or("aspect_ratio missing")??;
        if !matches!(ratio, "16:9" | "9:16" | "1:1") {
            return Err(format!("aspect_ratio {ratio}"));
        }
        return Ok(None);
    }
    let image = text("image").ok_or("image missing")??;
    if image.starts_with("data:") {
        return Err("image has a data: prefix".into());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(image)
        .map_err(|e| format!("image is not standard base64: {e}"))?;
    Ok(Some(decoded))
}

async fn create(
    State(state): State<Shared>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().expect("state");
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
    state.seen.push(Seen {
        method: "POST",
        path: format!("/v1/videos/{endpoint}"),
        token: bearer(&headers),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: parsed.clone().map(Value::Object),
        image: None,
    });
    if let Some(refusal) = unauthorized(&mut state, &headers) {
        return refusal;
    }
    let json = headers.get("content-type").and_then(|v| v.to_str().ok());
    if !json.is_some_and(|v| v.starts_with("application/json")) {
        state
            .problems
            .push("creation without Content-Type: application/json".into());
    }
    let Some(body) = parsed else {
        state
            .problems
            .push("creation body is not a JSON object".into());
        return envelope(400, 1200, "invalid request", Value::Null, None);
    };
    let image = match check_create(&endpoint, &body) {
        Ok(image) => image,
        Err(problem) => {
            state.problems.push(problem);
            return envelope(400, 1201, "invalid parameters", Value::Null, None);
        }
    };
    if let Some(seen) = state.seen.last_mut() {
        seen.image = image;
    }
    let external = body["external_task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if state.tasks.iter().any(|t| t.external_task_id == external) {
        return envelope(
            400,
            1201,
            "external_task_id already exists",
            Value::Null,
            None,
        );
    }
    let scripted = state.scripted.pop_front();
    if let Some(Scripted::Refuse {
        status,
        code,
        message,
        retry_after,
    }) = scripted
    {
        return envelope(status, code, message, Value::Null, retry_after);
    }
    if let Some(Scripted::BareNotFound) = scripted {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    state.next_task += 1;
    let task = FakeTask {
        task_id: format!("{}", 867_283_741_759_000_000 + state.next_task),
        endpoint: endpoint.clone(),
        external_task_id: external,
        status: "submitted".into(),
        status_msg: String::new(),
        created_at: now_ms(),
        url: None,
    };
    state.tasks.push(task.clone());
    if let Some(Scripted::AcceptThenFail) = scripted {
        return envelope(500, 5000, "internal error", Value::Null, None);
    }
    let data = json!({
        "task_id": task.task_id,
        "task_status": task.status,
        "task_info": {"external_task_id": task.external_task_id},
        "created_at": task.created_at,
        "updated_at": task.created_at,
    });
    envelope(200, 0, "SUCCEED", data, None)
}

async fn query(
    State(state): State<Shared>,
    Path((endpoint, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut state = state.lock().expect("state");
    state.seen.push(Seen {
        method: "GET",
        path: format!("/v1/videos/{endpoint}/{id}"),
        token: bearer(&headers),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: None,
        image: None,
    });
    if let Some(refusal) = unauthorized(&mut state, &headers) {
        return refusal;
    }
    match state.scripted.pop_front() {
        Some(Scripted::Refuse {
            status,
            code,
            message,
            retry_after,
        }) => return envelope(status, code, message, Value::Null, retry_after),
        Some(Scripted::BareNotFound) => {
            return (StatusCode::NOT_FOUND, "not found").into_response()
        }
        Some(Scripted::AcceptThenFail) | None => {}
    }
    let task = state
        .tasks
        .iter()
        .find(|t| t.endpoint == endpoint && (t.task_id == id || t.external_task_id == id));
    let Some(task) = task else {
        return envelope(404, 1203, "task not found", Value::Null, None);
    };
    let videos: Vec<Value> = task
        .url
        .iter()
        .map(|url| json!({"id": "v1", "url": url, "duration": "5.1"}))
        .collect();
    let data = json!({
        "task_id": task.task_id,
        "task_status": task.status,
        "task_status_msg": task.status_msg,
        "task_info": {"external_task_id": task.external_task_id},
        "task_result": {"videos": videos},
        "created_at": task.created_at,
        "updated_at": now_ms(),
    });
    envelope(200, 0, "SUCCEED", data, None)
}

async fn file(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut state = state.lock().expect("state");
    state.seen.push(Seen {
        method: "GET",
        path: format!("/files/{name}"),
        token: bearer(&headers),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: None,
        image: None,
    });
    match state.files.get(&name) {
        Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "expired").into_response(),
    }
}

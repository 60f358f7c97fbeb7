//! A local fake of Google's Veo endpoints as docs/providers.md describes them: the Gemini API
//! (`/v1beta`, `x-goog-api-key`), Vertex AI (`/v1`, bearer token) and the Cloud Storage JSON
//! API (`/storage/v1`). It enforces the documented request format (auth header, field names
//! and JSON types, base64 rules, unknown fields refused as Google does), records every request
//! for assertions, and can be told to misbehave per route.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

pub const MODELS: [&str; 3] = [
    "veo-3.1-generate-001",
    "veo-3.1-fast-generate-001",
    "veo-3.1-lite-generate-001",
];
pub const PROJECT: &str = "fake-project";
pub const LOCATION: &str = "us-central1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Submit,
    Poll,
    Download,
    Redirect,
    Storage,
    Elsewhere,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub route: Route,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Value>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How every operation ends once its pending polls are used up.
#[derive(Debug, Clone)]
pub enum Finish {
    Video,
    Filtered(Vec<String>),
    Error { code: i64, message: String },
}

/// A canned answer served instead of the normal behaviour.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Reply {
    /// Google's error envelope.
    pub fn error(status: u16, rpc_status: &str, message: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: json!({"error": {"code": status, "message": message, "status": rpc_status}}),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

pub struct FakeState {
    pub base: String,
    pub requests: Vec<Seen>,
    pub api_key: String,
    pub valid_token: String,
    pub video: Vec<u8>,
    /// Polls answering `done: false` before the operation finishes.
    pub pending_polls: usize,
    pub finish: Finish,
    /// Gemini results point at `/v1beta/redirect/{id}`, which redirects to the file.
    pub redirect_results: bool,
    /// Where that redirect goes instead of the (relative) file location.
    pub redirect_target: Option<String>,
    pub result_gone: bool,
    /// Replaces the operation name a submission answers with.
    pub operation_name_override: Option<String>,
    pub delay: Option<Duration>,
    pub injected: HashMap<Route, VecDeque<Reply>>,
    /// Per operation name: polls answered, and the output bucket prefix asked for.
    operations: HashMap<String, (usize, Option<String>)>,
}

#[derive(Clone)]
pub struct Fake {
    pub base: String,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let video = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let state = Arc::new(Mutex::new(FakeState {
            base: base.clone(),
            requests: Vec::new(),
            api_key: "test-api-key".into(),
            valid_token: "token-1".into(),
            video,
            pending_polls: 0,
            finish: Finish::Video,
            redirect_results: false,
            redirect_target: None,
            result_gone: false,
            operation_name_override: None,
            delay: None,
            injected: HashMap::new(),
            operations: HashMap::new(),
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Fake { base, state }
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    pub fn inject(&self, route: Route, reply: Reply) {
        self.state()
            .injected
            .entry(route)
            .or_default()
            .push_back(reply);
    }

    pub fn seen(&self, route: Route) -> Vec<Seen> {
        self.state()
            .requests
            .iter()
            .filter(|s| s.route == route)
            .cloned()
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }
}

type Shared = Arc<Mutex<FakeState>>;

fn reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).expect("status");
    let mut response = (status, Json(reply.body)).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

fn route_of(method: &Method, path: &str) -> Option<Route> {
    let vertex_model =
        format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/");
    let route = if path.starts_with("/v1beta/models/") && path.ends_with(":predictLongRunning") {
        Route::Submit
    } else if path.starts_with("/v1beta/models/") && path.contains("/operations/") {
        Route::Poll
    } else if path.starts_with(&vertex_model) && path.ends_with(":predictLongRunning") {
        Route::Submit
    } else if path.starts_with(&vertex_model) && path.ends_with(":fetchPredictOperation") {
        Route::Poll
    } else if path.starts_with("/v1beta/files/") && path.ends_with(":download") {
        Route::Download
    } else if path.starts_with("/v1beta/redirect/") {
        Route::Redirect
    } else if path.starts_with("/storage/v1/b/") {
        Route::Storage
    } else if path.starts_with("/elsewhere/") {
        Route::Elsewhere
    } else {
        return None;
    };
    let expected = match route {
        Route::Submit => Method::POST,
        Route::Poll if path.starts_with("/v1/") => Method::POST,
        _ => Method::GET,
    };
    (*method == expected).then_some(route)
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let Some(route) = route_of(&method, &path) else {
        return reply(Reply::error(
            404,
            "NOT_FOUND",
            &format!("no route {method} {path}"),
        ));
    };
    let json_body = (!body.is_empty()).then(|| serde_json::from_slice::<Value>(&body));
    let delay = {
        let mut state = state.lock().expect("fake state");
        state.requests.push(Seen {
            route,
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: json_body.as_ref().and_then(|b| b.as_ref().ok().cloned()),
        });
        state.delay
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut state = state.lock().expect("fake state");
    if let Some(canned) = state.injected.get_mut(&route).and_then(VecDeque::pop_front) {
        return reply(canned);
    }
    if let Some(refusal) = check_auth(&state, &path, &headers) {
        return reply(refusal);
    }
    let body = match json_body {
        Some(Ok(body)) => Some(body),
        Some(Err(error)) => {
            return reply(Reply::error(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {error}"),
            ))
        }
        None => None,
    };
    let vertex = path.starts_with("/v1/");
    match route {
        Route::Submit => submit(&mut state, &path, vertex, body),
        Route::Poll => poll(&mut state, &path, vertex, body),
        Route::Download | Route::Storage | Route::Elsewhere => {
            if state.result_gone {
                return reply(Reply::error(404, "NOT_FOUND", "File not found."));
            }
            if route != Route::Elsewhere && uri.query() != Some("alt=media") {
                return reply(Reply::error(400, "INVALID_ARGUMENT", "expected alt=media"));
            }
            (StatusCode::OK, state.video.clone()).into_response()
        }
        Route::Redirect => {
            let id = path.trim_start_matches("/v1beta/redirect/");
            let target = state
                .redirect_target
                .clone()
                .unwrap_or_else(|| format!("../files/{id}:download?alt=media"));
            (StatusCode::FOUND, [("location", target)]).into_response()
        }
    }
}

/// Gemini routes want the key (403 otherwise, as documented); Vertex and storage the token
/// (401 UNAUTHENTICATED otherwise); `/elsewhere` is a foreign host that wants nothing.
fn check_auth(state: &FakeState, path: &str, headers: &HeaderMap) -> Option<Reply> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if path.starts_with("/v1beta/") {
        if header("x-goog-api-key") != Some(state.api_key.as_str())
            || header("authorization").is_some()
        {
            return Some(Reply::error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers.",
            ));
        }
    } else if path.starts_with("/v1/") || path.starts_with("/storage/") {
        let expected = format!("Bearer {}", state.valid_token);
        if header("authorization") != Some(expected.as_str()) || header("x-goog-api-key").is_some()
        {
            return Some(Reply::error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            ));
        }
    }
    None
}

fn submit(state: &mut FakeState, path: &str, vertex: bool, body: Option<Value>) -> Response {
    let model = path
        .rsplit_once("/models/")
        .map(|(_, rest)| rest.trim_end_matches(":predictLongRunning"))
        .unwrap_or_default()
        .to_owned();
    if !MODELS.contains(&model.as_str()) {
        return reply(Reply::error(404, "NOT_FOUND", &format!("models/{model} is not found for API version v1beta, or is not supported for predictLongRunning.")));
    }
    let body = body.unwrap_or(Value::Null);
    let problems = request_problems(&body, vertex);
    if !problems.is_empty() {
        return reply(Reply::error(400, "INVALID_ARGUMENT", &problems.join("; ")));
    }
    let number = state.operations.len() + 1;
    let name = if vertex {
        format!("projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{model}/operations/op-{number}")
    } else {
        format!("models/{model}/operations/op-{number}")
    };
    let storage = body["parameters"]["storageUri"].as_str().map(str::to_owned);
    state.operations.insert(name.clone(), (0, storage));
    let name = state.operation_name_override.clone().unwrap_or(name);
    Json(json!({ "name": name })).into_response()
}

fn poll(state: &mut FakeState, path: &str, vertex: bool, body: Option<Value>) -> Response {
    let name = if vertex {
        // POST …/models/{model}:fetchPredictOperation {"operationName": name}, nothing else.
        let Some(name) = body
            .as_ref()
            .and_then(Value::as_object)
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("operationName"))
            .and_then(Value::as_str)
        else {
            return reply(Reply::error(
                400,
                "INVALID_ARGUMENT",
                "expected {\"operationName\": string}",
            ));
        };
        let resource = path
            .trim_start_matches("/v1/")
            .trim_end_matches(":fetchPredictOperation");
        if !name.starts_with(&format!("{resource}/operations/")) {
            return reply(Reply::error(
                400,
                "INVALID_ARGUMENT",
                "operation of another model",
            ));
        }
        name.to_owned()
    } else {
        if body.is_some() {
            return reply(Reply::error(400, "INVALID_ARGUMENT", "GET with a body"));
        }
        path.trim_start_matches("/v1beta/").to_owned()
    };
    let pending = state.pending_polls;
    let Some((polls, storage)) = state.operations.get_mut(&name) else {
        return reply(Reply::error(404, "NOT_FOUND", "Operation not found."));
    };
    *polls += 1;
    if *polls <= pending {
        return Json(json!({"name": name, "done": false})).into_response();
    }
    let storage = storage.clone();
    let id = name.rsplit('/').next().unwrap_or_default().to_owned();
    let response = match state.finish.clone() {
        Finish::Error { code, message } => {
            return Json(
                json!({"name": name, "done": true, "error": {"code": code, "message": message}}),
            )
            .into_response()
        }
        Finish::Filtered(reasons) => {
            json!({"raiMediaFilteredCount": reasons.len(), "raiMediaFilteredReasons": reasons})
        }
        Finish::Video if vertex => match storage {
            Some(prefix) => json!({"raiMediaFilteredCount": 0, "videos": [
                {"gcsUri": format!("{prefix}{id} dir/sample_0.mp4"), "mimeType": "video/mp4"}
            ]}),
            None => json!({"raiMediaFilteredCount": 0, "videos": [{
                "bytesBase64Encoded": base64::engine::general_purpose::STANDARD.encode(&state.video),
                "mimeType": "video/mp4"
            }]}),
        },
        Finish::Video => {
            let uri = if state.redirect_results {
                format!("{}/v1beta/redirect/{id}", state.base)
            } else {
                format!("{}/v1beta/files/{id}:download?alt=media", state.base)
            };
            json!({"generatedSamples": [{"video": {"uri": uri}}]})
        }
    };
    let response = if vertex {
        let mut response = response;
        response["@type"] =
            json!("type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse");
        response
    } else {
        json!({
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
            "generateVideoResponse": response,
        })
    };
    Json(json!({"name": name, "done": true, "response": response})).into_response()
}

/// Everything the documented `predictLongRunning` body must satisfy; empty when it does.
pub fn request_problems(body: &Value, vertex: bool) -> Vec<String> {
    // Google refuses fields it does not know rather than ignoring them.
    fn unknown(object: &Value, allowed: &[&str], at: &str, problems: &mut Vec<String>) {
        for key in object.as_object().into_iter().flat_map(|o| o.keys()) {
            if !allowed.contains(&key.as_str()) {
                problems.push(format!(
                    "Invalid JSON payload received. Unknown name \"{key}\" at '{at}'"
                ));
            }
        }
    }
    let mut problems = Vec::new();
    unknown(body, &["instances", "parameters"], "", &mut problems);
    let instances = body["instances"].as_array().cloned().unwrap_or_default();
    if instances.len() != 1 {
        problems.push("instances: exactly one instance".into());
    }
    let instance = instances.first().cloned().unwrap_or(Value::Null);
    unknown(
        &instance,
        &["prompt", "image"],
        "instances[0]",
        &mut problems,
    );
    if instance["prompt"].as_str().is_none_or(str::is_empty) {
        problems.push("instances[0].prompt: a non-empty string".into());
    }
    if let Some(image) = instance.get("image") {
        unknown(
            image,
            &["bytesBase64Encoded", "mimeType"],
            "instances[0].image",
            &mut problems,
        );
        if !matches!(image["mimeType"].as_str(), Some("image/jpeg" | "image/png")) {
            problems.push("instances[0].image.mimeType: image/jpeg or image/png".into());
        }
        match image["bytesBase64Encoded"].as_str() {
            Some(data) if data.starts_with("data:") => problems
                .push("instances[0].image.bytesBase64Encoded: raw base64, no data: URL".into()),
            Some(data) => match base64::engine::general_purpose::STANDARD.decode(data) {
                Ok(bytes) if !bytes.is_empty() => {}
                _ => problems
                    .push("instances[0].image.bytesBase64Encoded: standard padded base64".into()),
            },
            None => problems.push("instances[0].image.bytesBase64Encoded: a string".into()),
        }
    }
    let parameters = &body["parameters"];
    let mut allowed = vec![
        "aspectRatio",
        "resolution",
        "durationSeconds",
        "negativePrompt",
        "personGeneration",
        "sampleCount",
        "seed",
    ];
    if vertex {
        allowed.push("storageUri");
    }
    unknown(parameters, &allowed, "parameters", &mut problems);
    if !matches!(parameters["aspectRatio"].as_str(), Some("16:9" | "9:16")) {
        problems.push("parameters.aspectRatio: \"16:9\" or \"9:16\"".into());
    }
    let resolution = parameters["resolution"].as_str();
    if !matches!(resolution, Some("720p" | "1080p" | "4k")) {
        problems.push("parameters.resolution: \"720p\", \"1080p\" or \"4k\"".into());
    }
    match parameters["durationSeconds"].as_u64() {
        Some(4 | 6) if resolution != Some("720p") => {
            problems.push("parameters.durationSeconds: 1080p and 4k need 8".into())
        }
        Some(4 | 6 | 8) => {}
        _ => problems.push("parameters.durationSeconds: the number 4, 6 or 8".into()),
    }
    if parameters["sampleCount"].as_u64() != Some(1) {
        problems.push("parameters.sampleCount: the number 1".into());
    }
    if let Some(negative) = parameters.get("negativePrompt") {
        if !negative.is_string() {
            problems.push("parameters.negativePrompt: a string".into());
        }
    }
    if let Some(seed) = parameters.get("seed") {
        if seed.as_u64().is_none_or(|s| s > u64::from(u32::MAX)) {
            problems.push("parameters.seed: a uint32 number".into());
        }
    }
    if let Some(uri) = parameters.get("storageUri") {
        if !uri.as_str().is_some_and(|u| u.starts_with("gs://")) {
            problems.push("parameters.storageUri: a gs:// URI".into());
        }
    }
    problems
}

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the receiver"
)]

//! A webhook receiver for tests: a real HTTP server on 127.0.0.1 that records every request
//! (path, headers, body, arrival) and answers as scripted per path: a queue of replies, then
//! 200. Shared with the API's tests (`#[path]`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What a path answers next.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// 302 to this location.
    Redirect(String),
    /// Never answers (until the test ends).
    Hang,
    /// 200, after this long.
    Slow(Duration),
    /// This status, after this long.
    SlowStatus(Duration, u16),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// What it was answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// A path answering this on every request, after its script.
    always: Mutex<HashMap<String, Reply>>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` answers `replies` to its next requests, then 200 (or its `always`).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .script
            .lock()
            .expect("script")
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    pub fn always(&self, path: &str, reply: Reply) {
        self.shared
            .always
            .lock()
            .expect("always")
            .insert(path.to_owned(), reply);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .expect("received")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got `count` requests; panics after `within`.
    pub async fn wait_for(&self, path: &str, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received(path);
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {count} requests after {within:?}: {:?}",
                received.len(),
                received.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let reply = shared
        .script
        .lock()
        .expect("script")
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .or_else(|| shared.always.lock().expect("always").get(&path).cloned())
        .unwrap_or(Reply::Status(200));
    let status = match &reply {
        Reply::Status(code) => *code,
        Reply::Redirect(_) => 302,
        Reply::Hang => 0,
        Reply::Slow(_) => 200,
        Reply::SlowStatus(_, code) => *code,
    };
    shared.received.lock().expect("received").push(Received {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        status,
    });
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::OK)
            .into_response(),
        Reply::Redirect(location) => {
            (StatusCode::FOUND, [("location", location)], "").into_response()
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::OK.into_response()
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Reply::SlowStatus(delay, code) => {
            tokio::time::sleep(delay).await;
            StatusCode::from_u16(code)
                .unwrap_or(StatusCode::OK)
                .into_response()
        }
    }
}

//! Result downloads against a hostile provider: a Sora-format gateway (the configured origin)
//! whose content answers redirect to the metadata service, to a name resolving to loopback,
//! in a loop, to another scheme, serve an endless body, a declared oversize body or an HTML
//! page, and a second server on another port standing for somebody else's host. Each case
//! asserts the final failure's code and class and what the servers saw, so it fails when its
//! guard is taken out (tried by disabling the address filter, the cap and the credential rule).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use framegate_workers::provider::{codes, ProviderFailure, VideoProvider};
use framegate_workers::providers::download::{DownloadConfig, Downloader, Expect, MAX_REDIRECTS};
use framegate_workers::providers::sora::{Sora, SoraConfig};
use reqwest::Url;

const KEY: &str = "sk-gateway-key";
const CAP: u64 = 64 * 1024;
const VIDEO: &[u8] = b"\x00\x00\x00\x18ftypmp42 a small enough video";

#[derive(Default)]
struct Seen {
    /// `(host:port, path, authorization)` of every request, in order.
    requests: Mutex<Vec<(String, String, Option<String>)>>,
    endless_bytes: AtomicU64,
    gateway: Mutex<String>,
    cdn: Mutex<String>,
}

struct Servers {
    gateway: String,
    cdn: String,
    seen: Arc<Seen>,
}

impl Servers {
    async fn start() -> Servers {
        let seen = Arc::new(Seen::default());
        let gateway = serve(seen.clone()).await;
        let cdn = serve(seen.clone()).await;
        *seen.gateway.lock().expect("seen") = gateway.clone();
        *seen.cdn.lock().expect("seen") = cdn.clone();
        Servers { gateway, cdn, seen }
    }

    fn sora(&self, allow_private: bool) -> Sora {
        let config = SoraConfig::new(&format!("{}/v1", self.gateway), KEY)
            .expect("config")
            .with_downloads(DownloadConfig {
                max_video_bytes: CAP,
                allow_private,
            });
        Sora::new(config)
    }

    fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.seen.requests.lock().expect("seen").clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|(_, path, _)| path)
            .collect()
    }
}

async fn serve(seen: Arc<Seen>) -> String {
    let app = axum::Router::new().fallback(handle).with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    base
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn handle(State(seen): State<Arc<Seen>>, uri: Uri, headers: HeaderMap) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = text(header::HOST).unwrap_or_default();
    let path = uri.path().to_owned();
    let authorization = text(header::AUTHORIZATION);
    seen.requests
        .lock()
        .expect("seen")
        .push((host.clone(), path.clone(), authorization));
    let port = host.rsplit(':').next().unwrap_or_default();
    let gateway = seen.gateway.lock().expect("seen").clone();
    let cdn = seen.cdn.lock().expect("seen").clone();
    let video = || ([(header::CONTENT_TYPE, "video/mp4")], VIDEO).into_response();
    match path.as_str() {
        "/v1/videos/metadata/content" => {
            redirect("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
        }
        "/v1/videos/mapped/content" => redirect("http://[::ffff:a9fe:a9fe]/latest/meta-data/"),
        // Same server, by a name that resolves to loopback: only the resolver can tell.
        "/v1/videos/rebound/content" => {
            redirect(&format!("http://localhost:{port}/v1/videos/ok/content"))
        }
        "/v1/videos/loop-a/content" => redirect("/v1/videos/loop-b/content?variant=video"),
        "/v1/videos/loop-b/content" => redirect("/v1/videos/loop-a/content?variant=video"),
        "/v1/videos/scheme/content" => redirect("file:///etc/passwd"),
        "/v1/videos/html/content" => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><body>Sign in to continue</body></html>",
        )
            .into_response(),
        "/v1/videos/oversized/content" => (
            [(header::CONTENT_TYPE, "video/mp4")],
            Bytes::from(vec![0u8; 4 * CAP as usize]),
        )
            .into_response(),
        "/v1/videos/endless/content" => {
            let chunk = Bytes::from(vec![0u8; 8192]);
            let stream = futures::stream::repeat_with(move || {
                seen.endless_bytes.fetch_add(8192, Ordering::Relaxed);
                Ok::<Bytes, std::convert::Infallible>(chunk.clone())
            });
            (
                [(header::CONTENT_TYPE, "video/mp4")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        "/v1/videos/moved" if host != cdn.trim_start_matches("http://") => {
            redirect(&format!("{cdn}/v1/videos/moved"))
        }
        "/v1/videos/away/content" => redirect(&format!("{cdn}/cdn/back")),
        "/cdn/back" => redirect(&format!("{gateway}/v1/videos/ok/content")),
        "/v1/videos/ok/content" | "/cdn/video.mp4" => video(),
        _ => (StatusCode::NOT_FOUND, "no such thing").into_response(),
    }
}

fn destination() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("video.mp4");
    (dir, path)
}

async fn fetch_failure(sora: &Sora, job: &str) -> (ProviderFailure, std::path::PathBuf) {
    let (_dir, path) = destination();
    let fetched = tokio::time::timeout(Duration::from_secs(30), sora.fetch(job, &path))
        .await
        .expect("the download ends on its own");
    let failure = fetched.expect_err("the download is refused");
    assert!(!path.exists(), "nothing is left of a refused download");
    (failure, path)
}

fn assert_final_invalid_output(failure: &ProviderFailure) {
    assert_eq!(failure.code, codes::INVALID_OUTPUT, "{failure}");
    assert!(!failure.retryable, "never worth retrying: {failure}");
    assert!(!failure.charged, "{failure}");
}

#[tokio::test]
async fn a_redirect_to_the_metadata_service_is_refused_without_connecting() {
    let servers = Servers::start().await;
    let sora = servers.sora(false);
    for job in ["metadata", "mapped"] {
        let (failure, _) = fetch_failure(&sora, job).await;
        assert_final_invalid_output(&failure);
        assert!(failure.message.contains("non-public address"), "{failure}");
    }
}

#[tokio::test]
async fn a_redirect_to_a_name_that_resolves_to_loopback_is_refused() {
    let servers = Servers::start().await;
    let (failure, _) = fetch_failure(&servers.sora(false), "rebound").await;
    assert_final_invalid_output(&failure);
    assert!(failure.message.contains("localhost"), "{failure}");
    assert_eq!(servers.paths(), ["/v1/videos/rebound/content"]);
}

#[tokio::test]
async fn private_addresses_are_reached_when_private_upstreams_are_allowed() {
    let servers = Servers::start().await;
    let (_dir, path) = destination();
    servers
        .sora(true)
        .fetch("rebound", &path)
        .await
        .expect("followed to localhost");
    assert_eq!(std::fs::read(&path).expect("video"), VIDEO);
    assert_eq!(
        servers.paths(),
        ["/v1/videos/rebound/content", "/v1/videos/ok/content"]
    );
}

#[tokio::test]
async fn a_redirect_loop_is_given_up_retryably_after_a_few_hops() {
    let servers = Servers::start().await;
    let (failure, _) = fetch_failure(&servers.sora(false), "loop-a").await;
    assert_eq!(failure.code, codes::UPSTREAM_UNAVAILABLE, "{failure}");
    assert!(failure.retryable, "{failure}");
    assert!(failure.message.contains("loop"), "{failure}");
    let hops = servers.paths().len();
    assert!((2..=MAX_REDIRECTS + 1).contains(&hops), "{hops} requests");
}

#[tokio::test]
async fn a_redirect_to_another_scheme_is_refused() {
    let servers = Servers::start().await;
    let (failure, _) = fetch_failure(&servers.sora(true), "scheme").await;
    assert_final_invalid_output(&failure);
    assert!(failure.message.contains("file"), "{failure}");
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_cap_and_nothing_is_kept() {
    let servers = Servers::start().await;
    let (failure, _) = fetch_failure(&servers.sora(false), "endless").await;
    assert_final_invalid_output(&failure);
    assert!(
        failure.message.contains("larger than 65536 bytes"),
        "{failure}"
    );
    // What the server pushed into socket buffers before the connection closed; far from
    // endless (an uncapped download would still be running).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = servers.seen.endless_bytes.load(Ordering::Relaxed);
    assert!(served < 64 << 20, "{served} bytes served");
}

#[tokio::test]
async fn a_declared_length_above_the_cap_is_refused() {
    let servers = Servers::start().await;
    let (failure, _) = fetch_failure(&servers.sora(false), "oversized").await;
    assert_final_invalid_output(&failure);
    assert!(failure.message.contains("larger than"), "{failure}");
}

#[tokio::test]
async fn a_result_that_is_not_a_video_is_refused() {
    let servers = Servers::start().await;
    let (failure, _) = fetch_failure(&servers.sora(false), "html").await;
    assert_final_invalid_output(&failure);
    assert!(failure.message.contains("text/html"), "{failure}");

    let (_dir, path) = destination();
    let thumbnail = servers.sora(false).fetch_thumbnail("ok", &path).await;
    let failure = thumbnail.expect_err("a video is no thumbnail");
    assert_final_invalid_output(&failure);
}

#[tokio::test]
async fn credentials_go_to_the_configured_origin_only_and_never_after_leaving_it() {
    let servers = Servers::start().await;
    let (_dir, path) = destination();
    servers
        .sora(true)
        .fetch("away", &path)
        .await
        .expect("followed away and back");
    assert_eq!(std::fs::read(&path).expect("video"), VIDEO);
    let gateway = format!("{}/", servers.gateway);
    let cdn = format!("{}/", servers.cdn);
    let bearer = format!("Bearer {KEY}");
    let expected = [
        (
            gateway.as_str(),
            "/v1/videos/away/content",
            Some(bearer.as_str()),
        ),
        (cdn.as_str(), "/cdn/back", None),
        (gateway.as_str(), "/v1/videos/ok/content", None),
    ];
    let seen = servers.requests();
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for ((host, path, authorization), (base, want_path, want_auth)) in seen.iter().zip(expected) {
        assert_eq!(format!("http://{host}/"), base, "{path}");
        assert_eq!(path, want_path);
        assert_eq!(authorization.as_deref(), want_auth, "{path}");
    }
}

#[tokio::test]
async fn a_result_url_on_a_private_address_is_refused_before_any_request() {
    let configured = Url::parse("https://api.example.com/v1").expect("url");
    let downloader = Downloader::new(
        "test",
        DownloadConfig::default(),
        Duration::from_secs(5),
        [&configured],
    );
    let (_dir, path) = destination();
    for url in [
        "http://10.0.0.7/result.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/result.mp4",
        "http://2130706433/result.mp4",
    ] {
        let url = Url::parse(url).expect(url);
        let started = std::time::Instant::now();
        let failure = downloader
            .to_file(url.clone(), &HeaderMap::new(), Expect::Video, &path)
            .await
            .expect_err("refused");
        assert_final_invalid_output(&failure);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{url}: no connection attempted"
        );
    }
}

#[tokio::test]
async fn api_calls_follow_no_redirect() {
    let servers = Servers::start().await;
    let failure = servers
        .sora(true)
        .poll("moved")
        .await
        .expect_err("a redirect is no answer");
    assert!(failure.message.contains("302"), "{failure}");
    assert_eq!(servers.paths(), ["/v1/videos/moved"]);
}

//! The console's files, embedded in the binary at build time (`api/console/`), and how they
//! are served: the right content type, a strong ETag (answered with 304 when the browser
//! has the file), caching that never serves a stale page, and the security headers.
//!
//! Nothing is built: the files are the plain HTML, CSS and JavaScript modules the browser
//! runs, so what is in the repository is what is served.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// One embedded file.
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    /// `"sha256:<first 32 hex digits>"`, quoted as an ETag is.
    etag: String,
    /// Whether the file's name changes with its content (vendored, versioned files): then the
    /// browser may keep it for a year without asking.
    immutable: bool,
}

macro_rules! embed {
    ($name:literal, $type:expr) => {
        (
            $name,
            include_bytes!(concat!("../../console/", $name)).as_slice(),
            $type,
        )
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file, by its path under `/console/` (the docs page's files included).
const FILES: &[(&str, &[u8], &str)] = &[
    embed!("index.html", HTML),
    embed!("docs.html", HTML),
    embed!("style.css", CSS),
    embed!("js/main.js", JS),
    embed!("js/api.js", JS),
    embed!("js/session.js", JS),
    embed!("js/ui.js", JS),
    embed!("js/events.js", JS),
    embed!("js/pages/sign-in.js", JS),
    embed!("js/pages/sign-up.js", JS),
    embed!("js/pages/verify-email.js", JS),
    embed!("js/pages/forgot-password.js", JS),
    embed!("js/pages/reset-password.js", JS),
    embed!("js/pages/credits.js", JS),
    embed!("js/pages/create.js", JS),
    embed!("js/pages/videos.js", JS),
    embed!("js/pages/keys.js", JS),
    embed!("js/pages/admin.js", JS),
    embed!("vendor/rapidoc-9.3.8-min.js", JS),
    embed!("vendor/rapidoc-LICENSE.txt", TEXT),
    embed!("vendor/rapidoc-9.3.8-min.js.LICENSE.txt", TEXT),
];

static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, bytes, content_type)| {
            let digest = hex::encode(Sha256::digest(bytes));
            let asset = Asset {
                bytes,
                content_type,
                etag: format!("\"sha256:{}\"", &digest[..32]),
                immutable: name.starts_with("vendor/"),
            };
            (*name, asset)
        })
        .collect()
});

/// The embedded file at `path` (relative to `api/console/`).
pub fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.get(path)
}

/// `asset` as the answer to a GET with `request` headers, under `csp`: 304 when the browser
/// already holds this version, the bytes otherwise.
pub fn serve(asset: &'static Asset, request: &HeaderMap, csp: &str) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == asset.etag || tag == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.bytes.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            // Kept, but checked with the ETag every time: a new release is seen at once.
            "no-cache"
        }),
    );
    security_headers(headers, csp);
    response
}

/// The headers every console and docs response carries.
pub fn security_headers(headers: &mut HeaderMap, csp: &str) {
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The verification and reset pages carry their token in the URL: no other site sees it.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_file_is_embedded_with_a_distinct_etag() {
        assert_eq!(ASSETS.len(), FILES.len(), "a file is listed twice");
        let mut tags: Vec<&str> = ASSETS.values().map(|a| a.etag.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), FILES.len(), "two files share an ETag");
        assert!(ASSETS.values().all(|a| !a.bytes.is_empty()));
    }

    #[test]
    fn every_file_in_the_console_directory_is_served() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("console dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, root, found);
                } else {
                    let relative = path.strip_prefix(root).expect("under root");
                    found.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut found = Vec::new();
        walk(&root, &root, &mut found);
        let missing: Vec<&String> = found.iter().filter(|f| get(f).is_none()).collect();
        assert!(missing.is_empty(), "not in FILES: {missing:?}");
    }

    #[test]
    fn no_page_loads_a_script_or_style_from_another_origin() {
        for (name, bytes, content_type) in FILES {
            if *content_type != HTML {
                continue;
            }
            let text = std::str::from_utf8(bytes).expect("utf-8");
            assert!(
                !text.contains("https://"),
                "{name} refers to another origin"
            );
            assert!(!text.contains("http://"), "{name} refers to another origin");
            // The CSP forbids inline scripts: every <script> has a src.
            for tag in text.split("<script").skip(1) {
                let head = tag.split('>').next().unwrap_or_default();
                assert!(head.contains("src="), "{name}: an inline <script>");
            }
        }
    }

    #[test]
    fn a_matching_if_none_match_gets_304_and_another_gets_the_file() {
        let asset = get("js/main.js").expect("main.js");
        let mut request = HeaderMap::new();
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&asset.etag).expect("etag"),
        );
        let response = serve(asset, &request, "default-src 'self'");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], asset.etag.as_str());

        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"sha256:0\""),
        );
        let response = serve(asset, &request, "default-src 'self'");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    }
}

//! The web console at `/console` and the API reference at `/docs`, served from files
//! embedded in the binary (`assets`), under a strict Content-Security-Policy: scripts and
//! styles from this origin only, no inline script, nothing framed.
//!
//! The console is one HTML page and a JavaScript module per page; every `/console/<page>`
//! path answers with that HTML, and the module named by the path draws the page. It talks
//! only to the `/v1` API, as any client does. The links in account emails open console
//! pages (`/console/verify-email?token=…`, `/console/reset-password?token=…`); the paths
//! the first emails used redirect there.
//!
//! These routes sit outside the rate limits: they serve fixed bytes from memory, and a page
//! load fetches a dozen files that would otherwise eat an anonymous visitor's budget.

mod assets;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use framegate_commands::blobs::{BlobBackend, BlobConfig};

use crate::error::ApiError;

/// The console's pages: each is a path under `/console/` and a module `js/pages/<page>.js`.
pub const PAGES: &[&str] = &[
    "sign-in",
    "sign-up",
    "verify-email",
    "forgot-password",
    "reset-password",
    "credits",
    "create",
    "videos",
    "keys",
    "admin",
];

/// What the responses of these routes allow the page to load.
#[derive(Clone)]
struct Policies {
    console: String,
    docs: String,
}

/// The routes: `/console`, `/console/{*path}`, `/docs`, and the redirects from the email
/// links of before. `blobs` says where signed download links point (images and videos the
/// console shows), so that the policy lets the page load them.
pub fn router<S: Clone + Send + Sync + 'static>(blobs: &BlobConfig) -> Router<S> {
    let media = blob_origin(blobs);
    let media = media.as_deref().map_or(String::new(), |o| format!(" {o}"));
    let policies = Policies {
        console: format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; \
             img-src 'self' blob: data:{media}; media-src 'self'{media}; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        // The reference's web component sets styles from script: no inline script still.
        docs: "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
               img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
               object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
            .to_owned(),
    };
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/{*path}", get(file))
        .route("/docs", get(docs))
        .route("/verify-email", get(to_console("verify-email")))
        .route("/reset-password", get(to_console("reset-password")))
        .with_state(policies)
}

/// The origin signed blob links point to when it is not this one (S3), for the policy.
fn blob_origin(blobs: &BlobConfig) -> Option<String> {
    if blobs.backend != BlobBackend::S3 {
        return None;
    }
    let s3 = blobs.s3.as_ref()?;
    match &s3.endpoint {
        Some(endpoint) => Some(origin_of(endpoint)),
        // AWS itself: virtual-hosted or path-style, in any region.
        None => Some("https://*.amazonaws.com".to_owned()),
    }
}

/// `scheme://host[:port]` of a URL (what a CSP source names).
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{scheme}://{authority}")
}

async fn page(State(policies): State<Policies>, headers: HeaderMap) -> Response {
    index(&policies, &headers)
}

fn index(policies: &Policies, headers: &HeaderMap) -> Response {
    match assets::get("index.html") {
        Some(asset) => assets::serve(asset, headers, &policies.console),
        None => ApiError::NotFound.into_response(),
    }
}

/// A file of the console, or the console's page for a page path.
async fn file(
    State(policies): State<Policies>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    if PAGES.contains(&path.trim_end_matches('/')) {
        return index(&policies, &headers);
    }
    // The HTML pages are reached by their paths, not as files.
    match assets::get(&path).filter(|_| !path.ends_with(".html")) {
        Some(asset) => assets::serve(asset, &headers, &policies.console),
        None => ApiError::NotFound.into_response(),
    }
}

async fn docs(State(policies): State<Policies>, headers: HeaderMap) -> Response {
    match assets::get("docs.html") {
        Some(asset) => assets::serve(asset, &headers, &policies.docs),
        None => ApiError::NotFound.into_response(),
    }
}

/// A permanent redirect from `/<page>?…` to `/console/<page>?…`, query kept as sent.
fn to_console(
    page: &'static str,
) -> impl Fn(RawQuery) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |RawQuery(query): RawQuery| {
        let location = match query {
            Some(query) => format!("/console/{page}?{query}"),
            None => format!("/console/{page}"),
        };
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        assets::security_headers(response.headers_mut(), "default-src 'none'");
        std::future::ready(response)
    }
}

/// The console link an account email carries for `page` with its one-time `token`.
pub fn email_link(public_url: &str, page: &str, token: &str) -> String {
    format!("{public_url}/console/{page}?token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_of_an_endpoint_drops_its_path() {
        assert_eq!(
            origin_of("http://127.0.0.1:9000/bucket/key"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            origin_of("https://minio.example.com"),
            "https://minio.example.com"
        );
    }

    #[test]
    fn every_page_has_its_module() {
        for page in PAGES {
            assert!(
                assets::get(&format!("js/pages/{page}.js")).is_some(),
                "no module for {page}"
            );
        }
    }
}

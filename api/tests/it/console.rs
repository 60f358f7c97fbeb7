//! The web console's routes (`/console`, `/docs`, the old email-link paths) and the links
//! account emails carry: the files come with their content type, an ETag the browser can
//! revalidate with, and a Content-Security-Policy that allows no inline or foreign script;
//! the links in the verification and reset mails open console pages. The pages themselves
//! run in a real browser in the root crate's `console` test.

use crate::common;

use common::TestApp;
use reqwest::{header, StatusCode};
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn every_console_page_path_serves_the_console_under_a_strict_policy() {
    let app = TestApp::spawn().await;
    for path in [
        "/console",
        "/console/",
        "/console/videos",
        "/console/verify-email?token=x",
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp");
        assert!(
            csp.starts_with("default-src 'self'; script-src 'self';"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(
            headers[header::REFERRER_POLICY],
            "no-referrer",
            "tokens stay here"
        );
        let body = response.text().await.expect("body");
        assert!(body.contains(r#"<script type="module" src="/console/js/main.js">"#));
    }
}

#[tokio::test]
async fn files_are_revalidated_by_etag_and_unknown_ones_are_404() {
    let app = TestApp::spawn().await;
    let first = app.get("/console/js/pages/create.js", None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
    let etag = first.headers()[header::ETAG].clone();
    let again = app
        .client
        .get(app.url("/console/js/pages/create.js"))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .expect("revalidate");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], etag);
    assert!(again.bytes().await.expect("body").is_empty());

    // The vendored reference is versioned by name: kept for a year without asking.
    let vendored = app.get("/console/vendor/rapidoc-9.3.8-min.js", None).await;
    assert_eq!(vendored.status(), StatusCode::OK);
    assert!(vendored.headers()[header::CACHE_CONTROL]
        .to_str()
        .expect("cache-control")
        .contains("immutable"));

    for path in [
        "/console/nope.js",
        "/console/index.html",
        "/console/../Cargo.toml",
        "/console/not-a-page",
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_docs_page_loads_its_reference_from_this_server() {
    let app = TestApp::spawn().await;
    let response = app.get("/docs", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let page = response.text().await.expect("page");
    assert!(page.contains(r#"src="/console/vendor/rapidoc-9.3.8-min.js""#));
    assert!(!page.contains("https://"), "no CDN: {page}");
    assert!(page.contains(r#"spec-url="/openapi.json""#));
}

#[tokio::test]
async fn console_files_are_not_charged_to_the_anonymous_rate_limit() {
    let app = TestApp::with_config(|config| config.rate.anonymous_per_minute = 2).await;
    for _ in 0..10 {
        let response = app.get("/console/js/main.js", None).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The API itself still is.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/v1/providers", None).await.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_emailed_links_open_console_pages_and_the_old_paths_redirect_there() {
    let app = TestApp::spawn().await;
    app.register("linked@example.com").await;
    let verification = app.mail_to("linked@example.com", "Confirm").await;
    let token = app.mailed_token("linked@example.com").await;
    let link = format!("{}/console/verify-email?token={token}", app.url(""));
    assert!(
        verification
            .body
            .lines()
            .any(|line| line.trim().ends_with(&link)),
        "{}",
        verification.body
    );

    let asked = app
        .post(
            "/v1/auth/password-reset",
            None,
            json!({"email": "linked@example.com"}),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let reset = app.mail_to("linked@example.com", "Reset").await;
    let reset_token = app.mailed_token_about("linked@example.com", "Reset").await;
    let link = format!("{}/console/reset-password?token={reset_token}", app.url(""));
    assert!(
        reset.body.lines().any(|line| line.trim().ends_with(&link)),
        "{}",
        reset.body
    );

    let client = no_redirects();
    for (old, new) in [
        (
            "/verify-email?token=a.b-c_d",
            "/console/verify-email?token=a.b-c_d",
        ),
        ("/reset-password?token=t", "/console/reset-password?token=t"),
        ("/verify-email", "/console/verify-email"),
    ] {
        let response = client.get(app.url(old)).send().await.expect("old link");
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT, "{old}");
        assert_eq!(response.headers()[header::LOCATION], new);
    }
}

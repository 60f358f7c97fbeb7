//! `generate_audio` on POST /v1/videos: only providers that make audio take it, `auto`
//! considers only them, and the video shows what was asked for.

use crate::common;

use common::{assert_problem, TestApp};
use framegate_domain::ProviderKind;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn video(provider: &str, generate_audio: Option<bool>) -> Value {
    let mut body = json!({"prompt": "rain on a tin roof", "provider": provider,
                          "duration_seconds": 4, "aspect_ratio": "16:9", "resolution": "720p"});
    if let Some(audio) = generate_audio {
        body["generate_audio"] = json!(audio);
    }
    body
}

#[tokio::test]
async fn audio_is_refused_where_no_provider_makes_it_and_nothing_is_reserved() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("silent@example.com").await;
    for path in ["/v1/videos", "/v1/videos/estimate"] {
        for provider in ["simulator", "auto"] {
            let response = app
                .post(path, Some(&token), video(provider, Some(true)))
                .await;
            let problem = assert_problem(
                response,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            )
            .await;
            assert_eq!(
                problem["errors"][0]["field"], "generate_audio",
                "{path} {provider}"
            );
            assert_eq!(
                problem["errors"][0]["code"], "audio_unsupported",
                "{path} {provider}"
            );
        }
    }
    let credits: Value = app
        .get("/v1/credits", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(credits["reserved"], 0, "a refused request reserves nothing");

    // Without audio (the default, or said outright) the same request goes through.
    for audio in [None, Some(false)] {
        let response = app
            .post("/v1/videos", Some(&token), video("simulator", audio))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.expect("json");
        assert_eq!(created["generate_audio"], false);
    }
}

#[tokio::test]
async fn auto_routes_a_request_with_audio_to_a_provider_that_makes_it() {
    let app = TestApp::with_config(|config| {
        config.enabled_providers = vec![ProviderKind::Veo, ProviderKind::Simulator];
    })
    .await;
    let (_, token, _) = app.signed_in_user("loud@example.com").await;
    let estimate = |audio| {
        app.post(
            "/v1/videos/estimate",
            Some(&token),
            video("auto", Some(audio)),
        )
    };
    let with_audio: Value = estimate(true).await.json().await.expect("json");
    let without: Value = estimate(false).await.json().await.expect("json");
    assert_eq!(with_audio["provider"], "veo", "{with_audio}");
    assert_ne!(without, Value::Null);
    assert_ne!(with_audio["provider"], without["provider"], "{without}");
}

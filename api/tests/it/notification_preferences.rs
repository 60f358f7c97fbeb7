//! Notification preferences on `PATCH /v1/me` (issue 13.6): all off at first, a partial
//! update changes only what it names, and a bad patch is refused with a stable code and
//! records nothing.

use crate::common;

use common::{assert_problem, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn patch_me(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.request(Method::PATCH, "/v1/me", Some(token), Some(body))
        .await
}

/// Sets preferences and returns what `GET /v1/me` then shows.
async fn set_notify(app: &TestApp, token: &str, notify: Value) -> Value {
    let response = patch_me(app, token, json!({ "notify": notify })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.expect("json");
    let read: Value = app
        .get("/v1/me", Some(token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, patched, "the answer is what GET shows");
    read["notify"].clone()
}

#[tokio::test]
async fn preferences_start_off_and_a_patch_changes_only_what_it_names() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("prefs@example.com").await;
    let me: Value = app
        .get("/v1/me", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        me["notify"],
        json!({"video_completed": false, "video_failed": false, "credits_low": false,
               "credits_low_threshold": 100})
    );

    let notify = set_notify(
        &app,
        &token,
        json!({"video_failed": true, "credits_low_threshold": 0}),
    )
    .await;
    assert_eq!(
        notify,
        json!({"video_completed": false, "video_failed": true, "credits_low": false,
               "credits_low_threshold": 0})
    );
    let notify = set_notify(&app, &token, json!({"credits_low": true})).await;
    assert_eq!(notify["video_failed"], true, "kept: {notify}");
    assert_eq!(notify["credits_low"], true);
    assert_eq!(notify["credits_low_threshold"], 0);

    // Setting what is set already, or nothing at all, records nothing.
    let changes = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_id = $1
                AND event_type = 'NotificationPreferencesChanged'",
        )
        .bind(user.to_string())
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
    };
    assert_eq!(changes().await, 2);
    set_notify(&app, &token, json!({"credits_low": true})).await;
    assert_eq!(
        patch_me(&app, &token, json!({})).await.status(),
        StatusCode::OK
    );
    assert_eq!(changes().await, 2);
}

#[tokio::test]
async fn bad_patches_are_refused_with_stable_codes_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("strict@example.com").await;
    for (body, field, code) in [
        (
            json!({"notify": {"credits_low_threshold": -1}}),
            "notify.credits_low_threshold",
            "out_of_range",
        ),
        (
            json!({"notify": {"credits_low_threshold": 1.5}}),
            "notify.credits_low_threshold",
            "invalid_field",
        ),
        (
            json!({"notify": {"video_completed": "yes"}}),
            "notify.video_completed",
            "invalid_field",
        ),
        (
            json!({"notify": {"video_completed": null}}),
            "notify.video_completed",
            "invalid_field",
        ),
        (
            json!({"notify": {"video_done": true}}),
            "notify.video_done",
            "invalid_field",
        ),
        (
            json!({"email": "new@example.com"}),
            "email",
            "invalid_field",
        ),
        (json!({"notify": true}), "notify", "invalid_field"),
    ] {
        let problem = assert_problem(
            patch_me(&app, &token, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["code"], code, "{body}: {problem}");
    }

    let twice = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"notify": {"video_failed": true, "video_failed": false}}"#)
        .send()
        .await
        .expect("request");
    let problem =
        assert_problem(twice, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "duplicate_field", "{problem}");

    let anonymous = app
        .request(
            Method::PATCH,
            "/v1/me",
            None,
            Some(json!({"notify": {"video_failed": true}})),
        )
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // A narrow API key may read the account but not change it.
    let key: Value = app
        .post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": "reader", "scopes": ["videos:read"]}),
        )
        .await
        .json()
        .await
        .expect("json");
    let secret = key["secret"].as_str().expect("secret");
    assert_eq!(
        app.get("/v1/me", Some(secret)).await.status(),
        StatusCode::OK
    );
    assert_problem(
        patch_me(&app, secret, json!({"notify": {"video_failed": true}})).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;

    let me: Value = app
        .get("/v1/me", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        me["notify"],
        json!({"video_completed": false, "video_failed": false, "credits_low": false,
               "credits_low_threshold": 100}),
        "nothing refused was recorded"
    );
}

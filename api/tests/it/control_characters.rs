//! Control characters in request text. Postgres refuses a NUL in `text` and `\u0000` in
//! `jsonb`; before the API refused them itself, any such string that reached the database was
//! answered 500 `internal`. Now every C0 control character and DEL is a 422 naming the field
//! (newlines and tabs only in prompts), for every string the OpenAPI document says an
//! endpoint takes.

use crate::common;

use common::{assert_problem, TestApp};
use framegate_api::control_chars::SECRET_FIELDS;
use framegate_api::error::ApiError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// A string Postgres cannot store.
const NUL_TEXT: &str = "bad\u{0}text";

/// What the sweep needs to reach past authorization and ownership checks.
struct Fixture {
    admin: String,
    user_id: Uuid,
    refresh: String,
    video_id: Uuid,
}

/// A body every JSON endpoint accepts (or refuses only later, on a domain rule): the sweep
/// replaces one string in it at a time. An endpoint missing here fails the sweep, so a new
/// JSON body is covered as soon as it is documented.
fn valid_body(method: &str, path: &str, fixture: &Fixture) -> Option<Value> {
    let video = json!({"prompt": "a paper boat", "provider": "simulator", "duration_seconds": 2,
                       "aspect_ratio": "16:9", "resolution": "720p"});
    Some(match (method, path) {
        ("post", "/v1/auth/register") => {
            json!({"email": "new@example.com", "password": common::PASSWORD})
        }
        ("post", "/v1/auth/verify-email") => json!({"token": "x.y"}),
        ("post", "/v1/auth/login") => {
            json!({"email": "target@example.com", "password": common::PASSWORD})
        }
        ("post", "/v1/auth/refresh" | "/v1/auth/logout") => {
            json!({"refresh_token": fixture.refresh})
        }
        ("post", "/v1/auth/password-reset") => json!({"email": "target@example.com"}),
        ("post", "/v1/auth/password-reset/confirm") => {
            json!({"token": "x.y", "new_password": common::PASSWORD})
        }
        ("post", "/v1/api-keys") => json!({"name": "deploy", "scopes": ["credits:read"]}),
        ("patch", "/v1/me") => json!({"notify": {"video_failed": true}}),
        // Not the password: the fixture's user must survive the test.
        ("delete", "/v1/me") => json!({"password": "not the password"}),
        ("post", "/v1/admin/users/{id}/credits") => json!({"amount": 5, "reason": "support"}),
        ("post", "/v1/admin/users/{id}/role") => json!({"role": "user"}),
        ("post", "/v1/admin/users/{id}/disable") => json!({"reason": "abuse"}),
        ("post", "/v1/videos" | "/v1/videos/estimate") => video,
        ("post", "/v1/videos/{id}/cancel") => json!({"reason": "changed my mind"}),
        ("post", "/v1/billing/checkout") => json!({"pack": "starter"}),
        ("post", "/v1/webhooks") => json!({"url": "https://example.com/hook",
                                           "events": ["video.completed"], "description": "d"}),
        ("patch", "/v1/webhooks/{id}") => json!({"url": "https://example.com/hook",
                                                 "events": ["video.failed"], "description": "d"}),
        _ => return None,
    })
}

/// The concrete path of a documented one, ids pointing at the fixture's objects.
fn concrete(path: &str, fixture: &Fixture) -> String {
    let id = if path.starts_with("/v1/videos/") {
        fixture.video_id
    } else if path.starts_with("/v1/admin/users/") {
        fixture.user_id
    } else {
        Uuid::now_v7()
    };
    path.replace("{id}", &id.to_string())
        .replace("{aggregate}", "user")
        .replace("{key}", "some/key")
}

/// Whether a schema (or the one it refers to) is a string, nullable or not.
fn is_string(schema: &Value, document: &Value) -> bool {
    let schema = resolve(schema, document);
    match &schema["type"] {
        Value::String(t) => t == "string",
        Value::Array(types) => types.iter().any(|t| t == "string"),
        _ => schema["oneOf"]
            .as_array()
            .is_some_and(|options| options.iter().any(|o| is_string(o, document))),
    }
}

fn resolve<'a>(schema: &'a Value, document: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer))
            .unwrap_or(schema),
        None => schema,
    }
}

/// Every string the document says a JSON body takes, as (JSON path, value to send there):
/// string properties, and the first element of arrays of strings.
fn string_fields(schema: &Value, document: &Value) -> Vec<(String, Value)> {
    let schema = resolve(schema, document);
    let mut fields = Vec::new();
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        if is_string(property, document) {
            fields.push((name.clone(), json!(NUL_TEXT)));
        } else if is_string(&resolve(property, document)["items"], document) {
            fields.push((format!("{name}[0]"), json!([NUL_TEXT])));
        }
    }
    fields
}

/// What a failure report shows of a response: its code and the first field it names.
#[derive(Debug)]
struct Brief {
    code: String,
    field: String,
}

fn brief(body: &Value) -> Brief {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Brief {
        code: text(&body["code"]),
        field: text(&body["errors"][0]["field"]),
    }
}

async fn send(
    app: &TestApp,
    method: &str,
    url_path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let method: Method = method.to_uppercase().parse().expect("method");
    app.request(method, url_path, token, body).await
}

#[tokio::test]
async fn no_documented_string_with_a_nul_is_a_500_and_json_fields_are_named() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("root@example.com").await;
    let (user_id, _, refresh) = app.signed_in_user("target@example.com").await;
    let video = app
        .post(
            "/v1/videos",
            Some(&admin),
            json!({"prompt": "a paper boat", "provider": "simulator", "duration_seconds": 2,
                   "aspect_ratio": "16:9", "resolution": "720p"}),
        )
        .await;
    assert_eq!(video.status(), StatusCode::CREATED);
    let video: Value = video.json().await.expect("json");
    let fixture = Fixture {
        admin,
        user_id,
        refresh,
        video_id: video["id"].as_str().expect("id").parse().expect("uuid"),
    };
    let document: Value = app
        .get("/openapi.json", None)
        .await
        .json()
        .await
        .expect("openapi");

    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            let token = secured.then_some(fixture.admin.as_str());
            let url_path = concrete(path, &fixture);

            if let Some(schema) = operation
                .pointer("/requestBody/content/application~1json/schema")
                .filter(|s| !s.is_null())
            {
                let Some(base) = valid_body(method, path, &fixture) else {
                    failures.push(format!("{method} {path}: no valid body in this test"));
                    continue;
                };
                for (field, value) in string_fields(schema, &document) {
                    let mut body = base.clone();
                    let name = field.split('[').next().unwrap_or(&field).to_owned();
                    body[name.as_str()] = value;
                    let response = send(&app, method, &url_path, token, Some(body)).await;
                    let status = response.status();
                    let problem: Value = response.json().await.unwrap_or(Value::Null);
                    checked.push(format!("{method} {path} {field}"));
                    let problem = brief(&problem);
                    // Passwords are only hashed: any character is theirs (never a 500 either).
                    if SECRET_FIELDS.contains(&field.as_str()) {
                        if status.is_server_error() {
                            failures.push(format!("{method} {path} body {field}: {status}"));
                        }
                        continue;
                    }
                    if status != StatusCode::UNPROCESSABLE_ENTITY
                        || problem.code != "validation_failed"
                        || problem.field != field
                    {
                        failures.push(format!(
                            "{method} {path} body {field}: {status} {problem:?}"
                        ));
                    }
                }
            }

            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("parameter name");
                let string_typed = is_string(&parameter["schema"], &document)
                    && parameter["schema"]["format"] != "uuid";
                let url = match parameter["in"].as_str() {
                    Some("query") if string_typed => format!("{url_path}?{name}=bad%00text"),
                    Some("path") if !path.contains(&format!("{{{name}}}")) => {
                        failures.push(format!("{method} {path}: {name} is no path parameter"));
                        continue;
                    }
                    Some("path") if string_typed => concrete(
                        &path.replace(&format!("{{{name}}}"), "bad%00text"),
                        &fixture,
                    ),
                    _ => continue,
                };
                let response = send(&app, method, &url, token, None).await;
                let status = response.status();
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                checked.push(format!("{method} {path} {name}"));
                let problem = brief(&problem);
                if status != StatusCode::UNPROCESSABLE_ENTITY || problem.field != name {
                    failures.push(format!("{method} {url}: {status} {problem:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The sweep found the fields the issue lists (a document it could not read would pass
    // it vacuously).
    for expected in [
        "post /v1/videos prompt",
        "post /v1/videos negative_prompt",
        "post /v1/videos external_id",
        "post /v1/videos/{id}/cancel reason",
        "post /v1/auth/register email",
        "post /v1/auth/login email",
        "post /v1/auth/password-reset email",
        "post /v1/api-keys name",
        "post /v1/api-keys scopes[0]",
        "post /v1/admin/users/{id}/credits reason",
        "post /v1/admin/users/{id}/disable reason",
        "get /v1/admin/audit event_type",
        "get /v1/admin/events/{aggregate}/{id} aggregate",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not checked; checked: {checked:#?}"
        );
    }
}

#[tokio::test]
async fn a_control_character_in_a_prompt_is_refused_naming_the_prompt() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("bell@example.com").await;
    for (field, text) in [
        ("prompt", "a boat\u{7} ringing"),
        ("prompt", "a boat\u{0}"),
        ("negative_prompt", "no\u{7f}delete"),
    ] {
        let mut body = json!({"prompt": "a paper boat", "provider": "simulator",
                              "duration_seconds": 2, "aspect_ratio": "16:9", "resolution": "720p"});
        body[field] = json!(text);
        let response = app.post("/v1/videos", Some(&token), body).await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert_eq!(
            problem["errors"][0]["code"], "control_character",
            "{problem}"
        );
    }
    let videos: Value = app
        .get("/v1/videos", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(videos["items"], json!([]), "nothing was requested");
}

#[tokio::test]
async fn a_prompt_may_span_lines_and_hold_tabs_but_other_fields_may_not() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("lines@example.com").await;
    let prompt = "a paper boat\non a rainy street,\r\n\tat dusk";
    let created = app
        .post(
            "/v1/videos",
            Some(&token),
            json!({"prompt": prompt, "negative_prompt": "no people\nno cars",
                   "provider": "simulator", "duration_seconds": 2, "aspect_ratio": "16:9",
                   "resolution": "720p"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    let read: Value = app
        .get(&format!("/v1/videos/{id}"), Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["prompt"], prompt, "kept as written");

    let single_line = app
        .post(
            "/v1/videos",
            Some(&token),
            json!({"prompt": "a boat", "external_id": "order\n42", "provider": "simulator",
                   "duration_seconds": 2, "aspect_ratio": "16:9", "resolution": "720p"}),
        )
        .await;
    let problem = assert_problem(
        single_line,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "external_id");
}

#[tokio::test]
async fn an_object_key_with_a_control_character_is_refused() {
    let app = TestApp::spawn().await;
    let mut body = Map::new();
    body.insert("email".to_owned(), json!("key@example.com"));
    body.insert("pass\u{0}word".to_owned(), json!(common::PASSWORD));
    let response = app
        .post("/v1/auth/register", None, Value::Object(body))
        .await;
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        problem["errors"][0]["code"], "control_character",
        "{problem}"
    );
}

#[tokio::test]
async fn a_nul_in_the_audit_filter_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("auditor@example.com").await;
    let response = app
        .get("/v1/admin/audit?event_type=%00", Some(&admin))
        .await;
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "event_type");
}

/// The backstop behind the extractors: text Postgres refuses, whether in a query or in a
/// command's events, is the client's mistake (422), not a server failure.
#[tokio::test]
async fn text_postgres_refuses_maps_to_a_422_not_a_500() {
    let app = TestApp::spawn().await;
    let text = sqlx::query("SELECT $1::text")
        .bind("a\u{0}b")
        .execute(&app.db.pool)
        .await
        .expect_err("postgres refuses a NUL in text");
    let text = ApiError::from(text);
    assert_eq!(text.status(), StatusCode::UNPROCESSABLE_ENTITY, "{text:?}");
    assert_eq!(text.code(), "validation_failed");

    let jsonb = sqlx::query("SELECT $1::jsonb")
        .bind(json!({"reason": "a\u{0}b"}))
        .execute(&app.db.pool)
        .await
        .expect_err("postgres refuses \\u0000 in jsonb");
    assert_eq!(
        ApiError::from(jsonb).status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let user = app.register("ledger@example.com").await;
    let grant = app
        .state
        .store
        .credits()
        .execute(
            &user.to_string(),
            framegate_domain::CreditCommand::Grant {
                amount: framegate_domain::Credits::new(7),
                reason: "a\u{0}b".into(),
                granted_by: "system".into(),
            },
            &framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::System),
        )
        .await
        .expect_err("the event store refuses the event");
    let grant = ApiError::from(grant);
    assert_eq!(
        grant.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "{grant:?}"
    );
}

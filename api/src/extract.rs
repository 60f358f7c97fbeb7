//! Request extractors whose rejections are problem+json with stable codes.
//!
//! They are also where request text is checked once for control characters
//! (`control_chars`): JSON bodies, query strings and path parameters are refused with a 422
//! naming the field before any handler sees them.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client_ip::client_ip;
use crate::control_chars;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use crate::strict_json::StrictValue;

/// `Json<T>` with clear 4xx errors: malformed JSON (400), wrong content type (415), a body
/// over the limit (413), a key named twice in one object (422 `duplicate_field`, see
/// `strict_json`), a string or key holding a control character (422, naming it), and fields
/// of the wrong shape or unknown where the type forbids them (422, naming the field).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(StrictValue(value)) =
            axum::Json::<StrictValue>::from_request(request, state)
                .await
                .map_err(json_rejection)?;
        from_json_value(value).map(ApiJson)
    }
}

/// A body read by hand (one that may be empty, say) the way `ApiJson` reads one.
pub fn from_json_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let StrictValue(value) = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Validation(vec![data_error(&e.to_string())]),
        _ => ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
            message: format!("the body is not valid JSON: {e}"),
        },
    })?;
    from_json_value(value)
}

/// A parsed body as `T`, after the control-character check; a field of the wrong shape is
/// named by its path (`scopes[1]`).
fn from_json_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    control_chars::check_json(&value).map_err(invalid)?;
    serde_path_to_error::deserialize(value).map_err(|e| invalid(data_error(&e.to_string())))
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            let message = error.body_text();
            let detail = message
                .split_once(": ")
                .map_or(message.as_str(), |(_, rest)| rest);
            ApiError::Validation(vec![data_error(detail)])
        }
        JsonRejection::JsonSyntaxError(error) => ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
            message: format!("the body is not valid JSON: {}", error.body_text()),
        },
        JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: format!(
                "send the body as {}: application/json",
                header::CONTENT_TYPE
            ),
        },
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::BadRequest {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "body_too_large",
                message: "the request body is larger than the limit".to_owned(),
            }
        }
        other => ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "unreadable_body",
            message: other.body_text(),
        },
    }
}

/// `Path<T>` whose rejection is a problem: 400 `invalid_path` naming what did not parse (an
/// id that is not a UUID, say).
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Parameters that do not decode are the typed extractor's to report.
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await {
            control_chars::check_pairs(&raw).map_err(invalid)?;
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_path",
                message: rejection.body_text(),
            }),
        }
    }
}

/// `Query<T>` whose rejection is a problem: 400 `invalid_query` naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Ok(axum::extract::Query(pairs)) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        {
            control_chars::check_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(invalid)?;
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_query",
                message: rejection.body_text(),
            }),
        }
    }
}

fn invalid(error: FieldError) -> ApiError {
    ApiError::Validation(vec![error])
}

/// The field a JSON data error is about, from serde's message: an optional path
/// (`scopes[1]: invalid type ...`) and the name in "missing field `email`" or "unknown field
/// `x`"; `body` when neither says.
fn data_error(detail: &str) -> FieldError {
    let (path, message) = match detail.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && !head.contains(' ') => (Some(head), rest),
        _ => (None, detail),
    };
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let field = match (path, named) {
        (Some(path), Some(name)) if !path.ends_with(name) => format!("{path}.{name}"),
        (Some(path), _) => path.to_owned(),
        (None, Some(name)) => name.to_owned(),
        (None, None) => "body".to_owned(),
    };
    let code = if message.starts_with("duplicate field `") {
        "duplicate_field"
    } else {
        "invalid_field"
    };
    FieldError::new(&field, code, message)
}

/// The caller's IP address (see `client_ip` for proxies).
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let connect = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(ClientIp(client_ip(
            &parts.headers,
            connect,
            &state.config.proxies,
        )))
    }
}

/// The User-Agent, for event metadata.
pub fn user_agent(parts: &axum::http::HeaderMap) -> Option<String> {
    parts
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

#[cfg(test)]
mod tests {
    use super::data_error;

    #[test]
    fn a_json_data_error_names_the_field_it_is_about() {
        for (detail, field) in [
            ("missing field `email` at line 1 column 2", "email"),
            (
                "unknown field `nmae`, expected `name` or `scopes` at line 1 column 7",
                "nmae",
            ),
            (
                "name: invalid type: integer `3`, expected a string at line 1 column 9",
                "name",
            ),
            (
                "scopes[1]: invalid type: integer `1`, expected a string at line 1 column 30",
                "scopes[1]",
            ),
            ("b[0]: missing field `y` at line 1 column 23", "b[0].y"),
            (
                "invalid type: integer `1`, expected struct Body at line 1 column 1",
                "body",
            ),
        ] {
            assert_eq!(data_error(detail).field, field, "{detail}");
        }
    }
}

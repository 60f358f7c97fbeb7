//! The one error type of the API, rendered as RFC 9457 problem+json with a stable `code`.
//!
//! Handlers return `Result<_, ApiError>`; every failure the platform knows about maps to a
//! status and a machine-readable code. Internal errors are logged once with the request id and
//! shown only as an opaque message.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use framegate_commands::error::ErrorCode;
use framegate_commands::CommandError;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The body of every error response (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `insufficient_credits`.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// A malformed or unacceptable request as a whole (bad JSON, wrong content type...).
    #[error("{message}")]
    BadRequest {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("authentication is required")]
    Unauthenticated { code: &'static str, message: String },
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("insufficient credits: {requested} requested, {available} available")]
    InsufficientCredits { requested: i64, available: i64 },
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// Too much open at once: 429 (the caller's share, e.g. event streams per user) or 503
    /// (the server's), with `Retry-After` and a code saying which.
    #[error("{message}")]
    Busy {
        status: StatusCode,
        code: &'static str,
        message: String,
        retry_after: Duration,
    },
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// A service the request needed (a payment provider) failed or could not be reached.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    /// A domain rule refused the command (422 with the domain's code).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unauthenticated {
            code,
            message: message.into(),
        }
    }

    /// The account was erased while the request was under way (it authenticated before the
    /// erasure and reached the store after it): 401, as its credentials are gone.
    pub fn account_erased() -> Self {
        ApiError::unauthenticated("account_erased", "this account was erased")
    }

    pub fn field(field: &str, code: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, code, message)])
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::Internal(error.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BadRequest { status, .. } | ApiError::Busy { status, .. } => *status,
            ApiError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::AccountDisabled => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthenticated { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Busy { code, .. }
            | ApiError::BadGateway { code, .. }
            | ApiError::Unprocessable { code, .. } => code,
            ApiError::Forbidden => "forbidden",
            ApiError::AccountDisabled => "account_disabled",
            ApiError::NotFound => "not_found",
            ApiError::InsufficientCredits { .. } => "insufficient_credits",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "dependency_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are invalid", errors.len()),
            },
            ApiError::Unauthenticated { message, .. } => message.clone(),
            ApiError::Internal(_) => {
                "an internal error occurred; quote the request id when reporting it".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The problem document for this error (`request_id` is filled by the response layer).
    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            problem_type: format!("https://framegate.dev/problems/{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code().to_owned(),
            errors: match self {
                ApiError::Validation(errors) => errors.clone(),
                _ => Vec::new(),
            },
            request_id: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            // Logged here once; the request id is on the surrounding span.
            tracing::error!(%cause, "internal error");
        }
        let mut problem = self.problem();
        problem.request_id = crate::REQUEST_ID.try_with(Clone::clone).ok();
        let mut response = (self.status(), axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::RateLimited { retry_after } | ApiError::Busy { retry_after, .. } = &self {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, ApiError::Unauthenticated { .. }) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"framegate\""),
            );
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if refused_text(&error) {
            return refused_text_error(&error);
        }
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                ApiError::Unavailable("the database".to_owned())
            }
            other => ApiError::internal(other),
        }
    }
}

/// SQLSTATEs of text Postgres cannot store: `character_not_in_repertoire` (a NUL or invalid
/// UTF-8 in `text`) and `untranslatable_character` (`\u0000` in `jsonb`).
const REFUSED_TEXT_STATES: &[&str] = &["22021", "22P05"];

/// The same, by message, for errors that reach us only as text (wrapped by the event store).
const REFUSED_TEXT_MESSAGES: &[&str] = &[
    "invalid byte sequence for encoding",
    "null character not permitted",
    "unsupported Unicode escape sequence",
];

/// Whether Postgres refused text a request carried: the backstop behind the extractors'
/// control-character check (`control_chars`), so a value they miss is the client's 422, not
/// a 500. Looks through the whole chain of causes.
fn refused_text(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(sqlx::Error::Database(database)) = error.downcast_ref::<sqlx::Error>() {
            if database
                .code()
                .is_some_and(|code| REFUSED_TEXT_STATES.contains(&code.as_ref()))
            {
                return true;
            }
        }
        let message = error.to_string();
        if REFUSED_TEXT_MESSAGES.iter().any(|m| message.contains(m)) {
            return true;
        }
        cause = error.source();
    }
    false
}

fn refused_text_error(error: &dyn std::fmt::Display) -> ApiError {
    // A request got this far with such text: an input check is missing somewhere.
    tracing::warn!(%error, "the database refused text from a request");
    ApiError::field(
        "request",
        "invalid_text",
        "holds text the database cannot store (a NUL or another control character)",
    )
}

impl<E: std::error::Error + ErrorCode> From<CommandError<E>> for ApiError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Domain(domain) => ApiError::Unprocessable {
                code: domain.code(),
                message: domain.to_string(),
            },
            CommandError::Conflict => ApiError::Conflict {
                code: "conflict",
                message: "the resource was changed concurrently; retry the request".to_owned(),
            },
            CommandError::EmailTaken => ApiError::Conflict {
                code: "email_taken",
                message: "this email address is already registered".to_owned(),
            },
            CommandError::AccountErased => ApiError::account_erased(),
            CommandError::Unavailable(cause) | CommandError::Internal(cause)
                if refused_text(cause.as_ref()) =>
            {
                refused_text_error(&cause)
            }
            CommandError::Unavailable(_) => ApiError::Unavailable("the event store".to_owned()),
            CommandError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

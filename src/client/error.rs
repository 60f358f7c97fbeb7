//! What can go wrong in a client command, and the exit code each outcome maps to.
//!
//! The codes are documented (README, `framegate client --help`) so scripts can branch on
//! them: 0 done, 1 an error (the server refused, the network, a local file), 2 a usage error
//! (clap's own code for bad arguments), 3 a waited-for video failed or was cancelled, 4 not
//! logged in or the credentials were refused, 130 interrupted by Ctrl-C.

use serde_json::{json, Value};

/// How a client command ends: the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Error = 1,
    Usage = 2,
    VideoFailed = 3,
    Auth = 4,
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// One invalid field, as the server's problem+json names it.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Arguments that do not go together, or a value the client itself refuses.
    #[error("{0}")]
    Usage(String),
    /// No credentials for this server.
    #[error("not logged in to {server}; run `framegate client login --server {server}`")]
    NotLoggedIn { server: String },
    /// The server answered with a problem (RFC 9457).
    #[error("{detail} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        detail: String,
        errors: Vec<FieldError>,
        request_id: Option<String>,
    },
    /// The server could not be reached, or its answer could not be read.
    #[error("{0}")]
    Network(String),
    /// A local file or terminal could not be read or written.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    pub fn local(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Self {
        ClientError::Local(format!("{what}: {error}"))
    }

    pub fn network(error: &reqwest::Error) -> Self {
        // reqwest's own message names the URL and, through its sources, the cause.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        ClientError::Network(message)
    }

    /// The server's problem `code`, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Usage(_) => Exit::Usage,
            ClientError::NotLoggedIn { .. } => Exit::Auth,
            ClientError::Api { status: 401, .. } => Exit::Auth,
            _ => Exit::Error,
        }
    }

    /// The error as the one JSON document `--json` prints.
    pub fn to_json(&self) -> Value {
        let kind = match self {
            ClientError::Usage(_) => "usage",
            ClientError::NotLoggedIn { .. } => "not_logged_in",
            ClientError::Api { .. } => "api",
            ClientError::Network(_) => "network",
            ClientError::Local(_) => "local",
        };
        let mut error =
            json!({ "kind": kind, "message": self.to_string(), "exit_code": self.exit().code() });
        if let ClientError::Api {
            status,
            code,
            detail,
            errors,
            request_id,
        } = self
        {
            error["status"] = json!(status);
            error["code"] = json!(code);
            error["detail"] = json!(detail);
            if !errors.is_empty() {
                error["errors"] = json!(errors);
            }
            if let Some(id) = request_id {
                error["request_id"] = json!(id);
            }
        }
        json!({ "error": error })
    }
}

//! The one error type of the write side.
//!
//! cqrs-es reports everything as `AggregateError`; callers need to tell apart a rule the
//! domain refused (with its stable code), a concurrent change worth retrying, a taken email,
//! and infrastructure trouble, so each gets its own variant and a stable `code()`.

use cqrs_es::AggregateError;
use framegate_domain::{CreditError, ImageError, UserError, VideoError, WebhookError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A domain error's stable, machine-readable code (as shown to API clients).
pub trait ErrorCode {
    fn code(&self) -> &'static str;
}

impl ErrorCode for UserError {
    fn code(&self) -> &'static str {
        UserError::code(self)
    }
}

impl ErrorCode for CreditError {
    fn code(&self) -> &'static str {
        CreditError::code(self)
    }
}

impl ErrorCode for VideoError {
    fn code(&self) -> &'static str {
        VideoError::code(self)
    }
}

impl ErrorCode for WebhookError {
    fn code(&self) -> &'static str {
        WebhookError::code(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// Another command changed the aggregate first and this one is not safe to re-run (or
    /// kept losing the race): the caller may retry.
    #[error("the resource was changed concurrently; retry the request")]
    Conflict,
    /// The email address belongs to another user.
    #[error("this email address is already registered")]
    EmailTaken,
    /// The acting or owning user was erased while the command was under way: nothing new is
    /// recorded about them (crypto-shredding, ADR 0043).
    #[error("this account was erased")]
    AccountErased,
    /// Postgres could not be reached.
    #[error("the event store is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or corrupt data. Logged, never shown in detail.
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
}

impl<E: std::error::Error> CommandError<E> {
    /// Whether the same command may succeed later unchanged: the store was unreachable, or
    /// another writer kept winning the race.
    pub fn is_transient(&self) -> bool {
        matches!(self, CommandError::Conflict | CommandError::Unavailable(_))
    }
}

/// [`CommandError::is_transient`] for a command error of any aggregate behind a `dyn Error`;
/// `None` when `error` is no command error.
pub fn command_error_is_transient(error: &(dyn std::error::Error + 'static)) -> Option<bool> {
    fn check<E: std::error::Error + 'static>(
        error: &(dyn std::error::Error + 'static),
    ) -> Option<bool> {
        error
            .downcast_ref::<CommandError<E>>()
            .map(CommandError::is_transient)
    }
    check::<UserError>(error)
        .or_else(|| check::<CreditError>(error))
        .or_else(|| check::<VideoError>(error))
        .or_else(|| check::<ImageError>(error))
        .or_else(|| check::<WebhookError>(error))
}

impl<E: std::error::Error + ErrorCode> CommandError<E> {
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Domain(error) => error.code(),
            CommandError::Conflict => "conflict",
            CommandError::EmailTaken => "email_taken",
            CommandError::AccountErased => "account_erased",
            CommandError::Unavailable(_) => "dependency_unavailable",
            CommandError::Internal(_) => "internal",
        }
    }
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(error) => CommandError::Domain(error),
            AggregateError::AggregateConflict => CommandError::Conflict,
            AggregateError::DatabaseConnectionError(error) => CommandError::Unavailable(error),
            AggregateError::DeserializationError(error)
            | AggregateError::UnexpectedError(error) => CommandError::Internal(error),
        }
    }
}

impl<E: std::error::Error> From<sqlx::Error> for CommandError<E> {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
                CommandError::Unavailable(Box::new(error))
            }
            other => CommandError::Internal(Box::new(other)),
        }
    }
}

/// A unit of work that did not commit: a stream moved (or the request's Idempotency-Key was
/// taken over) is a conflict, an unreachable database is unavailable, anything else internal.
impl<E: std::error::Error> From<crate::unit::AppendError> for CommandError<E> {
    fn from(error: crate::unit::AppendError) -> Self {
        use crate::unit::AppendError;
        match error {
            AppendError::Conflict | AppendError::LeaseLost(_) => CommandError::Conflict,
            AppendError::Database(error) => error.into(),
            AppendError::Pii(crate::pii::PiiError::Erased(_)) => CommandError::AccountErased,
            other => CommandError::Internal(Box::new(other)),
        }
    }
}

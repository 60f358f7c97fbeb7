//! Telling a passing failure from an event that can never be handled.
//!
//! A subscription retries the first kind with backoff for as long as it lasts and parks the
//! second (see `parking`). Passing: the database unreachable or restarting (a terminated
//! backend, a failover, a serialization conflict, a full pool), the blob store away, a
//! command that lost its race or found the store down, any I/O error, and whatever a handler
//! wraps in [`Transient`] (a Kafka broker away, a provider's 5xx). Everything else (an
//! undecodable payload, a broken invariant, a constraint violation) is taken for permanent
//! once it has failed [`PERMANENT_AFTER`] times in a row.

use std::error::Error;

use framegate_commands::blobs::BlobError;
use framegate_commands::error::command_error_is_transient;

use crate::subscription::Transient;

/// How many times in a row one event must fail with a non-passing error before it is parked.
pub const PERMANENT_AFTER: u32 = 3;

/// Whether `error`, or anything it was caused by, is worth waiting out.
pub fn is_transient(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<Transient>() || error.is::<std::io::Error>() {
            return true;
        }
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return sqlx_is_transient(error);
        }
        if let Some(BlobError::Unavailable(_) | BlobError::Io(_)) = error.downcast_ref() {
            return true;
        }
        if command_error_is_transient(error) == Some(true) {
            return true;
        }
        current = error.source();
    }
    false
}

fn sqlx_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes: 08 connection exception, 40 transaction rollback (serialization,
        // deadlock), 53 insufficient resources, 57 operator intervention (admin shutdown,
        // cancelled statement), 58 system error.
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use framegate_commands::error::CommandError;
    use framegate_domain::VideoError;

    use super::*;
    use crate::subscription::BoxError;

    #[test]
    fn outages_are_transient_and_bad_data_is_not() {
        let io: BoxError = Box::new(sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(is_transient(io.as_ref()));
        let closed: BoxError = Box::new(sqlx::Error::PoolTimedOut);
        assert!(is_transient(closed.as_ref()));
        let marked: BoxError = Box::new(Transient("broker away".into()));
        assert!(is_transient(marked.as_ref()));
        let conflict: BoxError = Box::new(CommandError::<VideoError>::Conflict);
        assert!(is_transient(conflict.as_ref()));
        let down: BoxError = Box::new(CommandError::<VideoError>::Unavailable(Box::new(
            sqlx::Error::PoolClosed,
        )));
        assert!(is_transient(down.as_ref()));
        let blobs: BoxError = Box::new(BlobError::Unavailable("S3 503".into()));
        assert!(is_transient(blobs.as_ref()));

        let undecodable: BoxError = serde_json::from_str::<u32>("{")
            .expect_err("not JSON")
            .into();
        assert!(!is_transient(undecodable.as_ref()));
        let refused: BoxError = Box::new(CommandError::Domain(VideoError::NotRequested));
        assert!(!is_transient(refused.as_ref()));
        let corrupt: BoxError = Box::new(CommandError::<VideoError>::Internal(
            serde_json::from_str::<u32>("x")
                .expect_err("not JSON")
                .into(),
        ));
        assert!(!is_transient(corrupt.as_ref()));
        let decode: BoxError = Box::new(sqlx::Error::ColumnNotFound("payload".into()));
        assert!(!is_transient(decode.as_ref()));
    }

    #[test]
    fn an_internal_error_caused_by_a_terminated_backend_is_transient() {
        // The command layer may call a lost connection internal; its cause says otherwise.
        let io: BoxError = Box::new(CommandError::<VideoError>::Internal(Box::new(
            sqlx::Error::Io(std::io::Error::other("connection reset")),
        )));
        assert!(is_transient(io.as_ref()));
    }
}

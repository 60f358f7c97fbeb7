//! The write side's half of `Idempotency-Key`: the request that holds a key records, in the
//! very transaction that commits its events, that it took effect.
//!
//! The API runs each keyed request with its [`Claim`] in the task-local [`CLAIM`]. Every
//! append made while it is set marks the record committed before it commits, and only while
//! the claim still belongs to this request (its lease was not taken over by a retry after
//! this process was presumed dead). So a record is committed exactly when its request's
//! events are, and a retry can tell "nothing happened, run it again" from "it happened, the
//! response was lost" (docs/adr/0015-one-transaction-video-request.md).

use sqlx::PgConnection;
use uuid::Uuid;

/// The right to run a request under an Idempotency-Key: the record's key and the owner
/// token of the request holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scope: String,
    pub key: String,
    pub owner: Uuid,
}

tokio::task_local! {
    /// The claim of the keyed request this task runs, if any.
    pub static CLAIM: Claim;
}

/// The claim was taken over by another request: this one must not commit anything.
#[derive(Debug, thiserror::Error)]
#[error("the Idempotency-Key record is no longer held by this request")]
pub struct LeaseLost;

/// The claim of the request running in this task.
pub fn current() -> Option<Claim> {
    CLAIM.try_with(Clone::clone).ok()
}

/// Marks `claim`'s record committed through `conn` (the transaction about to commit its
/// events), naming `user`, the user those events are about (their personal data's subject):
/// the stored reply may hold that user's data sealed, and erasing the user deletes it
/// (`crate::erasure`). Fails with [`LeaseLost`] when the record is no longer this request's.
pub async fn mark_committed(
    conn: &mut PgConnection,
    claim: &Claim,
    user: Option<Uuid>,
) -> Result<(), MarkError> {
    let marked = sqlx::query(
        "UPDATE idempotency_keys SET committed_at = COALESCE(committed_at, now()),
                user_id = COALESCE(user_id, $4)
          WHERE scope = $1 AND key = $2 AND owner = $3",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(claim.owner)
    .bind(user)
    .execute(conn)
    .await?;
    if marked.rows_affected() == 0 {
        return Err(MarkError::LeaseLost(LeaseLost));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(transparent)]
    LeaseLost(LeaseLost),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

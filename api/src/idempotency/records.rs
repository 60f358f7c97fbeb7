//! The `idempotency_keys` records: claiming a key, keeping the claim alive, storing the final
//! response (on its own, or inside the transaction that commits the request's events), and
//! giving a claim up.
//!
//! A claim belongs to one live request: `owner` names it and `lease_until` stays in the
//! future while it runs (the middleware renews it). A record left in progress by a request
//! that died (its process was killed) is taken over by a retry once the lease has run out,
//! unless the record says the request committed (`committed_at`, set in the transaction that
//! committed its events): then it must never run again.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::IDEMPOTENCY_REPLAYED;

pub use framegate_commands::idempotency::Claim;

/// A stored final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

impl StoredResponse {
    /// The replayed response, marked as such.
    pub fn into_replay(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        if let Some(value) = self
            .content_type
            .as_deref()
            .and_then(|ct| HeaderValue::from_str(ct).ok())
        {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers.insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// What to do with a request carrying a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time (or the first request died before committing): run it, then `complete`
    /// or `abandon` the claim.
    Execute(Claim),
    /// Seen before with the same request: send this back.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
    /// The first request took effect but its response was lost (it failed or died after
    /// committing): it must not run again, and there is nothing to replay.
    Committed,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    request_hash: String,
    status_code: Option<i32>,
    response_body: Option<Vec<u8>>,
    content_type: Option<String>,
    created_at: DateTime<Utc>,
    expired: bool,
    owner: Uuid,
    lease_expired: bool,
    committed: bool,
}

/// Claims `(scope, key)` for a request with fingerprint `request_hash` for `lease`, or
/// reports why not. Race-safe: of concurrent callers exactly one gets `Execute`.
pub async fn begin(
    pool: &PgPool,
    scope: &str,
    key: &str,
    request_hash: &str,
    lease: Duration,
) -> Result<Begin, sqlx::Error> {
    let lease_seconds = lease.as_secs_f64();
    // A few rounds: between our failed insert and our read the row can disappear (abandoned
    // or expired), or be taken over, and then it is worth trying again.
    for _ in 0..3 {
        let owner = Uuid::new_v4();
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (scope, key, request_hash, owner, lease_until)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
             ON CONFLICT (scope, key) DO NOTHING
             RETURNING owner",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(owner)
        .bind(lease_seconds)
        .fetch_optional(pool)
        .await?;
        if inserted.is_some() {
            return Ok(Begin::Execute(claim(scope, key, owner)));
        }

        let row: Option<RecordRow> = sqlx::query_as(
            "SELECT request_hash, status_code, response_body, content_type, created_at,
                    created_at <= now() - interval '24 hours' AS expired,
                    owner, lease_until < now() AS lease_expired,
                    committed_at IS NOT NULL AS committed
               FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            continue;
        };
        if row.expired {
            // Only this exact old row: if a concurrent request already replaced it, the
            // newer row stays and our next insert attempt sees it.
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at = $3",
            )
            .bind(scope)
            .bind(key)
            .bind(row.created_at)
            .execute(pool)
            .await?;
            continue;
        }
        if row.request_hash != request_hash {
            return Ok(Begin::Mismatch);
        }
        if let Some(status) = row.status_code {
            let status = u16::try_from(status)
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or_else(|| sqlx::Error::ColumnDecode {
                    index: "status_code".to_owned(),
                    source: format!("{status} is not an HTTP status").into(),
                })?;
            return Ok(Begin::Replay(StoredResponse {
                status,
                body: row.response_body.unwrap_or_default(),
                content_type: row.content_type,
            }));
        }
        if !row.lease_expired {
            return Ok(Begin::InProgress);
        }
        if row.committed {
            return Ok(Begin::Committed);
        }
        // Its owner is gone and committed nothing: take the record over. A commit of the old
        // owner racing with this waits on the row and then finds it is no longer its own.
        let new_owner = Uuid::new_v4();
        let taken = sqlx::query(
            "UPDATE idempotency_keys
                SET owner = $4, lease_until = now() + make_interval(secs => $5)
              WHERE scope = $1 AND key = $2 AND owner = $3
                AND status_code IS NULL AND committed_at IS NULL AND lease_until < now()",
        )
        .bind(scope)
        .bind(key)
        .bind(row.owner)
        .bind(new_owner)
        .bind(lease_seconds)
        .execute(pool)
        .await?;
        if taken.rows_affected() == 1 {
            tracing::info!(%scope, "took over an Idempotency-Key abandoned by a request that died");
            return Ok(Begin::Execute(claim(scope, key, new_owner)));
        }
    }
    // The row keeps changing under us: behave as if another request holds it.
    Ok(Begin::InProgress)
}

fn claim(scope: &str, key: &str, owner: Uuid) -> Claim {
    Claim {
        scope: scope.to_owned(),
        key: key.to_owned(),
        owner,
    }
}

/// Extends a running claim's lease; false when the record is no longer the claim's.
pub async fn renew(pool: &PgPool, claim: &Claim, lease: Duration) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(
        "UPDATE idempotency_keys SET lease_until = now() + make_interval(secs => $4)
          WHERE scope = $1 AND key = $2 AND owner = $3 AND status_code IS NULL",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(claim.owner)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Stores the final response of a claimed request; false when the record is no longer the
/// claim's (taken over, or completed already). `committed`: the statement runs in the
/// transaction of the request's events, and marks the record committed with them too.
pub async fn complete<'e>(
    executor: impl PgExecutor<'e>,
    claim: &Claim,
    response: &StoredResponse,
    committed: bool,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET status_code = $4, response_body = $5, content_type = $6,
                committed_at = CASE WHEN $7 THEN COALESCE(committed_at, now()) ELSE committed_at END
         WHERE scope = $1 AND key = $2 AND owner = $3 AND status_code IS NULL",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(claim.owner)
    .bind(i32::from(response.status.as_u16()))
    .bind(&response.body)
    .bind(&response.content_type)
    .bind(committed)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Gives up a claim without a stored response. A request that committed nothing releases the
/// key, so the same key can be retried; one that committed keeps it (it must never run
/// twice) and only ends its lease, so a retry learns at once that it took effect.
pub async fn abandon(pool: &PgPool, claim: &Claim) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH released AS (
             DELETE FROM idempotency_keys
              WHERE scope = $1 AND key = $2 AND owner = $3
                AND status_code IS NULL AND committed_at IS NULL
             RETURNING 1)
         UPDATE idempotency_keys SET lease_until = now()
          WHERE scope = $1 AND key = $2 AND owner = $3
            AND status_code IS NULL AND committed_at IS NOT NULL",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(claim.owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes records older than 24 hours; returns how many. For a periodic task.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted =
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= now() - interval '24 hours'")
            .execute(pool)
            .await?;
    Ok(deleted.rows_affected())
}

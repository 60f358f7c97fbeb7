//! Originals stored before ADR 0027 kept the upload's metadata (GPS among it). Migration 0015
//! lists each of them once in `originals_to_strip`; [`drain`] rewrites each blob as a new
//! upload would be stored (the same [`process`](super::process), through the same bounded
//! processor) and takes it off the list. It runs with the API's maintenance, so an upgrade
//! cleans what it inherited without an operator's step; several API processes share the
//! list (`FOR UPDATE SKIP LOCKED`).
//!
//! A blob that is gone (its image deleted and cleaned up) is simply taken off the list. One
//! that no longer passes processing (stricter checks came later, e.g. short JPEG scans) or
//! that storage refuses stays listed with its error, retried at most [`MAX_ATTEMPTS`] times
//! in all and then left for an operator (`SELECT * FROM originals_to_strip`).

use axum::body::Bytes;
use framegate_commands::blobs::{BlobError, BlobKey};

use crate::state::AppState;

/// Tries per listed original before it is left to an operator.
pub const MAX_ATTEMPTS: i32 = 3;

/// What one [`drain`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Originals rewritten without their metadata.
    pub rewritten: usize,
    /// Originals that had none to lose, or whose blob is gone.
    pub unchanged: usize,
    /// Originals that could not be rewritten this time.
    pub failed: usize,
}

/// Works through the list once: every listed original that may still be tried is tried
/// once (a failure waits for the next maintenance round).
pub async fn drain(state: &AppState) -> Result<Drained, sqlx::Error> {
    let mut drained = Drained::default();
    let mut failed: Vec<String> = Vec::new();
    loop {
        let mut tx = state.pool.begin().await?;
        let next: Option<(String, String)> = sqlx::query_as(
            "SELECT blob_key, content_type FROM originals_to_strip
              WHERE attempts < $1 AND blob_key <> ALL($2)
              ORDER BY blob_key LIMIT 1
                FOR UPDATE SKIP LOCKED",
        )
        .bind(MAX_ATTEMPTS)
        .bind(&failed)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((key, content_type)) = next else {
            return Ok(drained);
        };
        match rewrite(state, &key, &content_type).await {
            Ok(changed) => {
                if changed {
                    drained.rewritten += 1;
                } else {
                    drained.unchanged += 1;
                }
                sqlx::query("DELETE FROM originals_to_strip WHERE blob_key = $1")
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
            }
            Err(error) => {
                drained.failed += 1;
                tracing::warn!(%key, %error, "could not strip the metadata of a stored original");
                sqlx::query(
                    "UPDATE originals_to_strip SET attempts = attempts + 1, last_error = $2
                      WHERE blob_key = $1",
                )
                .bind(&key)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
                failed.push(key);
            }
        }
        tx.commit().await?;
    }
}

/// Rewrites the original under `key`; `false` when it is gone or had nothing to remove.
async fn rewrite(state: &AppState, key: &str, content_type: &str) -> Result<bool, String> {
    let key = BlobKey::new(key).map_err(|e| e.to_string())?;
    let stored = match state.blobs.get(&key).await {
        Ok(bytes) => bytes,
        Err(BlobError::NotFound(_)) => return Ok(false),
        Err(error) => return Err(error.to_string()),
    };
    let processed = state
        .images
        .process(stored.clone())
        .await
        .map_err(|e| e.to_string())?;
    if processed.original == stored.as_ref() {
        return Ok(false);
    }
    state
        .blobs
        .put(&key, Bytes::from(processed.original), content_type)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

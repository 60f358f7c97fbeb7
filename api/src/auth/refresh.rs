//! Refresh tokens: opaque, stored as SHA-256, rotated on every use, revoked by family.
//!
//! Each login starts a family. Using a token marks it used and issues its successor in the
//! same family. A token presented a second time means it was stolen (or the client is
//! confused): the whole family is revoked, so both the thief and the victim must log in again.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use framegate_domain::{hash_token, UserId};
use rand::RngCore as _;
use sqlx::PgPool;
use uuid::Uuid;

pub const REFRESH_PREFIX: &str = "fgr_";

/// family_id, user_id, expires_at, used_at, revoked_at
type TokenRow = (
    Uuid,
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    Rotated {
        user_id: UserId,
        token: String,
    },
    /// An already-used token: its family is now revoked.
    Reused,
    Expired,
    Invalid,
}

/// A new random token (shown to the client once) and its storage hash.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Starts a new family (a login) and returns its first token.
pub async fn start_family(
    pool: &PgPool,
    user_id: UserId,
    ttl: Duration,
) -> Result<String, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    insert(&mut conn, user_id, Uuid::now_v7(), ttl).await
}

async fn insert(
    conn: &mut sqlx::PgConnection,
    user_id: UserId,
    family: Uuid,
    ttl: Duration,
) -> Result<String, sqlx::Error> {
    let token = generate_secret(REFRESH_PREFIX);
    let expires_at =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(30));
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash_token(&token).as_str())
    .bind(family)
    .bind(user_id.as_uuid())
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(token)
}

/// Exchanges `token` for its successor.
pub async fn rotate(pool: &PgPool, token: &str, ttl: Duration) -> Result<Rotation, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT family_id, user_id, expires_at, used_at, revoked_at
               FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash_token(token).as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((family, user, expires_at, used_at, revoked_at)) = row else {
        return Ok(Rotation::Invalid);
    };
    if revoked_at.is_some() {
        return Ok(Rotation::Invalid);
    }
    if used_at.is_some() {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
            .bind(family)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::warn!(%family, "refresh token reused: family revoked");
        return Ok(Rotation::Reused);
    }
    if expires_at < Utc::now() {
        return Ok(Rotation::Expired);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(hash_token(token).as_str())
        .execute(&mut *tx)
        .await?;
    let user_id = UserId::from_uuid(user);
    let successor = insert(&mut tx, user_id, family, ttl).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated {
        user_id,
        token: successor,
    })
}

/// Logout: revokes the family `token` belongs to.
/// False when no such token was ever issued; a token of a family revoked already is known
/// (logging out twice is fine).
pub async fn revoke_family(pool: &PgPool, token: &str) -> Result<bool, sqlx::Error> {
    let known: Option<bool> = sqlx::query_scalar(
        "WITH family AS (SELECT family_id FROM refresh_tokens WHERE token_hash = $1),
              revoked AS (UPDATE refresh_tokens SET revoked_at = now()
                           WHERE revoked_at IS NULL
                             AND family_id = (SELECT family_id FROM family))
         SELECT true FROM family",
    )
    .bind(hash_token(token).as_str())
    .fetch_optional(pool)
    .await?;
    Ok(known.is_some())
}

/// Revokes every session of a user (password reset, disabling).
pub async fn revoke_user(pool: &PgPool, user_id: UserId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .execute(pool)
    .await?;
    Ok(())
}

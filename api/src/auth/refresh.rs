//! Refresh tokens: opaque, stored as SHA-256, rotated on every use, ended with their session.
//!
//! Each login starts a session (`framegate_commands::sessions`) and its first refresh token.
//! Using a token marks it used and issues its successor in the same session. A token
//! presented a second time means it was stolen (or the client is confused): the session ends,
//! so both the thief and the victim must log in again, and the access tokens issued in the
//! session stop working with it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use framegate_commands::sessions::{self, EndReason};
use framegate_domain::{hash_token, UserId};
use rand::RngCore as _;
use sqlx::PgPool;
use uuid::Uuid;

pub const REFRESH_PREFIX: &str = "fgr_";

/// session (family) id, user_id, expires_at, used_at, whether the session is live
type TokenRow = (Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>, bool);

#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    Rotated {
        user_id: UserId,
        session_id: Uuid,
        token: String,
    },
    /// An already-used token: its session (of `user_id`) has ended.
    Reused {
        user_id: UserId,
    },
    Expired,
    Invalid,
}

/// A new random token (shown to the client once) and its storage hash.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A login: its session and first refresh token.
pub struct Login {
    pub session_id: Uuid,
    pub refresh_token: String,
}

/// Starts a session (a login) and returns its first refresh token, in one transaction;
/// `None` when the user's stream moved past `checked_at` (see `sessions::start`).
pub async fn start_session(
    pool: &PgPool,
    user_id: UserId,
    checked_at: usize,
    ttl: Duration,
) -> Result<Option<Login>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(session_id) = sessions::start(&mut tx, user_id, checked_at).await? else {
        return Ok(None);
    };
    let refresh_token = insert(&mut tx, user_id, session_id, ttl).await?;
    tx.commit().await?;
    Ok(Some(Login {
        session_id,
        refresh_token,
    }))
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
    // The session row is locked with the token: a rotation and the end of its session are
    // ordered, so no successor is issued into a session that has ended.
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT t.family_id, t.user_id, t.expires_at, t.used_at, s.revoked_at IS NULL
           FROM refresh_tokens t JOIN sessions s ON s.session_id = t.family_id
          WHERE t.token_hash = $1
            FOR UPDATE",
    )
    .bind(hash_token(token).as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((session_id, user, expires_at, used_at, live)) = row else {
        return Ok(Rotation::Invalid);
    };
    if !live {
        return Ok(Rotation::Invalid);
    }
    if used_at.is_some() {
        sessions::end(&mut tx, session_id, EndReason::RefreshTokenReused).await?;
        tx.commit().await?;
        tracing::warn!(session = %session_id, "refresh token reused: session ended");
        return Ok(Rotation::Reused {
            user_id: UserId::from_uuid(user),
        });
    }
    if expires_at < Utc::now() {
        return Ok(Rotation::Expired);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(hash_token(token).as_str())
        .execute(&mut *tx)
        .await?;
    let user_id = UserId::from_uuid(user);
    let successor = insert(&mut tx, user_id, session_id, ttl).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated {
        user_id,
        session_id,
        token: successor,
    })
}

/// Logout: ends the session `token` belongs to. Its user, or `None` when no such token was
/// ever issued; a token of a session ended already is known (logging out twice is fine).
pub async fn end_session(pool: &PgPool, token: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let session: Option<Uuid> =
        sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash_token(token).as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(session) = session else {
        return Ok(None);
    };
    let user = sessions::end(&mut tx, session, EndReason::Logout).await?;
    tx.commit().await?;
    Ok(user)
}

/// "Log out everywhere": ends every session of `user_id`; returns how many were live.
pub async fn end_all_sessions(pool: &PgPool, user_id: UserId) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ended = sessions::end_all(&mut tx, user_id, EndReason::LogoutAll).await?;
    tx.commit().await?;
    Ok(ended)
}

/// What [`prune`] did: refresh tokens deleted, sessions ended for having expired, ended
/// sessions deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub tokens: u64,
    pub expired: u64,
    pub sessions: u64,
}

/// Housekeeping: refresh tokens a day past their expiry go; a session whose refresh tokens
/// all expired longer ago than an access token lives (`access_ttl`) has ended (nothing can
/// use it: no token names it that still works); an ended session a day old that no token
/// names goes. One transaction.
pub async fn prune(pool: &PgPool, access_ttl: Duration) -> Result<Pruned, sqlx::Error> {
    let grace = access_ttl.as_secs_f64();
    let mut tx = pool.begin().await?;
    let tokens =
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let expired = sqlx::query(
        "UPDATE sessions s SET revoked_at = now(), revoked_reason = 'expired'
          WHERE s.revoked_at IS NULL
            AND s.created_at < now() - make_interval(secs => $1)
            AND NOT EXISTS (SELECT 1 FROM refresh_tokens t
                             WHERE t.family_id = s.session_id
                               AND t.expires_at > now() - make_interval(secs => $1))",
    )
    .bind(grace)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let sessions = sqlx::query(
        "DELETE FROM sessions s
          WHERE s.revoked_at < now() - interval '1 day'
            AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = s.session_id)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Pruned {
        tokens,
        expired,
        sessions,
    })
}

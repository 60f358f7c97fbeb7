//! The `api_keys` read model: every key ever issued, by hash for authenticating a presented
//! key and by owner for the key list.
//!
//! Written by [`ApiKeysProjector`] from `User` events, inline and by its subscription (see
//! [`project_inline`] for why both may apply an event). A key stops working when it is
//! revoked or when its owner is disabled: disabling stamps `revoked_at` on every live key of
//! the user, so authentication needs only this table. `last_used_at` comes from
//! `api_key_usage`, which the API writes on use and this projector never touches. A
//! revocation or disabling is announced on `CREDENTIALS_CHANNEL` for the API's key cache. In a batch
//! the issued keys go in with one multi-row insert; revocations and disablings are rare and
//! go one by one, after the keys issued before them.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{User, UserEvent, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::batch::{self, decode_all, SetBased};
use super::versioned::Writer;
use super::{aggregate_uuid, announce_credentials_changed, decode, expect_row, ProjectionError};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

/// The subscription name of the API keys projector.
pub const SUBSCRIPTION: &str = "read_model.api_keys";

/// An API key as the API shows it; never the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Projects `User` events into `api_keys`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKeysProjector;

#[async_trait]
impl EventHandler for ApiKeysProjector {
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[User::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != User::TYPE {
            return Ok(());
        }
        project(conn, event).await?;
        Ok(())
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        batch::handle_batch(self, conn, events).await
    }
}

#[async_trait]
impl SetBased for ApiKeysProjector {
    const AGGREGATE_TYPE: &'static str = User::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let mut pending = Issued::default();
        for event in decode_all::<UserEvent>(events, User::TYPE)? {
            match event.body {
                UserEvent::ApiKeyIssued {
                    key_id,
                    name,
                    prefix,
                    key_hash,
                    scopes,
                } => {
                    // A second issue of a key already pending does nothing, as its insert would.
                    if pending.seen.insert(key_id.as_uuid()) {
                        pending.ids.push(key_id.as_uuid());
                        pending.user_ids.push(event.id);
                        pending.names.push(name);
                        pending.prefixes.push(prefix);
                        pending.hashes.push(key_hash.into_inner());
                        pending.scopes.push(serde_json::to_value(scopes)?);
                        pending.created_at.push(event.event.recorded_at);
                    }
                }
                // They act on keys issued before them: those go in first.
                UserEvent::ApiKeyRevoked { .. }
                | UserEvent::UserDisabled { .. }
                | UserEvent::UserErased { .. } => {
                    std::mem::take(&mut pending).insert(conn).await?;
                    project(conn, event.event).await?;
                }
                UserEvent::UserRegistered { .. }
                | UserEvent::EmailVerificationIssued { .. }
                | UserEvent::EmailVerified {}
                | UserEvent::PasswordChanged { .. }
                | UserEvent::PasswordResetRequested { .. }
                | UserEvent::PasswordResetCompleted { .. }
                | UserEvent::RoleChanged { .. }
                | UserEvent::NotificationPreferencesChanged { .. } => {}
            }
        }
        pending.insert(conn).await?;
        Ok(())
    }
}

/// Keys issued in a batch and not yet written, as columns.
#[derive(Default)]
struct Issued {
    seen: HashSet<Uuid>,
    ids: Vec<Uuid>,
    user_ids: Vec<Uuid>,
    names: Vec<String>,
    prefixes: Vec<String>,
    hashes: Vec<String>,
    /// Each key's scopes as a JSON array: arrays of arrays must be rectangular in Postgres.
    scopes: Vec<serde_json::Value>,
    created_at: Vec<DateTime<Utc>>,
}

impl Issued {
    async fn insert(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at)
             SELECT k.id, k.user_id, k.name, k.prefix, k.key_hash,
                    ARRAY(SELECT s.scope FROM jsonb_array_elements_text(k.scopes)
                                 WITH ORDINALITY AS s(scope, n) ORDER BY s.n),
                    k.created_at
               FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                           $6::jsonb[], $7::timestamptz[])
                    AS k(id, user_id, name, prefix, key_hash, scopes, created_at)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&self.ids)
        .bind(&self.user_ids)
        .bind(&self.names)
        .bind(&self.prefixes)
        .bind(&self.hashes)
        .bind(&self.scopes)
        .bind(&self.created_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

async fn project(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    project_as(conn, event, Writer::Projector).await
}

/// Applies one `User` event inline, in the transaction that appends it. Every change this
/// model makes is idempotent and never undone (a key is inserted once, revoked once, and a
/// disabled user's keys stay revoked), so the projector applying the same event again
/// changes nothing and no version is needed. A revocation of a key the projector has not
/// inserted yet (issued before this path existed) is left to the projector, which applies
/// both in order.
pub(crate) async fn project_inline(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<(), ProjectionError> {
    project_as(conn, event, Writer::Inline).await
}

async fn project_as(
    conn: &mut PgConnection,
    event: &StoredEvent,
    writer: Writer,
) -> Result<(), ProjectionError> {
    let user_id = aggregate_uuid(event)?;
    let at = event.recorded_at;
    match decode::<UserEvent>(event)? {
        UserEvent::ApiKeyIssued {
            key_id,
            name,
            prefix,
            key_hash,
            scopes,
        } => {
            sqlx::query(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(key_id.as_uuid())
            .bind(user_id)
            .bind(name)
            .bind(prefix)
            .bind(key_hash.into_inner())
            .bind(scopes)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::ApiKeyRevoked { key_id } => {
            // COALESCE keeps the first revocation time if the event is ever seen again.
            let result = sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3)
                  WHERE id = $1 AND user_id = $2",
            )
            .bind(key_id.as_uuid())
            .bind(user_id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            if writer == Writer::Projector {
                expect_row(&result, || {
                    format!("ApiKeyRevoked for key {key_id} of user {user_id}, not in api_keys")
                })?;
            }
            announce_credentials_changed(conn, &[user_id]).await?;
        }
        UserEvent::UserDisabled { .. } | UserEvent::UserErased { .. } => {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(user_id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            announce_credentials_changed(conn, &[user_id]).await?;
        }
        UserEvent::UserRegistered { .. }
        | UserEvent::EmailVerificationIssued { .. }
        | UserEvent::EmailVerified {}
        | UserEvent::PasswordChanged { .. }
        | UserEvent::PasswordResetRequested { .. }
        | UserEvent::PasswordResetCompleted { .. }
        | UserEvent::RoleChanged { .. }
        | UserEvent::NotificationPreferencesChanged { .. } => {}
    }
    Ok(())
}

const SELECT: &str = "SELECT k.id, k.user_id, k.name, k.prefix, k.scopes, k.created_at,
                             k.revoked_at, u.last_used_at
                        FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id";

/// The key whose secret hashes to `key_hash`, revoked or not: the caller decides what a
/// revoked key means (it must be refused).
pub async fn find_by_hash(pool: &PgPool, key_hash: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE k.key_hash = $1"))
        .bind(key_hash)
        .fetch_optional(pool)
        .await
}

/// All keys of a user, newest first, revoked ones included.
pub async fn list_for_user(pool: &PgPool, user_id: UserId) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE k.user_id = $1 ORDER BY k.created_at DESC, k.id DESC"
    ))
    .bind(user_id.as_uuid())
    .fetch_all(pool)
    .await
}

/// What authenticating with a key needs, in one round trip: the key and its owner's state.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub scopes: Vec<String>,
    pub revoked: bool,
    pub role: String,
    pub disabled: bool,
}

/// The key whose secret hashes to `key_hash` with its owner's role and status.
pub async fn find_owner_by_hash(
    pool: &PgPool,
    key_hash: &str,
) -> Result<Option<KeyOwner>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id AS key_id, k.user_id, k.scopes, k.revoked_at IS NOT NULL AS revoked,
                u.role, u.disabled
           FROM api_keys k JOIN users u ON u.id = k.user_id
          WHERE k.key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await
}

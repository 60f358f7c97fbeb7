//! The `users` read model: one row per registered account with its email, role and state,
//! for sign-in lookups, the admin user list and authorisation checks.
//!
//! Written only by [`UsersProjector`] from `User` events. Secrets (password hashes, pending
//! tokens) stay in the event store: the commands that check them load the aggregate.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{User, UserEvent, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::{aggregate_uuid, decode, expect_row, ProjectionError};
use crate::log::StoredEvent;
use crate::subscription::{BoxError, EventHandler};

/// The subscription name of the users projector.
pub const SUBSCRIPTION: &str = "read_model.users";

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    /// `user` or `admin`.
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// Projects `User` events into `users`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsersProjector;

#[async_trait]
impl EventHandler for UsersProjector {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != User::TYPE {
            return Ok(());
        }
        project(conn, event).await?;
        Ok(())
    }
}

async fn project(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let id = aggregate_uuid(event)?;
    let at = event.recorded_at;
    let result =
        match decode::<UserEvent>(event)? {
            UserEvent::UserRegistered {
                user_id,
                email,
                role,
                ..
            } => {
                // Later events update the row by aggregate id, so the two must agree.
                if user_id.as_uuid() != id {
                    return Err(ProjectionError::Inconsistent(format!(
                        "UserRegistered names user {user_id} in aggregate {id}"
                    )));
                }
                // A replay finds the row already there and leaves it alone.
                sqlx::query(
                    "INSERT INTO users (id, email, role, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(email)
                .bind(role.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            UserEvent::EmailVerified {} => {
                sqlx::query(
                    "UPDATE users SET email_verified = true, updated_at = GREATEST(updated_at, $2)
                  WHERE id = $1",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?
            }
            UserEvent::RoleChanged { role } => sqlx::query(
                "UPDATE users SET role = $3, updated_at = GREATEST(updated_at, $2) WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(role.as_str())
            .execute(&mut *conn)
            .await?,
            UserEvent::UserDisabled { .. } => {
                sqlx::query(
                    "UPDATE users SET disabled = true, updated_at = GREATEST(updated_at, $2)
                  WHERE id = $1",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?
            }
            // Nothing shown here changes, but the account did: keep updated_at honest.
            UserEvent::EmailVerificationIssued { .. }
            | UserEvent::PasswordChanged { .. }
            | UserEvent::PasswordResetRequested { .. }
            | UserEvent::PasswordResetCompleted { .. }
            | UserEvent::ApiKeyIssued { .. }
            | UserEvent::ApiKeyRevoked { .. } => {
                sqlx::query("UPDATE users SET updated_at = GREATEST(updated_at, $2) WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?
            }
        };
    expect_row(&result, || {
        format!("{} for user {id}, who is not in users", event.event_type)
    })
}

const COLUMNS: &str = "id, email, email_verified, role, disabled, created_at";

/// The user with this id, if the projection has seen them register.
pub async fn get(pool: &PgPool, id: UserId) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await
}

/// The user with this email; pass the address normalised (`framegate_domain::normalize_email`).
pub async fn find_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
        .bind(normalized_email)
        .fetch_optional(pool)
        .await
}

/// Up to `limit` users in registration order, after the cursor `(created_at, id)` of the last
/// row of the previous page.
pub async fn list(
    pool: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    match after {
        Some((created_at, id)) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM users WHERE (created_at, id) > ($1, $2)
                  ORDER BY created_at, id LIMIT $3"
            ))
            .bind(created_at)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM users ORDER BY created_at, id LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(pool)
            .await
        }
    }
}

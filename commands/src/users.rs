//! User commands that need more than one aggregate's view: registration with unique emails.
//!
//! Uniqueness is enforced by a partial unique index on the events table over the email of
//! `UserRegistered` (migrations/0001). Two concurrent registrations of one address race to
//! insert that event; exactly one commits. postgres-es reports the loser's unique violation
//! as an aggregate conflict, which we translate back into "email taken" by looking the
//! address up (docs/adr/0003-unique-emails.md).

use chrono::{DateTime, Utc};
use framegate_domain::{
    normalize_email, PasswordHash, Role, TokenHash, UserCommand, UserError, UserId,
};
use sqlx::PgPool;

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::position::LogPosition;
use crate::store::EventStore;

/// Everything a registration needs; secrets arrive already hashed.
#[derive(Debug, Clone)]
pub struct Registration {
    pub user_id: UserId,
    pub email: String,
    pub password_hash: PasswordHash,
    pub verification_token_hash: TokenHash,
    pub verification_expires_at: DateTime<Utc>,
    pub role: Role,
}

/// Registers a user; `EmailTaken` when the (normalised) address already belongs to someone.
pub async fn register(
    store: &EventStore,
    registration: Registration,
    metadata: &CommandMetadata,
) -> Result<Option<LogPosition>, CommandError<UserError>> {
    let email = registration.email.clone();
    let command = UserCommand::Register {
        user_id: registration.user_id,
        email: registration.email,
        password_hash: registration.password_hash,
        verification_token_hash: registration.verification_token_hash,
        verification_expires_at: registration.verification_expires_at,
        role: registration.role,
    };
    match store
        .users()
        .execute(&registration.user_id.to_string(), command, metadata)
        .await
    {
        Err(CommandError::Conflict) => {
            let normalized = normalize_email(&email).map_err(CommandError::Domain)?;
            match registered_user_by_email(store.pool(), &normalized).await? {
                Some(owner) if owner != registration.user_id => Err(CommandError::EmailTaken),
                _ => Err(CommandError::Conflict),
            }
        }
        other => other,
    }
}

/// The user who registered `normalized_email`, straight from the event store (the source of
/// truth for uniqueness; read models may lag).
pub async fn registered_user_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<UserId>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = 'User' AND event_type = 'UserRegistered'
            AND payload -> 'UserRegistered' ->> 'email' = $1",
    )
    .bind(normalized_email)
    .fetch_optional(pool)
    .await?;
    Ok(id.and_then(|id| id.parse().ok()))
}

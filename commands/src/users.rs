//! User commands that need more than one aggregate's view: registration with unique emails.
//!
//! Uniqueness is enforced by `email_claims` (migrations/0026), whose key is the HMAC of the
//! normalised address (`crate::pii`): the claim is inserted in the transaction that appends
//! `UserRegistered`, so of two concurrent registrations of one address exactly one commits.
//! The loser's unique violation is an aggregate conflict, which we translate back into
//! "email taken" by looking the claim up (docs/adr/0003-unique-emails.md, 0043). An erased
//! user's claim is released.

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

/// The user who holds `normalized_email`, from the claims (written with the events; read
/// models may lag).
pub async fn registered_user_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<UserId>, sqlx::Error> {
    let id = crate::pii::current()
        .email_owner(pool, normalized_email)
        .await?;
    Ok(id.and_then(|id| id.parse().ok()))
}

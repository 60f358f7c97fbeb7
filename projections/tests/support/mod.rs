//! Shared set-up of the read-model tests: commands through the real `EventStore`, and the
//! deterministic drain of every projector.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use chrono::Utc;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    hash_token, ApiKeyHash, ApiKeyId, CreditCommand, PasswordHash, Role, UserCommand, UserId,
};
use framegate_projections::read_models::catch_up_all;
use framegate_projections::LogPosition;
use sqlx::PgPool;
use uuid::Uuid;

pub const VERIFY_TOKEN: &str = "verify-me";

pub fn system() -> CommandMetadata {
    CommandMetadata::new_request(Actor::System)
}

pub async fn register(store: &EventStore, email: &str) -> (UserId, LogPosition) {
    let user_id = UserId::from_uuid(Uuid::now_v7());
    let command = UserCommand::Register {
        user_id,
        email: email.to_owned(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        verification_token_hash: hash_token(VERIFY_TOKEN),
        verification_expires_at: Utc::now() + chrono::Duration::days(1),
        role: Role::User,
    };
    let position = user_command(store, user_id, command).await;
    (user_id, position)
}

pub async fn user_command(store: &EventStore, user: UserId, command: UserCommand) -> LogPosition {
    store
        .users()
        .execute(&user.to_string(), command, &system())
        .await
        .expect("user command")
        .expect("the command writes an event")
}

pub async fn credit_command(
    store: &EventStore,
    user: UserId,
    command: CreditCommand,
    meta: &CommandMetadata,
) -> LogPosition {
    store
        .credits()
        .execute(&user.to_string(), command, meta)
        .await
        .expect("credit command")
        .expect("the command writes an event")
}

pub async fn catch_up(pool: &PgPool) -> u64 {
    catch_up_all(pool).await.expect("projectors catch up")
}

pub fn key_hash(secret: &str) -> String {
    hash_token(secret).into_inner()
}

pub async fn issue_key(store: &EventStore, user: UserId, name: &str, secret: &str) -> ApiKeyId {
    let key_id = ApiKeyId::from_uuid(Uuid::now_v7());
    let command = UserCommand::IssueApiKey {
        key_id,
        name: name.to_owned(),
        prefix: secret[..8].to_owned(),
        key_hash: ApiKeyHash::new(key_hash(secret)),
        scopes: vec!["videos:read".to_owned(), "videos:write".to_owned()],
    };
    user_command(store, user, command).await;
    key_id
}

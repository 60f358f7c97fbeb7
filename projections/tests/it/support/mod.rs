//! Shared set-up of the read-model tests: commands through the real `EventStore`, and the
//! deterministic drain of every projector.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use chrono::Utc;
use framegate_commands::{webhooks, Actor, CommandMetadata, EventStore};
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{
    hash_token, ApiKeyHash, ApiKeyId, CreditCommand, ImageCommand, ImageContentType, ImageExif,
    ImageId, ModerationDecision, PasswordHash, Role, UserCommand, UserId, VideoCommand, VideoId,
    WebhookCommand, WebhookEndpointId,
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

pub async fn video_command(store: &EventStore, video: VideoId, command: VideoCommand) {
    // Some commands (a lower progress) write no event; that is fine here.
    store
        .videos()
        .execute(&video.to_string(), command, &system())
        .await
        .expect("video command");
}

/// An upload of image number `n` (its SHA-256 is `n` in hex) by `owner`.
pub fn upload(owner: UserId, n: u128, moderation: ModerationDecision) -> (ImageId, ImageCommand) {
    let sha256 = format!("{n:064x}");
    let image_id = ImageId::for_content(owner, &sha256);
    let command = ImageCommand::Upload {
        image_id,
        owner,
        sha256,
        content_type: ImageContentType::Jpeg,
        bytes: 123_456,
        width: 400,
        height: 600,
        orientation: 6,
        exif: ImageExif {
            camera_make: Some("Framegate Optics".to_owned()),
            camera_model: None,
            taken_at: Some("2025-06-01T07:45:12".to_owned()),
        },
        blob_key: format!("images/{owner}/{image_id}/{}/original.jpg", Uuid::now_v7()),
        thumbnail_key: format!("images/{owner}/{image_id}/{}/thumbnail.jpg", Uuid::now_v7()),
        moderation,
    };
    (image_id, command)
}

pub async fn image_command(store: &EventStore, image: ImageId, command: ImageCommand) {
    store
        .images()
        .execute(&image.to_string(), command, &system())
        .await
        .expect("image command");
}

/// A user's webhook endpoint through its whole life: created, updated, rotated, disabled by
/// the platform, enabled by the owner, and deleted for every other `n`.
pub async fn webhook_endpoint(store: &EventStore, owner: UserId, n: usize) -> WebhookEndpointId {
    let endpoint_id = WebhookEndpointId::from_uuid(Uuid::now_v7());
    let meta = CommandMetadata::new_request(Actor::User(owner));
    let endpoint = webhooks::NewEndpoint {
        endpoint_id,
        owner,
        url: format!("https://hooks.example.com/{n}"),
        events: None,
        description: Some(format!("endpoint {n}")),
    };
    webhooks::create(store, endpoint, &meta)
        .await
        .expect("endpoint created");
    let update = WebhookCommand::Update {
        by: owner,
        url: None,
        events: Some(vec!["video.completed".into(), "credits.low".into()]),
        description: Some(None),
        enabled: None,
    };
    webhooks::execute(store, endpoint_id, update, &meta)
        .await
        .expect("endpoint updated");
    webhooks::rotate(store, endpoint_id, owner, &meta)
        .await
        .expect("secret rotated");
    let gone = WebhookCommand::Disable {
        reason: DisabledReason::Gone,
        detail: "410 Gone".into(),
    };
    webhooks::execute(store, endpoint_id, gone, &system())
        .await
        .expect("endpoint disabled");
    let enable = WebhookCommand::Update {
        by: owner,
        url: None,
        events: None,
        description: None,
        enabled: Some(true),
    };
    webhooks::execute(store, endpoint_id, enable, &meta)
        .await
        .expect("endpoint enabled");
    if n.is_multiple_of(2) {
        webhooks::delete(store, endpoint_id, owner, &meta)
            .await
            .expect("endpoint deleted");
    }
    endpoint_id
}

//! The template story of the replay benchmark: one customer's life written through the
//! command path (so sealed like any append), read back opened: the rows as they were stored
//! before encryption, which `seed` copies.

use chrono::Utc;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore, StoredEvent};
use framegate_domain::{
    hash_token, ApiKeyHash, ApiKeyId, CreditCommand, Credits, ImageCommand, ImageContentType,
    ImageExif, ImageId, ModerationDecision, PasswordHash, ProviderKind, ProviderPreference, Role,
    UserCommand, UserId, VideoCommand, VideoId, VideoSpec,
};
use uuid::Uuid;

/// The email the template registers with (each copy gets its own).
pub const EMAIL: &str = "bench@example.com";
/// The template's prompt (every copy keeps it).
pub const PROMPT: &str = "a paper boat drifting down a rainy street at dusk, cinematic";
const CLIENT_IP: &str = "203.0.113.7";
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) framegate-bench/1.0";

/// The template: its rows in plaintext (log order) and the ids each copy replaces.
pub struct Template {
    pub rows: Vec<StoredEvent>,
    pub ids: StoryIds,
}

/// Writes the story into a scratch database and reads its rows back with their personal
/// fields opened, as `framegate events seal` would find rows written before encryption.
pub async fn template() -> Template {
    let scratch = TestDatabase::with_pool_size(4).await;
    let store = EventStore::new(scratch.pool.clone());
    let ids = story(&store).await;
    let mut rows: Vec<StoredEvent> = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata
           FROM events ORDER BY global_position",
    )
    .fetch_all(&scratch.pool)
    .await
    .expect("template rows");
    framegate_commands::pii::open_stored(&scratch.pool, &mut rows)
        .await
        .expect("open the template");
    let text = serde_json::to_string(
        &rows
            .iter()
            .map(|r| (&r.payload, &r.metadata))
            .collect::<Vec<_>>(),
    )
    .expect("json");
    assert!(
        text.contains(EMAIL)
            && text.contains(PROMPT)
            && text.contains(CLIENT_IP)
            && !text.contains("$pii"),
        "the template opens to plaintext"
    );
    Template { rows, ids }
}

/// The ids of the template story, to be replaced in each copy.
pub struct StoryIds {
    pub user: UserId,
    pub key: ApiKeyId,
    pub key_hash: String,
    pub video: VideoId,
    pub image: ImageId,
}

async fn story(store: &EventStore) -> StoryIds {
    let system = CommandMetadata::new_request(Actor::System);
    let user = UserId::from_uuid(Uuid::now_v7());
    // The user's own requests, as the API records them: with their client's address and agent.
    let request = |actor: Actor| {
        CommandMetadata::new_request(actor)
            .with_client(Some(CLIENT_IP.into()), Some(USER_AGENT.into()))
    };
    let register = UserCommand::Register {
        user_id: user,
        email: EMAIL.into(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        verification_token_hash: hash_token("verify"),
        verification_expires_at: Utc::now() + chrono::Duration::days(1),
        role: Role::User,
    };
    let users = store.users();
    users
        .execute(&user.to_string(), register, &request(Actor::System))
        .await
        .expect("register");
    let key = ApiKeyId::from_uuid(Uuid::now_v7());
    let key_hash = hash_token("fg_live_benchkey_secret").into_inner();
    let issue = UserCommand::IssueApiKey {
        key_id: key,
        name: "ci".into(),
        prefix: "fg_live_".into(),
        key_hash: ApiKeyHash::new(key_hash.clone()),
        scopes: vec!["videos:read".into(), "videos:write".into()],
    };
    users
        .execute(&user.to_string(), issue, &request(Actor::User(user)))
        .await
        .expect("issue key");
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&user.to_string(), grant, &system)
        .await
        .expect("grant");

    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner: user,
        prompt: PROMPT.into(),
        negative_prompt: Some("blurry".into()),
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "720p".into(),
        image_id: None,
        seed: Some(7),
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    request_video(store, video, spec, &request(Actor::User(user)), None)
        .await
        .expect("request");
    let steps = [
        VideoCommand::StartSubmission {
            attempt: 1,
            provider: ProviderKind::Simulator,
            model: "simulator-v1".into(),
        },
        VideoCommand::MarkSubmitted {
            provider_job_id: "sim-job-1".into(),
        },
        VideoCommand::RecordProgress { percent: 50 },
        VideoCommand::MarkGenerated,
        VideoCommand::RecordStored {
            blob_key: format!("videos/{video}.mp4"),
            bytes: 1_234_567,
            sha256: "ab".repeat(32),
            duration_ms: 4000,
            width: 1280,
            height: 720,
        },
        VideoCommand::Complete {
            final_cost: Credits::new(4),
        },
    ];
    for step in steps {
        store
            .videos()
            .execute(&video.to_string(), step, &system)
            .await
            .expect("video step");
    }
    let capture = CreditCommand::Capture {
        video_id: video,
        amount: Credits::new(4),
    };
    store
        .credits()
        .execute(&user.to_string(), capture, &system)
        .await
        .expect("capture");

    let sha256 = "cd".repeat(32);
    let image = ImageId::for_content(user, &sha256);
    let upload = ImageCommand::Upload {
        image_id: image,
        owner: user,
        sha256,
        content_type: ImageContentType::Jpeg,
        bytes: 123_456,
        width: 400,
        height: 600,
        orientation: 1,
        exif: ImageExif {
            camera_make: Some("Framegate Optics".into()),
            camera_model: None,
            taken_at: None,
        },
        blob_key: format!("images/{user}/{image}/original.jpg"),
        thumbnail_key: format!("images/{user}/{image}/thumbnail.jpg"),
        moderation: ModerationDecision::allow(),
    };
    store
        .images()
        .execute(&image.to_string(), upload, &request(Actor::User(user)))
        .await
        .expect("upload");
    StoryIds {
        user,
        key,
        key_hash,
        video,
        image,
    }
}

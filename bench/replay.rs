//! Replay benchmark: rebuilding every read model from a million events (run:
//! `cargo bench --bench replay`), printing events/s against the 50,000 target.
//!
//! The events are real ones multiplied: one customer's story (registration, API key, credits
//! granted, reserved and captured, a video through its whole pipeline, an image upload) is
//! written through the command path, then copied in SQL with fresh ids, emails and key hashes
//! until the log holds FRAMEGATE_BENCH_EVENTS (1000000) events. The live checkpoints are then
//! set to the head (the live tables stay empty) and `replay --all` rebuilds, compares and swaps.

use std::time::Instant;

use chrono::Utc;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    hash_token, ApiKeyHash, ApiKeyId, CreditCommand, Credits, ImageCommand, ImageContentType,
    ImageExif, ImageId, ModerationDecision, PasswordHash, ProviderKind, ProviderPreference, Role,
    UserCommand, UserId, VideoCommand, VideoId, VideoSpec,
};
use framegate_projections::read_models::READ_MODELS;
use framegate_projections::replay::{self, ReplayOptions, Silent};
use sqlx::PgPool;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let events: i64 = std::env::var("FRAMEGATE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batch: i64 = std::env::var("FRAMEGATE_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let db = TestDatabase::with_pool_size(16).await;
    let store = EventStore::new(db.pool.clone());

    println!("== replay of all read models: {events} events ==");
    let started = Instant::now();
    let ids = story(&store).await;
    let stored = multiply(&db.pool, &ids, events).await;
    println!(
        "seeded {stored} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for name in READ_MODELS {
        sqlx::query(
            "INSERT INTO subscription_checkpoints (name, last_tx_id, last_position, events_handled)
             SELECT $1, tx_id, global_position, $2 FROM events
              ORDER BY tx_id DESC, global_position DESC LIMIT 1
             ON CONFLICT (name) DO UPDATE SET last_tx_id = EXCLUDED.last_tx_id,
                 last_position = EXCLUDED.last_position",
        )
        .bind(name)
        .bind(stored)
        .execute(&db.pool)
        .await
        .expect("checkpoint");
    }

    let models = replay::all_models(&db.pool).expect("models");
    let options = ReplayOptions {
        batch_size: batch,
        ..ReplayOptions::default()
    };
    let report = replay::replay(&db.pool, &models, &options, &Silent)
        .await
        .expect("replay");
    assert!(report.finished && report.swapped);
    for model in &report.models {
        let rows: i64 = model.tables.iter().map(|t| t.rebuilt_rows).sum();
        println!("{:<16} {:>9} rows", model.name, rows);
    }
    println!(
        "rebuilt all {} read models from {} events in {:.2} s (build, compare, swap): {:>8.0} events/s   (target >= 50000)",
        models.len(),
        report.events_read,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
}

/// The ids of the template story, to be replaced in each copy.
struct StoryIds {
    user: UserId,
    key: ApiKeyId,
    key_hash: String,
    video: VideoId,
    image: ImageId,
}

async fn story(store: &EventStore) -> StoryIds {
    let system = CommandMetadata::new_request(Actor::System);
    let user = UserId::from_uuid(Uuid::now_v7());
    let register = UserCommand::Register {
        user_id: user,
        email: "bench@example.com".into(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        verification_token_hash: hash_token("verify"),
        verification_expires_at: Utc::now() + chrono::Duration::days(1),
        role: Role::User,
    };
    let users = store.users();
    users
        .execute(&user.to_string(), register, &system)
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
        .execute(&user.to_string(), issue, &system)
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
        prompt: "a paper boat drifting down a rainy street at dusk, cinematic".into(),
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
    request_video(
        store,
        video,
        spec,
        &CommandMetadata::new_request(Actor::User(user)),
        None,
    )
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
        .execute(&image.to_string(), upload, &system)
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

/// Copies the story until the log holds `total` events; returns the count stored.
async fn multiply(pool: &PgPool, ids: &StoryIds, total: i64) -> i64 {
    let per_story: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count");
    let stories = (total / per_story).max(1);
    // 4,000 stories (52,000 events) per statement and transaction.
    let chunk = 4000;
    let mut done = 1;
    while done < stories {
        let n = chunk.min(stories - done);
        // Every template id, the key hash and the email replaced by this copy's own.
        let fresh = |expr: &str| {
            format!(
                "replace(replace(replace(replace(replace(replace({expr}, $3, id.u), $4, id.k),
                 $5, id.v), $6, id.i), $8, id.h), 'bench@example.com', id.email)"
            )
        };
        sqlx::query(&format!(
            "WITH template AS (SELECT * FROM events WHERE global_position <= $7)
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             SELECT t.aggregate_type, {}, t.sequence, t.event_type, t.event_version,
                    ({})::jsonb, ({})::jsonb
               FROM generate_series($1::bigint, $1 + $2 - 1) g
              CROSS JOIN template t
              CROSS JOIN LATERAL (
                    SELECT md5('u' || g)::uuid::text AS u, md5('k' || g)::uuid::text AS k,
                           md5('v' || g)::uuid::text AS v, md5('i' || g)::uuid::text AS i,
                           md5('h' || g) || md5('H' || g) AS h,
                           'bench' || g || '@example.com' AS email) id
              ORDER BY g, t.global_position",
            fresh("t.aggregate_id"),
            fresh("t.payload::text"),
            fresh("t.metadata::text"),
        ))
        .bind(done)
        .bind(n)
        .bind(ids.user.to_string())
        .bind(ids.key.to_string())
        .bind(ids.video.to_string())
        .bind(ids.image.to_string())
        .bind(per_story)
        .bind(&ids.key_hash)
        .execute(pool)
        .await
        .expect("multiply");
        done += n;
    }
    sqlx::query("ANALYZE events")
        .execute(pool)
        .await
        .expect("analyze");
    per_story * stories
}

//! Replay after an erasure (ADR 0043): the log's personal fields of the erased user open as
//! `[erased]`, so rebuilding the read models gives the live ones, and those differ from the
//! read models before the erasure only in that user's personal fields.

use crate::replay::{mixed_workload, public_digest, replay_all};
use crate::support::{catch_up, credit_command, register, system};

use framegate_commands::erasure::erase;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ErasedBy, ProviderPreference, UserId, VideoId, VideoSpec,
};
use framegate_projections::replay::ReplayOptions;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Digests of the read models (the log and the key tables change by the erasure itself).
async fn read_models(pool: &PgPool) -> Vec<(String, String)> {
    let mut tables = public_digest(pool).await;
    tables.retain(|(table, _)| {
        ![
            "events",
            "data_keys",
            "email_claims",
            "subscription_checkpoints",
        ]
        .contains(&table.as_str())
    });
    tables
}

/// The columns of a video row that its owner's erasure changes: the prompts, and the status
/// of a video still queued (the erasure cancels it).
const VIDEO_ERASED: &[&str] = &[
    "prompt",
    "negative_prompt",
    "status",
    "updated_at",
    "completed_at",
    "cancel_charged",
    "version",
];

/// A row of `table` as JSON without the `dropped` columns.
async fn row(pool: &PgPool, table: &str, id: Uuid, dropped: &[&str]) -> Value {
    let mut row: Value = sqlx::query_scalar(&format!(
        "SELECT to_jsonb(t) FROM {table} t WHERE t.id = $1"
    ))
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("row");
    for column in dropped {
        row.as_object_mut().expect("object").remove(*column);
    }
    row
}

async fn requested(store: &EventStore, owner: UserId) -> VideoId {
    let grant = CreditCommand::Grant {
        amount: Credits::new(50),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    credit_command(store, owner, grant, &system()).await;
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "my neighbour's house at night".into(),
        negative_prompt: Some("their car".into()),
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    let meta = CommandMetadata::new_request(Actor::User(owner))
        .with_client(Some("192.0.2.44".into()), Some("replay-agent/1".into()));
    request_video(store, video, spec, &meta, None)
        .await
        .expect("video request");
    video
}

#[tokio::test]
async fn replay_after_an_erasure_gives_the_read_models_of_before_but_the_erased_fields() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    mixed_workload(&store, 3).await;
    let (owner, _) = register(&store, "forget-me@example.com").await;
    let video = requested(&store, owner).await;
    catch_up(&db.pool).await;
    let before = read_models(&db.pool).await;
    let user_before = row(
        &db.pool,
        "users",
        owner.as_uuid(),
        &["email", "disabled", "updated_at", "version"],
    )
    .await;
    let video_before = row(&db.pool, "videos", video.as_uuid(), VIDEO_ERASED).await;

    erase(&store, owner, ErasedBy::Admin, &system())
        .await
        .expect("erase");
    catch_up(&db.pool).await;
    let after = read_models(&db.pool).await;
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(
        changed,
        ["users", "videos"],
        "only the erased user's rows change"
    );
    assert_eq!(
        row(
            &db.pool,
            "users",
            owner.as_uuid(),
            &["email", "disabled", "updated_at", "version"]
        )
        .await,
        user_before
    );
    assert_eq!(
        row(&db.pool, "videos", video.as_uuid(), VIDEO_ERASED).await,
        video_before,
        "the video stays, as an anonymous fact"
    );
    let erased = row(&db.pool, "videos", video.as_uuid(), &[]).await;
    assert_eq!(erased["prompt"], "[erased]");
    assert_eq!(erased["negative_prompt"], "[erased]");
    assert_eq!(erased["status"], "cancelled", "queued work is cancelled");
    assert_eq!(
        row(&db.pool, "users", owner.as_uuid(), &[]).await["email"],
        "[erased]"
    );

    let report = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(
        report.finished && report.swapped && report.identical(),
        "{report:?}"
    );
    assert_eq!(read_models(&db.pool).await, after);
}

/// A replay that projected the user's request into its copy before the erasure (in clear:
/// the key was still there) and resumes after it must not swap the prompt back in: the
/// videos projector applies `UserErased` to the copy as the erasure did to the live rows.
#[tokio::test]
async fn a_replay_interrupted_across_an_erasure_does_not_bring_prompts_back() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (owner, _) = register(&store, "interrupted@example.com").await;
    let video = requested(&store, owner).await;
    let through_request: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    mixed_workload(&store, 1).await;
    catch_up(&db.pool).await;

    let first = replay_all(
        &db.pool,
        ReplayOptions {
            batch_size: 1,
            stop_after: Some(through_request as u64),
            ..ReplayOptions::default()
        },
    )
    .await;
    assert!(!first.finished && !first.swapped, "{first:?}");
    let copied: String =
        sqlx::query_scalar("SELECT prompt FROM replay_videos.videos WHERE id = $1")
            .bind(video.as_uuid())
            .fetch_one(&db.pool)
            .await
            .expect("the copy holds the video");
    assert_eq!(copied, "my neighbour's house at night", "copied in clear");

    erase(&store, owner, ErasedBy::Owner, &system())
        .await
        .expect("erase");
    catch_up(&db.pool).await;
    let second = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(second.finished && second.swapped, "{second:?}");
    let swapped = row(&db.pool, "videos", video.as_uuid(), &[]).await;
    assert_eq!(swapped["prompt"], "[erased]");
    assert_eq!(swapped["negative_prompt"], "[erased]");
    assert!(
        second.identical(),
        "the copy equals the live rows: {second:?}"
    );
}

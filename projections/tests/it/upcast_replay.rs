//! A log holding `VideoRequested` 1.0 rows (stored before 2.0) beside 2.0 rows replays to the
//! same read models as a log holding only 2.0, and aggregates load from it: every reader goes
//! through the upcaster chain (`framegate_domain::versions`).

use crate::replay::{mixed_workload, public_digest, replay_all};
use crate::support::catch_up;

use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::EventStore;
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{CreditCommand, Credits, ProviderPreference, VideoId, VideoSpec};
use framegate_projections::replay::ReplayOptions;
use framegate_projections::{audit, read_models};
use uuid::Uuid;

use crate::support::{credit_command, register, system};
use sqlx::PgPool;

/// Rewrites every other `VideoRequested` row into the 1.0 format, as rows written before the
/// 2.0 deploy are: no `generate_audio` in the spec, version `1.0`. The log is append-only, so
/// the test lifts the guard for this one statement (its own database).
async fn store_half_the_requests_as_version_1(pool: &PgPool) -> Vec<String> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .expect("lift the guard");
    let rewritten: Vec<String> = sqlx::query_scalar(
        "UPDATE events
            SET event_version = '1.0',
                payload = payload #- '{VideoRequested,spec,generate_audio}'
          WHERE event_type = 'VideoRequested'
            AND global_position % 2 = 0
            AND payload -> 'VideoRequested' -> 'spec' -> 'generate_audio' = 'false'
         RETURNING aggregate_id",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("rewrite");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .expect("guard back");
    tx.commit().await.expect("commit");
    rewritten
}

/// Every public table but the log itself (which the rewrite changed on purpose).
async fn read_models(pool: &PgPool) -> Vec<(String, String)> {
    let mut tables = public_digest(pool).await;
    tables.retain(|(table, _)| table != "events");
    tables
}

/// A 2.0 request with a soundtrack, which the 1.0 format could not express.
async fn request_with_audio(store: &EventStore) -> VideoId {
    let (owner, _) = register(store, "audio@example.com").await;
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    credit_command(store, owner, grant, &system()).await;
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "waves on a pebble beach".into(),
        negative_prompt: None,
        provider: ProviderPreference::Auto,
        model: Some("veo-3".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "720p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(4),
        generate_audio: true,
        external_id: None,
        webhook: None,
    };
    let meta = CommandMetadata::new_request(Actor::User(owner));
    request_video(store, video, spec, &meta, None)
        .await
        .expect("video request");
    video
}

async fn count_versions(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event_version = '1.0'),
                count(*) FILTER (WHERE event_version = '2.0')
           FROM events WHERE event_type = 'VideoRequested'",
    )
    .fetch_one(pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn a_log_with_version_1_and_2_requests_replays_to_the_read_models_of_version_2_only() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    mixed_workload(&store, 4).await;
    let with_audio = request_with_audio(&store).await;
    catch_up(&db.pool).await;
    assert_eq!(count_versions(&db.pool).await.0, 0, "new requests are 2.0");
    let only_version_2 = read_models(&db.pool).await;

    let rewritten = store_half_the_requests_as_version_1(&db.pool).await;
    let (v1, v2) = count_versions(&db.pool).await;
    assert!(
        v1 > 0 && v2 > 0,
        "both versions stored: {v1} × 1.0, {v2} × 2.0"
    );
    assert_eq!(rewritten.len() as i64, v1);

    let report = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(
        report.finished && report.swapped && report.identical(),
        "{report:?}"
    );
    assert_eq!(read_models(&db.pool).await, only_version_2);

    let audio: Vec<(bool, i64)> =
        sqlx::query_as("SELECT generate_audio, count(*) FROM videos GROUP BY 1 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .expect("audio");
    assert_eq!(
        audio.last(),
        Some(&(true, 1)),
        "only the 2.0 request with audio"
    );
    let row = read_models::videos::get(&db.pool, with_audio)
        .await
        .expect("get")
        .expect("row");
    assert!(row.generate_audio);

    // Aggregates load through the same chain (a fresh store: nothing cached).
    let fresh = EventStore::new(db.pool.clone());
    for id in &rewritten {
        let video = fresh.videos().load(id).await.expect("a 1.0 request loads");
        let spec = video.spec().expect("requested");
        assert!(!spec.generate_audio, "1.0 upcasts to no audio");
        // The audit view shows the current version too.
        let history = audit::stream(&db.pool, "Video", id).await.expect("audit");
        let requested = history
            .iter()
            .find(|entry| entry.event_type == "VideoRequested")
            .expect("requested");
        assert_eq!(requested.event_version, "2.0");
        assert_eq!(
            requested.payload["VideoRequested"]["spec"]["generate_audio"],
            false
        );
    }
}

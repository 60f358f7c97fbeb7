//! Credit accounts load from verified snapshots (`framegate_commands::snapshots`): whatever
//! the snapshot, a load equals the account rebuilt from every event, a long stream is read
//! from its snapshot on, and a snapshot that is stale, of another version or undecodable
//! changes nothing but speed.

use framegate_commands::store::SNAPSHOT_EVERY;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditAccount, CreditCommand, Credits, ProviderPreference, UserId, VideoId, VideoSpec,
};
use sqlx::PgPool;
use uuid::Uuid;

fn meta() -> CommandMetadata {
    CommandMetadata::new_request(Actor::System)
}

async fn grant(store: &EventStore, owner: UserId, amount: i64) {
    store
        .credits()
        .execute(
            &owner.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(amount),
                reason: "test".into(),
                granted_by: "system".into(),
            },
            &meta(),
        )
        .await
        .expect("grant");
}

/// Requests a video (reserve + request in one unit) and settles it: captured, partly
/// captured or released, by turn.
async fn video(store: &EventStore, owner: UserId, turn: usize) {
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "a snapshot of a lighthouse".into(),
        negative_prompt: None,
        provider: ProviderPreference::Simulator,
        model: None,
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
    request_video(store, video, spec, &meta(), None)
        .await
        .expect("request");
    let settle = match turn % 3 {
        0 => CreditCommand::Capture {
            video_id: video,
            amount: Credits::new(4),
        },
        1 => CreditCommand::Capture {
            video_id: video,
            amount: Credits::new(3),
        },
        _ => CreditCommand::Release { video_id: video },
    };
    // Twice: a settlement handled again is a no-op, from a snapshot too.
    for _ in 0..2 {
        store
            .credits()
            .execute(&owner.to_string(), settle.clone(), &meta())
            .await
            .expect("settle");
    }
}

/// The loaded account and the one rebuilt from every event, as JSON (every field).
async fn both(store: &EventStore, owner: UserId) -> (serde_json::Value, serde_json::Value) {
    let loaded = store
        .credits()
        .load(&owner.to_string())
        .await
        .expect("load");
    let (replayed, _) = store
        .credits()
        .replay(&owner.to_string())
        .await
        .expect("replay");
    (
        serde_json::to_value(loaded).expect("json"),
        serde_json::to_value(replayed).expect("json"),
    )
}

async fn snapshot_sequence(pool: &PgPool, owner: UserId) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT sequence FROM aggregate_snapshots
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1",
    )
    .bind(owner.to_string())
    .fetch_optional(pool)
    .await
    .expect("snapshot")
}

async fn events(pool: &PgPool, owner: UserId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(owner.to_string())
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_long_account_loads_from_its_snapshot_and_equals_its_full_replay() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    grant(&store, owner, 10_000).await;
    assert_eq!(
        snapshot_sequence(&db.pool, owner).await,
        None,
        "short: none"
    );

    for turn in 0..90 {
        video(&store, owner, turn).await;
        let (loaded, replayed) = both(&store, owner).await;
        assert_eq!(loaded, replayed, "after video {turn}");
    }
    let total = events(&db.pool, owner).await;
    assert_eq!(
        total,
        1 + 90 * 2,
        "grant, then a reservation and a settlement each"
    );
    let taken = snapshot_sequence(&db.pool, owner)
        .await
        .expect("a snapshot");
    assert!(
        taken >= SNAPSHOT_EVERY as i64 && taken <= total,
        "snapshot at {taken} of {total}"
    );
    // Each load now reads only the events after the snapshot.
    assert!(
        total - taken < SNAPSHOT_EVERY as i64 + 2,
        "{} events past the snapshot",
        total - taken
    );
    let account: CreditAccount = store
        .credits()
        .load(&owner.to_string())
        .await
        .expect("load");
    // 30 captured at 4, 30 at 3, 30 released.
    assert_eq!(account.balance(), Credits::new(10_000 - 30 * 4 - 30 * 3));
    assert_eq!(account.reserved(), Credits::ZERO);
}

#[tokio::test]
async fn a_snapshot_of_another_version_or_that_does_not_decode_is_ignored_and_replaced() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    grant(&store, owner, 10_000).await;
    for turn in 0..(SNAPSHOT_EVERY / 2 + 1) {
        video(&store, owner, turn).await;
    }
    let honest = both(&store, owner).await.1;
    assert!(snapshot_sequence(&db.pool, owner).await.is_some());

    // A snapshot from an older shape of the struct: same sequence, wrong figures.
    sqlx::query(
        "UPDATE aggregate_snapshots
            SET version = version - 1, state = jsonb_set(state, '{balance}', '999999')
          WHERE aggregate_id = $1",
    )
    .bind(owner.to_string())
    .execute(&db.pool)
    .await
    .expect("age");
    let (loaded, _) = both(&store, owner).await;
    assert_eq!(loaded, honest, "another version is ignored");
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM aggregate_snapshots WHERE aggregate_id = $1")
            .bind(owner.to_string())
            .fetch_one(&db.pool)
            .await
            .expect("version");
    assert_eq!(version, CreditAccount::STATE_VERSION, "and replaced");

    sqlx::query(
        "UPDATE aggregate_snapshots SET state = '{\"balance\": \"lots\"}' WHERE aggregate_id = $1",
    )
    .bind(owner.to_string())
    .execute(&db.pool)
    .await
    .expect("corrupt");
    let (loaded, _) = both(&store, owner).await;
    assert_eq!(loaded, honest, "an undecodable snapshot is ignored");
    let balance: serde_json::Value = sqlx::query_scalar(
        "SELECT state -> 'balance' FROM aggregate_snapshots WHERE aggregate_id = $1",
    )
    .bind(owner.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("balance");
    assert_eq!(
        balance, honest["balance"],
        "and replaced by the real figures"
    );

    // And a command decided on such a load is decided on the real figures.
    let reserve_all = CreditCommand::Reserve {
        video_id: VideoId::from_uuid(Uuid::now_v7()),
        amount: Credits::new(999_999),
    };
    let refused = store
        .credits()
        .execute(&owner.to_string(), reserve_all, &meta())
        .await;
    assert!(refused.is_err(), "no credits from a snapshot");
}

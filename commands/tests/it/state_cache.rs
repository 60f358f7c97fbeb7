//! A process keeps the credit account states its commands committed (`cache`), so a video
//! request does not read the account. Another process moving the account on must never make
//! a kept state decide: the append's optimistic check refuses it, and the command is decided
//! again against the account as stored.

use framegate_commands::retry::conflicts_retried;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::{request_video, RequestError};
use framegate_commands::{Actor, CommandError, CommandMetadata, EventStore};
use framegate_domain::{
    CreditAccount, CreditCommand, CreditError, Credits, ProviderPreference, UserId, VideoId,
    VideoSpec,
};
use uuid::Uuid;

fn meta() -> CommandMetadata {
    CommandMetadata::new_request(Actor::System)
}

fn spec(owner: UserId, cost: i64) -> VideoSpec {
    VideoSpec {
        owner,
        prompt: "a lighthouse, twice".into(),
        negative_prompt: None,
        provider: ProviderPreference::Simulator,
        model: None,
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(cost),
        generate_audio: false,
        external_id: None,
        webhook: None,
    }
}

async fn request(store: &EventStore, owner: UserId, cost: i64) -> Result<VideoId, RequestError> {
    let video = VideoId::from_uuid(Uuid::now_v7());
    request_video(store, video, spec(owner, cost), &meta(), None)
        .await
        .map(|_| video)
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

/// The account as stored, and as rebuilt from every event.
async fn stored(store: &EventStore, owner: UserId) -> CreditAccount {
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
    assert_eq!(loaded, replayed);
    loaded
}

#[tokio::test]
async fn a_kept_state_that_another_process_moved_on_is_decided_again_from_the_store() {
    let db = TestDatabase::new().await;
    // Two processes on one database, each with its own kept states.
    let here = EventStore::new(db.pool.clone());
    let there = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    grant(&here, owner, 10).await;

    // Here keeps the account at 10 − 4 reserved.
    request(&here, owner, 4).await.expect("first request");
    // There spends the rest: nothing is left.
    request(&there, owner, 6).await.expect("second request");

    // Here still keeps "6 available": it must learn the truth, not overdraw.
    let retried = conflicts_retried();
    match request(&here, owner, 4).await {
        Err(RequestError::Credits(CommandError::Domain(CreditError::InsufficientCredits {
            requested,
            available,
        }))) => {
            assert_eq!(requested, Credits::new(4));
            assert_eq!(
                available,
                Credits::ZERO,
                "decided against the stored account"
            );
        }
        other => panic!("expected insufficient credits, got {other:?}"),
    }
    assert!(
        conflicts_retried() > retried,
        "the kept state was tried, refused by the append, and dropped"
    );
    let account = stored(&here, owner).await;
    assert_eq!(account.reserved(), Credits::new(10));
    assert_eq!(account.available(), Credits::ZERO);

    // A command through the framework (a grant) after the other process moved the account
    // applies once, on the stored state, and the next request here starts from it.
    grant(&there, owner, 5).await;
    grant(&here, owner, 5).await;
    request(&here, owner, 7)
        .await
        .expect("request after grants");
    request(&there, owner, 3).await.expect("request there");
    let account = stored(&there, owner).await;
    assert_eq!(account.balance(), Credits::new(20));
    assert_eq!(account.reserved(), Credits::new(20));
    assert!(
        matches!(
            request(&here, owner, 1).await,
            Err(RequestError::Credits(CommandError::Domain(
                CreditError::InsufficientCredits { .. }
            )))
        ),
        "nothing left, whatever this process kept"
    );
}

#[tokio::test]
async fn requests_in_one_process_take_turns_on_the_kept_state_and_never_overdraw() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    grant(&store, owner, 30).await;
    // 40 concurrent requests of 1 credit each against 30: exactly 30 pass.
    let results = futures::future::join_all((0..40).map(|_| request(&store, owner, 1))).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 30);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                refused,
                RequestError::Credits(CommandError::Domain(
                    CreditError::InsufficientCredits { .. }
                ))
            ),
            "{refused:?}"
        );
    }
    let account = stored(&store, owner).await;
    assert_eq!(account.reserved(), Credits::new(30));
}

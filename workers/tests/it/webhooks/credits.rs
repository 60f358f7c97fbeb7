//! Credit events as webhooks: `credits.purchased` for a purchase, `credits.low` once per fall
//! of the available balance below the owner's threshold (100 credits unless they chose
//! another), and again after it climbed back and fell again.

use std::time::Duration;

use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{CreditCommand, Credits, VideoId};
use framegate_projections::Subscription;
use framegate_workers::webhooks::{WebhookEnqueuer, SUBSCRIPTION};
use uuid::Uuid;

use super::rig::Rig;

async fn credit(rig: &Rig, command: CreditCommand) {
    rig.store
        .credits()
        .execute(
            &rig.owner.to_string(),
            command,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("credit command");
}

async fn reserve(rig: &Rig, amount: i64) -> VideoId {
    let video_id = VideoId::from_uuid(Uuid::now_v7());
    let amount = Credits::new(amount);
    credit(rig, CreditCommand::Reserve { video_id, amount }).await;
    video_id
}

async fn drain(rig: &Rig) {
    Subscription::new(SUBSCRIPTION, rig.db.pool.clone())
        .drain(&WebhookEnqueuer::new(Duration::from_secs(3600)))
        .await
        .expect("drain");
}

async fn bodies(rig: &Rig, endpoint: Uuid) -> Vec<serde_json::Value> {
    let bodies: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY seq",
    )
    .bind(endpoint)
    .fetch_all(&rig.db.pool)
    .await
    .expect("bodies");
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("json"))
        .collect()
}

#[tokio::test]
async fn a_fall_below_the_threshold_is_delivered_once_per_fall_and_purchases_are_delivered() {
    let rig = Rig::new().await;
    let (low, _) = rig.endpoint("/low", Some(&["credits.low"])).await;
    let (bought, _) = rig.endpoint("/bought", Some(&["credits.purchased"])).await;
    let (videos, _) = rig.endpoint("/videos", None).await;

    // 10,000 granted by the rig: down to 150 (above 100), then 60, then 20.
    let first = reserve(&rig, 9_850).await;
    reserve(&rig, 90).await;
    reserve(&rig, 40).await;
    // Back above, and down again.
    credit(&rig, CreditCommand::Release { video_id: first }).await;
    reserve(&rig, 9_800).await;
    credit(
        &rig,
        CreditCommand::Purchase {
            amount: Credits::new(500),
            payment_reference: "pay_1".into(),
            payment: None,
        },
    )
    .await;
    drain(&rig).await;

    let lows = bodies(&rig, low).await;
    let seen: Vec<(i64, i64)> = lows
        .iter()
        .map(|b| {
            assert_eq!(b["type"], "credits.low");
            assert_eq!(b["data"]["threshold"], 100);
            assert_eq!(b["data"]["user_id"], rig.owner.to_string());
            let available = |f: &str| b["data"][f].as_i64().expect("a number");
            (available("previous_available"), available("available"))
        })
        .collect();
    assert_eq!(seen, vec![(150, 60), (9_870, 70)], "{lows:?}");
    assert!(lows
        .iter()
        .all(|b| b["id"].as_str().is_some_and(|id| id.starts_with("msg_"))));

    let purchases = bodies(&rig, bought).await;
    assert_eq!(purchases.len(), 1, "{purchases:?}");
    assert_eq!(purchases[0]["type"], "credits.purchased");
    assert_eq!(purchases[0]["data"]["credits"], 500);
    assert_eq!(purchases[0]["data"]["payment_reference"], "pay_1");
    assert!(bodies(&rig, videos).await.is_empty(), "not subscribed");
}

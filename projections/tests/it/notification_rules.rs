//! The reads the notification mails and the `credits.low` webhook share, against real
//! Postgres: the available balance around a credit event (from the ledger, refusing to guess
//! while the ledger lags), the low-credit crossing, and a user's preferences as of an event.

use crate::support;

use framegate_commands::testing::TestDatabase;
use framegate_commands::EventStore;
use framegate_domain::{
    CreditCommand, Credits, NotificationPreferences, PreferencesChange, UserCommand, VideoId,
};
use framegate_projections::credits_low::{self, AvailableChange, LowCredit};
use framegate_projections::log::{read_batch, Reads};
use framegate_projections::read_models::users;
use framegate_projections::{preferences, LogPosition, StoredEvent};
use sqlx::PgPool;
use uuid::Uuid;

use support::{catch_up, credit_command, register, system, user_command};

/// Every event in the log, in log order: read again until all are readable (the log stops at
/// the oldest transaction running in the cluster, other tests' too).
async fn log(pool: &PgPool) -> Vec<StoredEvent> {
    let mut conn = pool.acquire().await.expect("conn");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let events = read_batch(&mut conn, LogPosition::START, 10_000, &Reads::EVERYTHING)
            .await
            .expect("log");
        if events.len() as i64 == total {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn reserve(n: u128, amount: i64) -> CreditCommand {
    CreditCommand::Reserve {
        video_id: VideoId::from_uuid(Uuid::from_u128(n)),
        amount: Credits::new(amount),
    }
}

#[tokio::test]
async fn the_balance_around_a_credit_event_comes_from_the_ledger_once_it_has_caught_up() {
    let db = TestDatabase::new().await;
    // A store without inline read models: the ledger waits for its projector.
    let store = EventStore::new(db.pool.clone());
    let (user, _) = register(&store, "ledger@example.com").await;
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    credit_command(&store, user, grant, &system()).await;
    credit_command(&store, user, reserve(1, 30), &system()).await;
    let credit_events: Vec<StoredEvent> = log(&db.pool)
        .await
        .into_iter()
        .filter(|e| e.aggregate_type == "CreditAccount")
        .collect();
    assert_eq!(credit_events.len(), 2);

    let mut conn = db.pool.acquire().await.expect("conn");
    let lagging = credits_low::available_around(&mut conn, &credit_events[1])
        .await
        .expect_err("the ledger has no rows yet");
    assert!(
        framegate_projections::failure::is_transient(lagging.as_ref()),
        "worth waiting for: {lagging}"
    );

    catch_up(&db.pool).await;
    let around = |event| {
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            credits_low::available_around(&mut conn, event)
                .await
                .expect("around")
        }
    };
    assert_eq!(
        around(&credit_events[0]).await,
        Some(AvailableChange {
            before: Credits::new(0),
            after: Credits::new(100)
        })
    );
    assert_eq!(
        around(&credit_events[1]).await,
        Some(AvailableChange {
            before: Credits::new(100),
            after: Credits::new(70)
        })
    );
    let not_credit = log(&db.pool).await.remove(0);
    assert_eq!(not_credit.aggregate_type, "User");
    assert_eq!(around(&not_credit).await, None);
}

#[tokio::test]
async fn only_the_events_that_take_the_balance_below_the_threshold_cross_it() {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let (user, _) = register(&store, "crossing@example.com").await;
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    credit_command(&store, user, grant, &system()).await;
    for command in [
        reserve(1, 30), // 70
        reserve(2, 20), // 50: crosses 60
        reserve(3, 10), // 40
        CreditCommand::Release {
            video_id: VideoId::from_uuid(Uuid::from_u128(2)),
        }, // 60
        reserve(4, 1),  // 59: crosses again
        CreditCommand::Capture {
            video_id: VideoId::from_uuid(Uuid::from_u128(1)),
            amount: Credits::new(10),
        }, // 79: the uncharged 20 come back
        reserve(5, 79), // 0: crosses again
    ] {
        credit_command(&store, user, command, &system()).await;
    }
    let mut conn = db.pool.acquire().await.expect("conn");
    let mut crossings = Vec::new();
    for event in log(&db.pool).await {
        if let Some(low) = credits_low::crossing(&mut conn, &event, Credits::new(60))
            .await
            .expect("crossing")
        {
            crossings.push(low);
        }
    }
    let low = |before, after| LowCredit {
        threshold: Credits::new(60),
        before: Credits::new(before),
        after: Credits::new(after),
    };
    assert_eq!(crossings, vec![low(70, 50), low(60, 59), low(79, 0)]);
}

#[tokio::test]
async fn preferences_as_of_an_event_are_the_last_set_before_it() {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let (user, registered) = register(&store, "asof@example.com").await;
    let first = PreferencesChange {
        video_completed: Some(true),
        credits_low_threshold: Some(Credits::new(5)),
        ..PreferencesChange::default()
    };
    let set_first = user_command(
        &store,
        user,
        UserCommand::ChangeNotificationPreferences { change: first },
    )
    .await;
    let second = PreferencesChange {
        video_completed: Some(false),
        credits_low: Some(true),
        ..PreferencesChange::default()
    };
    let set_second = user_command(
        &store,
        user,
        UserCommand::ChangeNotificationPreferences { change: second },
    )
    .await;
    let later = credit_command(&store, user, reserve_grant(), &system()).await;

    let mut conn = db.pool.acquire().await.expect("conn");
    let id = user.as_uuid();
    assert_eq!(
        preferences::as_of(&mut conn, id, registered)
            .await
            .expect("as of"),
        NotificationPreferences::default()
    );
    let first_set = NotificationPreferences {
        video_completed: true,
        credits_low_threshold: Credits::new(5),
        ..NotificationPreferences::default()
    };
    let second_set = NotificationPreferences {
        video_completed: false,
        credits_low: true,
        ..first_set
    };
    for (position, expected) in [
        (set_first, NotificationPreferences::default()),
        (set_second, first_set),
        (later, second_set),
    ] {
        assert_eq!(
            preferences::as_of(&mut conn, id, position)
                .await
                .expect("as of"),
            expected
        );
    }
    // The read model shows the current set.
    let row = users::get(&db.pool, user).await.expect("get").expect("row");
    assert_eq!(row.notification_preferences(), second_set);
}

fn reserve_grant() -> CreditCommand {
    CreditCommand::Grant {
        amount: Credits::new(1),
        reason: "later".into(),
        granted_by: "system".into(),
    }
}

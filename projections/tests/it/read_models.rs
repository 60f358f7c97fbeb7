//! The read models against real Postgres, fed through the real command path: commands go
//! through `EventStore`, the projectors drain the ordered log with `catch_up_all`, and the
//! assertions read through the same queries the API uses.

use crate::support;

use chrono::Utc;
use framegate_commands::testing::TestDatabase;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits, Role, UserCommand, UserId, VideoId};
use framegate_projections::read_models::{api_keys, credits, users};
use uuid::Uuid;

use support::{
    catch_up, credit_command, issue_key, key_hash, register, system, user_command, VERIFY_TOKEN,
};

#[tokio::test]
async fn registering_verifying_promoting_and_disabling_a_user_is_reflected_in_users() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (user, _) = register(&store, "  Alice@Example.COM ").await;
    catch_up(&db.pool).await;

    let row = users::get(&db.pool, user).await.expect("get").expect("row");
    assert_eq!(row.id, user.as_uuid());
    assert_eq!(row.email, "alice@example.com", "stored normalised");
    assert_eq!(row.role, "user");
    assert!(!row.email_verified);
    assert!(!row.disabled);
    let by_email = users::find_by_email(&db.pool, "alice@example.com")
        .await
        .expect("find");
    assert_eq!(by_email, Some(row.clone()));

    let verify = UserCommand::VerifyEmail {
        token: VERIFY_TOKEN.to_owned(),
    };
    user_command(&store, user, verify).await;
    let promote = UserCommand::ChangeRole { role: Role::Admin };
    user_command(&store, user, promote).await;
    catch_up(&db.pool).await;
    let row = users::get(&db.pool, user).await.expect("get").expect("row");
    assert!(row.email_verified);
    assert_eq!(row.role, "admin");
    assert!(!row.disabled);

    let disable = UserCommand::Disable {
        reason: "abuse".to_owned(),
    };
    user_command(&store, user, disable).await;
    catch_up(&db.pool).await;
    let row = users::get(&db.pool, user).await.expect("get").expect("row");
    assert!(row.disabled);
    assert!(
        row.email_verified && row.role == "admin",
        "nothing else changed"
    );

    let stranger = UserId::from_uuid(Uuid::now_v7());
    assert_eq!(users::get(&db.pool, stranger).await.expect("get"), None);
    let nobody = users::find_by_email(&db.pool, "bob@example.com").await;
    assert_eq!(nobody.expect("find"), None);
}

#[tokio::test]
async fn users_are_listed_in_registration_order_across_cursor_pages() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let mut registered = Vec::new();
    for n in 0..5 {
        registered.push(register(&store, &format!("user{n}@example.com")).await.0);
    }
    catch_up(&db.pool).await;

    let everyone = users::list(&db.pool, None, 100).await.expect("list");
    let ids: Vec<Uuid> = everyone.iter().map(|row| row.id).collect();
    let expected: Vec<Uuid> = registered.iter().map(UserId::as_uuid).collect();
    assert_eq!(ids, expected, "registration order");

    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = users::list(&db.pool, cursor, 2).await.expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some((last.created_at, last.id));
        paged.extend(page);
    }
    assert_eq!(
        paged, everyone,
        "the pages add up to the whole list, once each"
    );
}

#[tokio::test]
async fn issued_and_revoked_api_keys_are_reflected_and_disabling_the_owner_revokes_the_rest() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (user, _) = register(&store, "keys@example.com").await;
    let first = issue_key(&store, user, "ci", "fgk_first_secret").await;
    let second = issue_key(&store, user, "  laptop  ", "fgk_second_secret").await;
    user_command(&store, user, UserCommand::RevokeApiKey { key_id: first }).await;
    catch_up(&db.pool).await;

    let revoked = api_keys::find_by_hash(&db.pool, &key_hash("fgk_first_secret"))
        .await
        .expect("find")
        .expect("first key");
    assert_eq!(revoked.id, first.as_uuid());
    assert_eq!(revoked.user_id, user.as_uuid());
    assert_eq!(revoked.name, "ci");
    assert_eq!(revoked.prefix, "fgk_firs");
    assert_eq!(revoked.scopes, ["videos:read", "videos:write"]);
    let revoked_at = revoked.revoked_at.expect("the first key is revoked");
    assert!(revoked_at >= revoked.created_at);
    assert_eq!(revoked.last_used_at, None);

    // Usage is written by the API, not the projector; the query joins it in.
    let used_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("INSERT INTO api_key_usage VALUES ($1, now()) RETURNING last_used_at")
            .bind(second.as_uuid())
            .fetch_one(&db.pool)
            .await
            .expect("usage");
    let live = api_keys::find_by_hash(&db.pool, &key_hash("fgk_second_secret"))
        .await
        .expect("find")
        .expect("second key");
    assert_eq!(live.name, "laptop", "the name as the aggregate trimmed it");
    assert_eq!(live.revoked_at, None);
    assert_eq!(live.last_used_at, Some(used_at));
    let unknown = api_keys::find_by_hash(&db.pool, &key_hash("fgk_never_issued")).await;
    assert_eq!(unknown.expect("find"), None);

    let listed = api_keys::list_for_user(&db.pool, user).await.expect("list");
    let ids: Vec<Uuid> = listed.iter().map(|key| key.id).collect();
    assert_eq!(ids, [second.as_uuid(), first.as_uuid()], "newest first");

    let disable = UserCommand::Disable {
        reason: "chargeback".to_owned(),
    };
    user_command(&store, user, disable).await;
    catch_up(&db.pool).await;
    let listed = api_keys::list_for_user(&db.pool, user).await.expect("list");
    assert!(
        listed.iter().all(|key| key.revoked_at.is_some()),
        "a disabled user's keys stop working: {listed:?}"
    );
    assert_eq!(
        listed[1].revoked_at,
        Some(revoked_at),
        "an already revoked key keeps its revocation time"
    );
}

#[tokio::test]
async fn a_credit_account_and_its_ledger_follow_grants_reservations_captures_and_releases() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = UserId::from_uuid(Uuid::now_v7());
    let admin = UserId::from_uuid(Uuid::now_v7());
    let by_admin = CommandMetadata::new_request(Actor::User(admin));
    let (video_a, video_b) = (
        VideoId::from_uuid(Uuid::now_v7()),
        VideoId::from_uuid(Uuid::now_v7()),
    );

    let empty = credits::account(&db.pool, user).await.expect("account");
    assert_eq!((empty.balance, empty.reserved, empty.available), (0, 0, 0));
    assert_eq!(empty.user_id, user.as_uuid());

    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "welcome".to_owned(),
        granted_by: admin.to_string(),
    };
    credit_command(&store, user, grant, &by_admin).await;
    let purchase = CreditCommand::Purchase {
        amount: Credits::new(25),
        payment_reference: "pay_123".to_owned(),
        payment: None,
    };
    credit_command(&store, user, purchase, &system()).await;
    let reserve_a = CreditCommand::Reserve {
        video_id: video_a,
        amount: Credits::new(30),
    };
    credit_command(&store, user, reserve_a, &system()).await;
    let reserve_b = CreditCommand::Reserve {
        video_id: video_b,
        amount: Credits::new(20),
    };
    credit_command(&store, user, reserve_b, &system()).await;
    catch_up(&db.pool).await;
    let held = credits::account(&db.pool, user).await.expect("account");
    assert_eq!((held.balance, held.reserved, held.available), (125, 50, 75));

    let capture = CreditCommand::Capture {
        video_id: video_a,
        amount: Credits::new(20),
    };
    credit_command(&store, user, capture, &system()).await;
    let release = CreditCommand::Release { video_id: video_b };
    credit_command(&store, user, release, &system()).await;
    catch_up(&db.pool).await;
    let settled = credits::account(&db.pool, user).await.expect("account");
    assert_eq!(
        (settled.balance, settled.reserved, settled.available),
        (105, 0, 105)
    );

    let ledger = credits::ledger(&db.pool, user, None, 100)
        .await
        .expect("ledger");
    let movements: Vec<(&str, i64, i64, Option<Uuid>)> = ledger
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.balance_change,
                e.reserved_change,
                e.video_id,
            )
        })
        .collect();
    let (a, b) = (Some(video_a.as_uuid()), Some(video_b.as_uuid()));
    assert_eq!(
        movements,
        [
            ("released", 0, -20, b),
            ("captured", -20, -30, a),
            ("reserved", 0, 20, b),
            ("reserved", 0, 30, a),
            ("purchased", 25, 0, None),
            ("granted", 100, 0, None),
        ],
        "newest first"
    );
    assert!(ledger.windows(2).all(|w| w[0].position > w[1].position));
    let granted = &ledger[5];
    assert_eq!(granted.reason.as_deref(), Some("welcome"));
    assert_eq!(
        granted.actor,
        format!("user:{admin}"),
        "actor from the metadata"
    );
    assert_eq!(ledger[4].payment_reference.as_deref(), Some("pay_123"));
    assert_eq!(ledger[4].actor, "system");
    assert!(ledger[..4]
        .iter()
        .all(|e| e.reason.is_none() && e.payment_reference.is_none()));
    let balance: i64 = ledger.iter().map(|e| e.balance_change).sum();
    let reserved: i64 = ledger.iter().map(|e| e.reserved_change).sum();
    assert_eq!((balance, reserved), (settled.balance, settled.reserved));

    let page = credits::ledger(&db.pool, user, Some(ledger[1].position), 2)
        .await
        .expect("page");
    assert_eq!(
        page,
        ledger[2..4],
        "the cursor continues after the given position"
    );
    let last = credits::ledger(&db.pool, user, Some(ledger[5].position), 2)
        .await
        .expect("end");
    assert!(last.is_empty());
    let other = UserId::from_uuid(Uuid::now_v7());
    assert!(credits::ledger(&db.pool, other, None, 10)
        .await
        .expect("other")
        .is_empty());
}

//! The account projectors announce on `CREDENTIALS_CHANNEL` every change that alters how a
//! user authenticates (a key revoked, the user disabled, a role changed), once it is visible,
//! whether they project a whole batch set-based or one event at a time, and say nothing for
//! the changes that do not. The API's credential cache depends on these announcements.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use framegate_commands::testing::TestDatabase;
use framegate_commands::EventStore;
use framegate_domain::{Role, UserCommand};
use framegate_projections::read_models::{CREDENTIALS_ALL, CREDENTIALS_CHANNEL};
use framegate_projections::replay::{self, ReplayOptions, Silent};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use support::{catch_up, issue_key, register, user_command, VERIFY_TOKEN};

/// Every announcement that arrives until the channel has been quiet for a moment.
async fn payloads(listener: &mut PgListener) -> Vec<String> {
    let mut payloads = Vec::new();
    while let Ok(notification) =
        tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        payloads.push(notification.expect("notification").payload().to_owned());
    }
    payloads
}

/// The users announced until the channel has been quiet for a moment.
async fn announced(listener: &mut PgListener) -> BTreeSet<Uuid> {
    payloads(listener)
        .await
        .iter()
        .map(|payload| payload.parse().expect("a user id"))
        .collect()
}

async fn listening(db: &TestDatabase) -> PgListener {
    let mut listener = PgListener::connect_with(&db.pool).await.expect("listener");
    listener.listen(CREDENTIALS_CHANNEL).await.expect("listen");
    listener
}

#[tokio::test]
async fn changes_that_alter_authentication_are_announced_and_nothing_else() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let mut listener = listening(&db).await;

    // One batch: six users, three of whom change how they authenticate.
    let mut users = Vec::new();
    for n in 0..6 {
        let (user, _) = register(&store, &format!("announce{n}@example.com")).await;
        let key = issue_key(&store, user, "ci", &format!("fg_announce_{n:04}")).await;
        users.push((user, key));
    }
    let (revoked, key) = users[0];
    user_command(&store, revoked, UserCommand::RevokeApiKey { key_id: key }).await;
    let promoted = users[1].0;
    let promote = UserCommand::ChangeRole { role: Role::Admin };
    user_command(&store, promoted, promote).await;
    let disabled = users[2].0;
    let disable = UserCommand::Disable {
        reason: "abuse".to_owned(),
    };
    user_command(&store, disabled, disable).await;
    let verify = UserCommand::VerifyEmail {
        token: VERIFY_TOKEN.to_owned(),
    };
    user_command(&store, users[3].0, verify).await;
    catch_up(&db.pool).await;

    let expected: BTreeSet<Uuid> = [revoked, promoted, disabled]
        .into_iter()
        .map(|user| user.as_uuid())
        .collect();
    assert_eq!(announced(&mut listener).await, expected);

    // One event at a time, as a projector keeping up with live traffic sees them.
    let demote = UserCommand::ChangeRole { role: Role::User };
    user_command(&store, promoted, demote).await;
    catch_up(&db.pool).await;
    let (user, key) = users[4];
    user_command(&store, user, UserCommand::RevokeApiKey { key_id: key }).await;
    catch_up(&db.pool).await;
    let expected: BTreeSet<Uuid> = [promoted, user]
        .into_iter()
        .map(|user| user.as_uuid())
        .collect();
    assert_eq!(announced(&mut listener).await, expected);
}

#[tokio::test]
async fn a_replay_announces_only_its_swap() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    for n in 0..3 {
        let (user, _) = register(&store, &format!("replayed{n}@example.com")).await;
        let disable = UserCommand::Disable {
            reason: "test".to_owned(),
        };
        user_command(&store, user, disable).await;
    }
    catch_up(&db.pool).await;
    let mut listener = listening(&db).await;

    let models =
        replay::select_models(&db.pool, Some(&["users".to_owned(), "api_keys".to_owned()]))
            .expect("models");
    replay::replay(&db.pool, &models, &ReplayOptions::default(), &Silent)
        .await
        .expect("replay");
    // Re-projecting three disablings into the copies says nothing; the swap says "all" (once:
    // both tables swap in one transaction, and Postgres folds identical notifications).
    assert_eq!(payloads(&mut listener).await, vec![CREDENTIALS_ALL]);
}

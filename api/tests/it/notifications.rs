//! Email notifications (issue 13.6): the notification subscription records a mail in the
//! outbox for each completed or failed video and each fall below the low-credit threshold of
//! a user who opted in (`PATCH /v1/me`, tested in `notification_preferences.rs`), exactly once
//! per event.
//!
//! The subscription is drained by hand (`notify`), the outbox's sender runs as in the API,
//! and mail is read back from the test's own mailbox directory.

use crate::common;

use std::time::{Duration, Instant};

use common::TestApp;
use framegate_api::mail::{outbox, read_mailbox, StoredMail};
use framegate_api::notifications::{self, Notifier};
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{CreditCommand, Credits, ProviderKind, UserId, VideoCommand, VideoId};
use framegate_projections::log::{read_batch, Reads};
use framegate_projections::EventHandler as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const READY: &str = "Your video is ready";
const FAILED: &str = "Your video could not be made";
const LOW: &str = "Your credits are running low";

async fn patch_me(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.request(Method::PATCH, "/v1/me", Some(token), Some(body))
        .await
}

/// Sets preferences and returns what `GET /v1/me` then shows.
async fn set_notify(app: &TestApp, token: &str, notify: Value) -> Value {
    let response = patch_me(app, token, json!({ "notify": notify })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.expect("json");
    let read: Value = app
        .get("/v1/me", Some(token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, patched, "the answer is what GET shows");
    read["notify"].clone()
}

async fn request_video(app: &TestApp, token: &str, prompt: &str) -> VideoId {
    let body = json!({"prompt": prompt, "provider": "simulator", "duration_seconds": 4,
                      "aspect_ratio": "16:9", "resolution": "720p"});
    let response = app.post("/v1/videos", Some(token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let video: Value = response.json().await.expect("json");
    video["id"].as_str().expect("id").parse().expect("video id")
}

fn system() -> CommandMetadata {
    CommandMetadata::new_request(Actor::System)
}

async fn video_command(app: &TestApp, video: VideoId, command: VideoCommand) {
    app.state
        .store
        .videos()
        .execute(&video.to_string(), command, &system())
        .await
        .expect("video command");
}

/// What a worker records for a video the simulator made.
async fn complete(app: &TestApp, video: VideoId) {
    let start = VideoCommand::StartSubmission {
        attempt: 1,
        provider: ProviderKind::Simulator,
        model: "simulator-v1".into(),
    };
    video_command(app, video, start).await;
    let submitted = VideoCommand::MarkSubmitted {
        provider_job_id: format!("job-{video}"),
    };
    video_command(app, video, submitted).await;
    let delivered = VideoCommand::Deliver {
        blob_key: format!("videos/{video}.mp4"),
        bytes: 1000,
        sha256: "ab".repeat(32),
        duration_ms: 4000,
        width: 1280,
        height: 720,
        final_cost: Credits::new(4),
    };
    video_command(app, video, delivered).await;
}

async fn fail(app: &TestApp, video: VideoId) {
    let failed = VideoCommand::Fail {
        code: "moderated".into(),
        message: "PROVIDER SAYS: blocked by safety filter 7b".into(),
        retryable: false,
        charged: false,
    };
    video_command(app, video, failed).await;
}

async fn credits(app: &TestApp, user: Uuid, command: CreditCommand) {
    app.state
        .store
        .credits()
        .execute(&user.to_string(), command, &system())
        .await
        .expect("credit command");
}

/// Runs the notification subscription over everything committed so far.
async fn notify(app: &TestApp) {
    notifications::subscription(app.db.pool.clone())
        .drain(&Notifier)
        .await
        .expect("notifications");
}

/// Every mail sent once the outbox is empty, to `email` about `subject`.
async fn mails(app: &TestApp, email: &str, subject: &str) -> Vec<StoredMail> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while outbox::pending(&app.db.pool).await.expect("pending") > 0 {
        assert!(Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read_mailbox(&app.mailbox)
        .expect("mailbox")
        .into_iter()
        .filter(|m| m.to.contains(email) && m.subject == subject)
        .collect()
}

async fn outbox_rows(app: &TestApp, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE kind = $1")
        .bind(kind)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn an_opted_in_user_gets_one_mail_per_completed_and_failed_video_and_others_none() {
    let app = TestApp::spawn().await;
    let (_, alice, _) = app.signed_in_user("alice@example.com").await;
    let (_, bob, _) = app.signed_in_user("bob@example.com").await;
    set_notify(
        &app,
        &alice,
        json!({"video_completed": true, "video_failed": true}),
    )
    .await;
    // Carol opted in but never verified her address: it is not mailed.
    app.register("carol@example.com").await;
    let carol = app
        .login("carol@example.com", common::PASSWORD)
        .await
        .json::<Value>()
        .await
        .expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    app.state
        .store
        .credits()
        .execute(
            &carol_id(&app).await.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(100),
                reason: "test".into(),
                granted_by: "system".into(),
            },
            &system(),
        )
        .await
        .expect("grant");
    set_notify(&app, &carol, json!({"video_completed": true})).await;

    let done = [
        request_video(&app, &alice, "a paper boat on a rainy street").await,
        request_video(&app, &alice, "a lighthouse in a storm").await,
    ];
    let broken = request_video(&app, &alice, "a forbidden thing").await;
    let bobs = [
        request_video(&app, &bob, "bob's fox").await,
        request_video(&app, &bob, "bob's owl").await,
    ];
    let carols = request_video(&app, &carol, "carol's cat").await;
    for video in done {
        complete(&app, video).await;
    }
    fail(&app, broken).await;
    complete(&app, bobs[0]).await;
    fail(&app, bobs[1]).await;
    complete(&app, carols).await;
    notify(&app).await;

    let ready = mails(&app, "alice@example.com", READY).await;
    assert_eq!(ready.len(), 2, "{ready:?}");
    for video in done {
        let link = format!("{}/v1/videos/{video}/content", app.state.config.public_url);
        let about: Vec<_> = ready.iter().filter(|m| m.body.contains(&link)).collect();
        assert_eq!(about.len(), 1, "one mail for {video}");
    }
    assert!(ready
        .iter()
        .any(|m| m.body.contains("\"a paper boat on a rainy street\"")));
    let failed = mails(&app, "alice@example.com", FAILED).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let body = &failed[0].body;
    assert!(
        body.contains("the provider's content policy refused this request (moderated)"),
        "{body}"
    );
    assert!(
        !body.contains("PROVIDER SAYS"),
        "the provider's words stay out: {body}"
    );
    assert!(body.contains("PATCH") && body.contains("/v1/me"), "{body}");
    assert!(mails(&app, "bob@example.com", READY).await.is_empty());
    assert!(mails(&app, "bob@example.com", FAILED).await.is_empty());
    assert!(mails(&app, "carol@example.com", READY).await.is_empty());

    // Handled once: running the subscription again adds nothing.
    notify(&app).await;
    assert_eq!(mails(&app, "alice@example.com", READY).await.len(), 2);
}

async fn carol_id(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM users WHERE email = 'carol@example.com'")
        .fetch_one(&app.db.pool)
        .await
        .expect("carol")
}

#[tokio::test]
async fn preferences_count_as_they_were_when_the_event_happened() {
    let app = TestApp::spawn().await;
    let (_, early, _) = app.signed_in_user("early@example.com").await;
    let (_, late, _) = app.signed_in_user("late@example.com").await;
    set_notify(&app, &early, json!({"video_completed": true})).await;
    let early_video = request_video(&app, &early, "early").await;
    let late_video = request_video(&app, &late, "late").await;
    complete(&app, early_video).await;
    complete(&app, late_video).await;
    // Both change their minds before the subscription gets to the events.
    set_notify(&app, &early, json!({"video_completed": false})).await;
    set_notify(&app, &late, json!({"video_completed": true})).await;
    notify(&app).await;

    assert_eq!(mails(&app, "early@example.com", READY).await.len(), 1);
    assert!(mails(&app, "late@example.com", READY).await.is_empty());
}

#[tokio::test]
async fn a_low_balance_mails_once_per_fall_below_the_threshold() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("spender@example.com").await;
    let (other, other_token, _) = app.signed_in_user("quiet@example.com").await;
    set_notify(
        &app,
        &token,
        json!({"credits_low": true, "credits_low_threshold": 60}),
    )
    .await;
    set_notify(&app, &other_token, json!({"credits_low_threshold": 60})).await;
    let reserve = |n: u128, amount: i64| CreditCommand::Reserve {
        video_id: VideoId::from_uuid(Uuid::from_u128(n)),
        amount: Credits::new(amount),
    };
    // Available: 100 → 70 → 50 (below 60: mail) → 40 (still below: none) → back to 60 →
    // 55 (below again: mail) → 20 (none) → +100 = 120 → 10 (below again: mail).
    credits(&app, user, reserve(1, 30)).await;
    credits(&app, user, reserve(2, 20)).await;
    credits(&app, user, reserve(3, 10)).await;
    let release = CreditCommand::Release {
        video_id: VideoId::from_uuid(Uuid::from_u128(2)),
    };
    credits(&app, user, release).await;
    credits(&app, user, reserve(4, 5)).await;
    let capture = CreditCommand::Capture {
        video_id: VideoId::from_uuid(Uuid::from_u128(4)),
        amount: Credits::new(5),
    };
    credits(&app, user, capture).await;
    credits(&app, user, reserve(5, 35)).await;
    let top_up = CreditCommand::Purchase {
        amount: Credits::new(100),
        payment_reference: "pay_1".into(),
        payment: None,
    };
    credits(&app, user, top_up).await;
    credits(&app, user, reserve(6, 110)).await;
    // The same falls for someone who did not opt in.
    credits(&app, other, reserve(7, 50)).await;
    notify(&app).await;

    let low = mails(&app, "spender@example.com", LOW).await;
    let said: Vec<&str> = low
        .iter()
        .map(|m| {
            ["is 50 credits", "is 55 credits", "is 10 credits"]
                .into_iter()
                .find(|s| m.body.contains(s))
                .unwrap_or_else(|| panic!("unexpected: {}", m.body))
        })
        .collect();
    assert_eq!(
        said,
        vec!["is 50 credits", "is 55 credits", "is 10 credits"]
    );
    assert!(low[0].body.contains("threshold of 60"), "{}", low[0].body);
    assert!(mails(&app, "quiet@example.com", LOW).await.is_empty());
}

#[tokio::test]
async fn an_event_handled_again_after_a_crash_is_mailed_once() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("once@example.com").await;
    set_notify(&app, &token, json!({"video_completed": true})).await;
    let video = request_video(&app, &token, "only once").await;
    complete(&app, video).await;

    // A runner handles the batch, then dies before its transaction commits: the mail it
    // recorded goes with it, and the checkpoint never moved.
    let subscription = notifications::subscription(app.db.pool.clone());
    let checkpoint = subscription.checkpoint().await.expect("checkpoint");
    // The log is readable up to the oldest transaction running in the cluster (other tests'
    // too), so read until the batch reaches the completion.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut crashed, events) = loop {
        let mut tx = app.db.pool.begin().await.expect("begin");
        let events = read_batch(&mut tx, checkpoint, 1000, &Reads::EVERYTHING)
            .await
            .expect("batch");
        if events.iter().any(|e| e.event_type == "VideoCompleted") {
            break (tx, events);
        }
        drop(tx);
        assert!(
            Instant::now() < deadline,
            "the completion never became readable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Notifier
        .handle_batch(&mut crashed, &events)
        .await
        .expect("handled");
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE kind = 'video_completed'")
            .fetch_one(&mut *crashed)
            .await
            .expect("count");
    assert_eq!(recorded, 1, "the crashed runner had recorded the mail");
    drop(crashed);
    assert_eq!(outbox_rows(&app, "video_completed").await, 0);

    // The restarted subscription handles the event again, two runners at once even.
    tokio::join!(notify(&app), notify(&app));
    notify(&app).await;
    assert_eq!(mails(&app, "once@example.com", READY).await.len(), 1);
}

#[tokio::test]
async fn a_disabled_account_is_not_mailed() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("admin@example.com").await;
    let (user, token, _) = app.signed_in_user("gone@example.com").await;
    set_notify(&app, &token, json!({"video_completed": true})).await;
    let video = request_video(&app, &token, "never told").await;
    complete(&app, video).await;
    let disabled = app
        .post(
            &format!("/v1/admin/users/{user}/disable"),
            Some(&admin),
            json!({"reason": "abuse"}),
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    notify(&app).await;
    assert!(mails(&app, "gone@example.com", READY).await.is_empty());
    // The preference itself was recorded on the account as usual.
    let prefs = app
        .state
        .store
        .users()
        .load(&UserId::from_uuid(user).to_string())
        .await
        .expect("load")
        .notification_preferences();
    assert!(prefs.video_completed);
}

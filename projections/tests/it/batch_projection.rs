//! The projectors' set-based batches against real Postgres: a realistic log written through
//! the command path (every kind of event, several users at once, so aggregates interleave) is
//! projected into copies of each read model's tables, once through `handle_batch` and once
//! event by event through `handle`, and the copies must hold the same rows, whatever the
//! batch size and whether the rows were already there. A bad event in the middle of a batch
//! stops it with the error the per-event path gives, naming that event.

use crate::copies;
use crate::support;

use chrono::Utc;
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    hash_token, ApiKeyId, CreditCommand, CreditEvent, Credits, ImageCommand, ImageEvent,
    ModerationDecision, PasswordHash, PaymentDetails, PaymentProvider, PreferencesChange,
    ProviderKind, ProviderPreference, Role, UserCommand, UserEvent, UserId, VideoCommand,
    VideoEvent, VideoId, VideoSpec, WebhookEvent,
};
use framegate_projections::replay::{self, ReadModel};
use framegate_projections::{HandlerError, StoredEvent};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use copies::{copies, in_batches, log, one_by_one, rows};
use support::{
    catch_up, credit_command, image_command, issue_key, register, system, upload, user_command,
    video_command, webhook_endpoint,
};

/// One customer's story with every kind of event the read models follow.
async fn customer(store: &EventStore, n: usize) {
    let (user, _) = register(store, &format!("batch{n}@example.com")).await;
    let first = issue_key(store, user, "ci", &format!("fg_live_{n:08}_first")).await;
    issue_key(store, user, "  laptop ", &format!("fg_live_{n:08}_second")).await;
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    let resend = UserCommand::IssueEmailVerification {
        token_hash: hash_token(&format!("resend-{n}")),
        expires_at: tomorrow,
    };
    user_command(store, user, resend).await;
    let verify = UserCommand::VerifyEmail {
        token: format!("resend-{n}"),
    };
    user_command(store, user, verify).await;
    let password = || PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b3RoZXI");
    let change = UserCommand::ChangePassword {
        password_hash: password(),
    };
    user_command(store, user, change).await;
    let reset = UserCommand::RequestPasswordReset {
        token_hash: hash_token(&format!("reset-{n}")),
        expires_at: tomorrow,
    };
    user_command(store, user, reset).await;
    let completed = UserCommand::CompletePasswordReset {
        token: format!("reset-{n}"),
        password_hash: password(),
    };
    user_command(store, user, completed).await;
    if n.is_multiple_of(2) {
        user_command(store, user, UserCommand::RevokeApiKey { key_id: first }).await;
    }
    if n.is_multiple_of(3) {
        user_command(store, user, UserCommand::ChangeRole { role: Role::Admin }).await;
    }
    // Preferences set once or twice: a batch keeps the last set of each user.
    let opt_in = UserCommand::ChangeNotificationPreferences {
        change: PreferencesChange {
            video_completed: Some(true),
            credits_low_threshold: Some(Credits::new(10 * n as i64)),
            ..PreferencesChange::default()
        },
    };
    user_command(store, user, opt_in).await;
    if n.is_multiple_of(2) {
        let more = UserCommand::ChangeNotificationPreferences {
            change: PreferencesChange {
                video_failed: Some(true),
                credits_low: Some(true),
                ..PreferencesChange::default()
            },
        };
        user_command(store, user, more).await;
    }

    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: format!("welcome {n}"),
        granted_by: "system".into(),
    };
    let by_admin = CommandMetadata::new_request(Actor::User(UserId::from_uuid(Uuid::now_v7())));
    credit_command(store, user, grant, &by_admin).await;
    let purchase = CreditCommand::Purchase {
        amount: Credits::new(50),
        payment_reference: format!("pay_{n}"),
        payment: None,
    };
    credit_command(store, user, purchase, &system()).await;
    stripe_purchase(store, user, n).await;
    completed_video(store, user).await;
    failed_video(store, user).await;
    cancelled_video(store, user).await;
    images(store, user, n).await;
    webhook_endpoint(store, user, n).await;

    if n % 4 == 1 {
        let disable = UserCommand::Disable {
            reason: "abuse".into(),
        };
        user_command(store, user, disable).await;
    }
}

/// A pack bought through Stripe, refunded in one or two steps (or not at all).
async fn stripe_purchase(store: &EventStore, user: UserId, n: usize) {
    let session = format!("cs_test_{n}");
    let purchase = CreditCommand::Purchase {
        amount: Credits::new(1000),
        payment_reference: session.clone(),
        payment: Some(PaymentDetails {
            provider: PaymentProvider::Stripe,
            checkout_session: session.clone(),
            payment_intent: Some(format!("pi_{n}")),
            pack: "starter".into(),
            amount_paid: 1000,
            currency: "usd".into(),
        }),
    };
    credit_command(store, user, purchase, &system()).await;
    for refunded in [250, 600].into_iter().take(n % 3) {
        let refund = CreditCommand::RevokePurchase {
            payment_reference: session.clone(),
            refunded,
        };
        credit_command(store, user, refund, &system()).await;
    }
}

/// A video refused once by a provider, then retried through to completion and captured.
async fn completed_video(store: &EventStore, user: UserId) {
    let video = request(store, user).await;
    video_command(store, video, start(1, ProviderKind::Simulator)).await;
    let refused = VideoCommand::RecordSubmissionFailure {
        code: "rate_limited".into(),
        message: "slow down".into(),
        retry_at: Utc::now() + chrono::Duration::seconds(30),
    };
    video_command(store, video, refused).await;
    video_command(store, video, start(2, ProviderKind::Simulator)).await;
    let submitted = VideoCommand::MarkSubmitted {
        provider_job_id: format!("job-{video}"),
    };
    video_command(store, video, submitted).await;
    for percent in [30, 20, 60] {
        video_command(store, video, VideoCommand::RecordProgress { percent }).await;
    }
    video_command(store, video, VideoCommand::MarkGenerated).await;
    let stored = VideoCommand::RecordStored {
        blob_key: format!("videos/{video}.mp4"),
        bytes: 1234,
        sha256: "ab".repeat(32),
        duration_ms: 4000,
        width: 640,
        height: 360,
    };
    video_command(store, video, stored).await;
    let complete = VideoCommand::Complete {
        final_cost: Credits::new(3),
    };
    video_command(store, video, complete).await;
    let capture = CreditCommand::Capture {
        video_id: video,
        amount: Credits::new(3),
    };
    credit_command(store, user, capture, &system()).await;
}

async fn failed_video(store: &EventStore, user: UserId) {
    let video = request(store, user).await;
    video_command(store, video, start(1, ProviderKind::Simulator)).await;
    let submitted = VideoCommand::MarkSubmitted {
        provider_job_id: format!("job-{video}"),
    };
    video_command(store, video, submitted).await;
    video_command(store, video, VideoCommand::RecordProgress { percent: 10 }).await;
    let fail = VideoCommand::Fail {
        code: "provider_error".into(),
        message: "upstream said no".into(),
        retryable: false,
        charged: false,
    };
    video_command(store, video, fail).await;
    let release = CreditCommand::Release { video_id: video };
    credit_command(store, user, release, &system()).await;
}

async fn cancelled_video(store: &EventStore, user: UserId) {
    let video = request(store, user).await;
    let cancel = VideoCommand::RequestCancel {
        reason: "changed my mind".into(),
    };
    // Queued: the request cancels at once (CancelRequested, VideoCancelled).
    video_command(store, video, cancel).await;
    let release = CreditCommand::Release { video_id: video };
    credit_command(store, user, release, &system()).await;
}

/// An image uploaded, deleted, re-uploaded and refused, re-uploaded again (and deleted again
/// for every other customer), and one refused outright.
async fn images(store: &EventStore, user: UserId, n: usize) {
    let (image, first) = upload(user, n as u128 * 10, ModerationDecision::allow());
    image_command(store, image, first).await;
    image_command(store, image, ImageCommand::Delete { by: user }).await;
    let refusal = ModerationDecision::reject("deny_formats", "image/jpeg images are not accepted");
    image_command(store, image, upload_again(user, n, refusal)).await;
    image_command(
        store,
        image,
        upload_again(user, n, ModerationDecision::allow()),
    )
    .await;
    if n.is_multiple_of(2) {
        image_command(store, image, ImageCommand::Delete { by: user }).await;
    }
    let weapons = ModerationDecision::reject("violence", "weapons");
    let (refused, refused_upload) = upload(user, n as u128 * 10 + 1, weapons);
    image_command(store, refused, refused_upload).await;
}

fn upload_again(user: UserId, n: usize, moderation: ModerationDecision) -> ImageCommand {
    upload(user, n as u128 * 10, moderation).1
}

fn start(attempt: u32, provider: ProviderKind) -> VideoCommand {
    VideoCommand::StartSubmission {
        attempt,
        provider,
        model: "simulator-v1".into(),
    }
}

async fn request(store: &EventStore, owner: UserId) -> VideoId {
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "a paper boat on a rainy street".into(),
        negative_prompt: Some("blurry".into()),
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: Some(7),
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: Some(format!("ext-{video}")),
        webhook: None,
    };
    let meta = CommandMetadata::new_request(Actor::User(owner));
    request_video(store, video, spec, &meta, None)
        .await
        .expect("video request");
    video
}

/// `customers` stories written at the same time, so their events interleave in the log.
async fn workload(store: &EventStore, customers: std::ops::Range<usize>) {
    futures::future::join_all(customers.map(|n| customer(store, n))).await;
}

/// Appends an event that no command would write, e.g. for an aggregate that does not exist.
async fn append_raw(
    pool: &PgPool,
    aggregate_type: &str,
    event_type: &str,
    payload: impl Serialize,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ($1, $2, 1, $3, '1.0', $4, '{\"actor\": \"system\"}')
         RETURNING global_position",
    )
    .bind(aggregate_type)
    .bind(Uuid::now_v7().to_string())
    .bind(event_type)
    .bind(serde_json::to_value(payload).expect("payload"))
    .fetch_one(pool)
    .await
    .expect("raw event")
}

#[tokio::test]
async fn each_projector_gives_the_same_rows_from_one_batch_as_from_its_events_one_by_one() {
    let db = TestDatabase::with_pool_size(24).await;
    let store = EventStore::new(db.pool.clone());
    workload(&store, 0..6).await;
    // The live projectors too: their subscriptions hand them batches of up to 1000.
    catch_up(&db.pool).await;
    let events = log(&db.pool).await;
    assert!(events.len() > 200, "{} events", events.len());

    for model in replay::all_models(&db.pool).expect("models") {
        let (batch, each) = (
            format!("batch_{}", model.name),
            format!("each_{}", model.name),
        );
        copies(&db.pool, &batch, &model).await;
        copies(&db.pool, &each, &model).await;
        in_batches(&db.pool, &batch, &model, &events, events.len())
            .await
            .expect("one batch");
        one_by_one(&db.pool, &each, &model, &events)
            .await
            .expect("one by one");
        let expected = rows(&db.pool, &each, &model).await;
        assert!(
            expected.iter().all(|(_, rows)| rows.len() >= 6),
            "{}: every table has rows",
            model.name
        );
        assert_eq!(
            rows(&db.pool, &batch, &model).await,
            expected,
            "{}",
            model.name
        );
        assert_eq!(
            rows(&db.pool, "public", &model).await,
            expected,
            "{}: the live tables",
            model.name
        );
    }
}

#[tokio::test]
async fn batches_of_any_size_give_the_same_rows_as_one_by_one_also_over_rows_already_there() {
    let db = TestDatabase::with_pool_size(24).await;
    let store = EventStore::new(db.pool.clone());
    workload(&store, 0..4).await;
    let events = log(&db.pool).await;

    for model in replay::all_models(&db.pool).expect("models") {
        let each = format!("each_{}", model.name);
        copies(&db.pool, &each, &model).await;
        one_by_one(&db.pool, &each, &model, &events)
            .await
            .expect("one by one");
        let once = rows(&db.pool, &each, &model).await;
        // The whole log again over its own rows: what a rewound subscription does.
        one_by_one(&db.pool, &each, &model, &events)
            .await
            .expect("one by one again");
        let twice = rows(&db.pool, &each, &model).await;

        for size in [2, 3, 5, 8, 13, 40, 1000] {
            let schema = format!("batches_{size}_{}", model.name);
            copies(&db.pool, &schema, &model).await;
            in_batches(&db.pool, &schema, &model, &events, size)
                .await
                .expect("batches");
            let context = format!("{} in batches of {size}", model.name);
            assert_eq!(rows(&db.pool, &schema, &model).await, once, "{context}");
            in_batches(&db.pool, &schema, &model, &events, size)
                .await
                .expect("batches again");
            assert_eq!(
                rows(&db.pool, &schema, &model).await,
                twice,
                "{context}, twice"
            );
        }
    }
}

/// Projects the log through `handle_batch` in one batch and one by one, each into fresh
/// copies; both must fail, and on the same event with the same error.
async fn both_fail(db: &TestDatabase, model: &ReadModel, events: &[StoredEvent]) -> HandlerError {
    let (batch, each) = (
        format!("failing_batch_{}", model.name),
        format!("failing_each_{}", model.name),
    );
    copies(&db.pool, &batch, model).await;
    copies(&db.pool, &each, model).await;
    let batched = in_batches(&db.pool, &batch, model, events, events.len())
        .await
        .expect_err("the batch fails");
    let single = one_by_one(&db.pool, &each, model, events)
        .await
        .expect_err("one by one fails");
    assert_eq!(
        batched.global_position, single.global_position,
        "{}",
        model.name
    );
    assert_eq!(batched.to_string(), single.to_string(), "{}", model.name);
    assert!(rows(&db.pool, &batch, model)
        .await
        .iter()
        .all(|(_, rows)| rows.is_empty()));
    batched
}

#[tokio::test]
async fn a_payload_that_does_not_decode_in_the_middle_of_a_batch_stops_it_naming_that_event() {
    let db = TestDatabase::with_pool_size(24).await;
    let store = EventStore::new(db.pool.clone());
    workload(&store, 0..2).await;
    let bogus = serde_json::json!({ "UserRegistered": { "bogus": 1 } });
    let user = append_raw(&db.pool, "User", "UserRegistered", bogus).await;
    let lots = serde_json::json!({
        "CreditsGranted": { "amount": "lots", "reason": "x", "granted_by": "y" }
    });
    let credit = append_raw(&db.pool, "CreditAccount", "CreditsGranted", lots).await;
    let unpaid = serde_json::json!({
        "CreditsPurchased": { "amount": "lots", "payment_reference": "cs_x" }
    });
    let purchase = append_raw(&db.pool, "CreditAccount", "CreditsPurchased", unpaid).await;
    let too_far = serde_json::json!({ "VideoProgressed": { "percent": 400 } });
    let video = append_raw(&db.pool, "Video", "VideoProgressed", too_far).await;
    // The payload's tag disagrees with the event type.
    let image = append_raw(
        &db.pool,
        "Image",
        "ImageUploaded",
        ImageEvent::ImageDeleted {},
    )
    .await;
    let hook = append_raw(
        &db.pool,
        "WebhookEndpoint",
        "WebhookEndpointCreated",
        WebhookEvent::WebhookEndpointDeleted {},
    )
    .await;
    workload(&store, 2..4).await;
    let events = log(&db.pool).await;
    assert!(events.last().is_some_and(|e| e.global_position > hook));

    for model in replay::all_models(&db.pool).expect("models") {
        let expected = match model.name.as_str() {
            "users" | "api_keys" => user,
            "credit_accounts" | "credit_ledger" => credit,
            // It skips grants undecoded; the purchase is the first it reads.
            "credit_purchases" => purchase,
            "videos" => video,
            "webhook_endpoints" => hook,
            _ => image,
        };
        let error = both_fail(&db, &model, &events).await;
        assert_eq!(error.global_position, expected, "{}: {error}", model.name);
        assert!(
            error.to_string().contains(&format!("#{expected}")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn an_event_whose_row_is_missing_or_would_break_a_constraint_stops_the_batch_naming_it() {
    let db = TestDatabase::with_pool_size(24).await;
    let store = EventStore::new(db.pool.clone());
    workload(&store, 0..2).await;
    // Each for an aggregate that never started: one by one, each finds no row to update
    // (or, for the account, would take its reserved credits below zero).
    let verified = append_raw(
        &db.pool,
        "User",
        "EmailVerified",
        UserEvent::EmailVerified {},
    )
    .await;
    let key_id = ApiKeyId::from_uuid(Uuid::now_v7());
    let revoked = append_raw(
        &db.pool,
        "User",
        "ApiKeyRevoked",
        UserEvent::ApiKeyRevoked { key_id },
    )
    .await;
    let released = CreditEvent::ReservationReleased {
        video_id: VideoId::from_uuid(Uuid::now_v7()),
        amount: Credits::new(5),
    };
    let released = append_raw(&db.pool, "CreditAccount", "ReservationReleased", released).await;
    let orphan = CreditEvent::CreditsRevoked {
        payment_reference: "cs_never_bought".into(),
        refunded: 100,
        requested: Credits::new(10),
        revoked: Credits::new(0),
        shortfall: Credits::new(10),
    };
    let orphan = append_raw(&db.pool, "CreditAccount", "CreditsRevoked", orphan).await;
    let generated = VideoEvent::VideoGenerated {};
    let generated = append_raw(&db.pool, "Video", "VideoGenerated", generated).await;
    let deleted = append_raw(
        &db.pool,
        "Image",
        "ImageDeleted",
        ImageEvent::ImageDeleted {},
    )
    .await;
    let enabled = append_raw(
        &db.pool,
        "WebhookEndpoint",
        "WebhookEndpointEnabled",
        WebhookEvent::WebhookEndpointEnabled {},
    )
    .await;
    workload(&store, 2..4).await;
    let events = log(&db.pool).await;

    for model in replay::all_models(&db.pool).expect("models") {
        let expected = match model.name.as_str() {
            "users" => verified,
            "api_keys" => revoked,
            "credit_accounts" => released,
            "credit_purchases" => orphan,
            // An append-only ledger has no row to miss: it takes the whole log.
            "credit_ledger" => {
                let schema = "ledger_takes_all";
                copies(&db.pool, schema, &model).await;
                in_batches(&db.pool, schema, &model, &events, events.len())
                    .await
                    .expect("the ledger projects everything");
                continue;
            }
            "videos" => generated,
            "webhook_endpoints" => enabled,
            _ => deleted,
        };
        let error = both_fail(&db, &model, &events).await;
        assert_eq!(error.global_position, expected, "{}: {error}", model.name);
    }
}

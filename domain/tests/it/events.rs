//! The stored form of every event: JSON snapshots (a failing snapshot means stored history
//! would no longer deserialize, or the Postgres email index would miss), the event type
//! being the serde tag, and redaction of secrets.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::DomainEvent;
use framegate_domain::{
    hash_token, redact_event, redact_payload, sensitive_fields, ApiKeyHash, ApiKeyId,
    CreditAccount, CreditEvent, Credits, ErasedBy, ImageId, NotificationPreferences, PasswordHash,
    PaymentDetails, PaymentProvider, ProviderKind, ProviderPreference, Role, User, UserEvent,
    UserId, Video, VideoEvent, VideoId, VideoSpec, VideoWebhook, REDACTED,
};
use insta::assert_json_snapshot;
use serde_json::Value;
use uuid::Uuid;

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp") + TimeDelta::hours(24)
}

fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

fn video_id() -> VideoId {
    VideoId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_2001))
}

fn key_id() -> ApiKeyId {
    ApiKeyId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0101))
}

const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$secretpasswordhash";
const API_KEY_HASH: &str = "secret-api-key-hash-0123456789abcdef";

fn user_registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: user_id(),
        email: "alice@example.com".to_string(),
        password_hash: PasswordHash::new(PASSWORD_HASH),
        role: Role::User,
        verification_token_hash: hash_token("verify-token"),
        verification_expires_at: at(),
    }
}

fn email_verification_issued() -> UserEvent {
    UserEvent::EmailVerificationIssued {
        token_hash: hash_token("verify-token-2"),
        expires_at: at(),
    }
}

fn password_changed() -> UserEvent {
    UserEvent::PasswordChanged {
        password_hash: PasswordHash::new(PASSWORD_HASH),
    }
}

fn password_reset_requested() -> UserEvent {
    UserEvent::PasswordResetRequested {
        token_hash: hash_token("reset-token"),
        expires_at: at(),
    }
}

fn password_reset_completed() -> UserEvent {
    UserEvent::PasswordResetCompleted {
        password_hash: PasswordHash::new(PASSWORD_HASH),
    }
}

fn api_key_issued() -> UserEvent {
    UserEvent::ApiKeyIssued {
        key_id: key_id(),
        name: "ci".to_string(),
        prefix: "fg_live_ab12".to_string(),
        key_hash: ApiKeyHash::new(API_KEY_HASH),
        scopes: vec!["videos:read".to_string(), "videos:write".to_string()],
    }
}

fn all_user_events() -> Vec<UserEvent> {
    vec![
        user_registered(),
        email_verification_issued(),
        UserEvent::EmailVerified {},
        password_changed(),
        password_reset_requested(),
        password_reset_completed(),
        api_key_issued(),
        UserEvent::ApiKeyRevoked { key_id: key_id() },
        UserEvent::RoleChanged { role: Role::Admin },
        UserEvent::UserDisabled {
            reason: "abuse".to_string(),
        },
        UserEvent::NotificationPreferencesChanged {
            preferences: NotificationPreferences {
                video_completed: true,
                video_failed: true,
                credits_low: false,
                credits_low_threshold: Credits::new(250),
            },
        },
        UserEvent::UserErased {
            by: ErasedBy::Owner,
        },
    ]
}

fn all_credit_events() -> Vec<CreditEvent> {
    vec![
        CreditEvent::CreditsGranted {
            amount: Credits::new(100),
            reason: "welcome bonus".to_string(),
            granted_by: "admin:0190".to_string(),
        },
        CreditEvent::CreditsPurchased {
            amount: Credits::new(1000),
            payment_reference: "cs_test_a1b2c3".to_string(),
            payment: Some(PaymentDetails {
                provider: PaymentProvider::Stripe,
                checkout_session: "cs_test_a1b2c3".to_string(),
                payment_intent: Some("pi_3Qx7Yz".to_string()),
                pack: "starter".to_string(),
                amount_paid: 1000,
                currency: "usd".to_string(),
            }),
        },
        CreditEvent::CreditsRevoked {
            payment_reference: "cs_test_a1b2c3".to_string(),
            refunded: 500,
            requested: Credits::new(500),
            revoked: Credits::new(420),
            shortfall: Credits::new(80),
        },
        CreditEvent::CreditsReserved {
            video_id: video_id(),
            amount: Credits::new(80),
        },
        CreditEvent::ReservationCaptured {
            video_id: video_id(),
            reserved: Credits::new(80),
            captured: Credits::new(60),
            released: Credits::new(20),
        },
        CreditEvent::ReservationReleased {
            video_id: video_id(),
            amount: Credits::new(80),
        },
    ]
}

fn spec() -> VideoSpec {
    VideoSpec {
        owner: user_id(),
        prompt: "a heron lifting off a misty lake at dawn".to_string(),
        negative_prompt: Some("text, watermark".to_string()),
        provider: ProviderPreference::Veo,
        model: Some("veo-3".to_string()),
        duration_seconds: 8,
        aspect_ratio: "16:9".to_string(),
        resolution: "1080p".to_string(),
        image_id: Some(ImageId::from_uuid(Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_3001,
        ))),
        seed: Some(42),
        estimated_cost: Credits::new(80),
        generate_audio: false,
        external_id: None,
        webhook: Some(VideoWebhook {
            url: "https://hooks.example.com/framegate?token=abc".to_string(),
            events: vec!["video.completed".to_string(), "video.failed".to_string()],
        }),
    }
}

fn all_video_events() -> Vec<VideoEvent> {
    vec![
        VideoEvent::VideoRequested {
            video_id: video_id(),
            spec: spec(),
        },
        VideoEvent::SubmissionStarted {
            attempt: 1,
            provider: ProviderKind::Veo,
            model: "veo-3".to_string(),
        },
        VideoEvent::VideoSubmitted {
            provider_job_id: "operations/abc123".to_string(),
        },
        VideoEvent::SubmissionFailed {
            attempt: 1,
            provider: ProviderKind::Veo,
            code: "rate_limited".to_string(),
            message: "veo answered 429 Too Many Requests".to_string(),
            retry_at: chrono::DateTime::from_timestamp(1_767_225_660, 0).expect("a timestamp"),
        },
        VideoEvent::VideoProgressed { percent: 40 },
        VideoEvent::VideoGenerated {},
        VideoEvent::VideoStored {
            blob_key: "videos/01900000-0000-7000-8000-000000002001.mp4".to_string(),
            bytes: 1_048_576,
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string(),
            duration_ms: 8_000,
            width: 1920,
            height: 1080,
        },
        VideoEvent::VideoCompleted {
            final_cost: Credits::new(60),
        },
        VideoEvent::VideoFailed {
            code: "provider_timeout".to_string(),
            message: "the provider did not answer in time".to_string(),
            retryable: true,
            charged: false,
        },
        VideoEvent::CancelRequested {
            reason: "user asked".to_string(),
        },
        VideoEvent::VideoCancelled { charged: true },
        VideoEvent::VideoDeleted {},
    ]
}

/// Fails to compile when a variant is added, so that the lists above stay complete.
fn user_ordinal(event: &UserEvent) -> usize {
    match event {
        UserEvent::UserRegistered { .. } => 0,
        UserEvent::EmailVerificationIssued { .. } => 1,
        UserEvent::EmailVerified {} => 2,
        UserEvent::PasswordChanged { .. } => 3,
        UserEvent::PasswordResetRequested { .. } => 4,
        UserEvent::PasswordResetCompleted { .. } => 5,
        UserEvent::ApiKeyIssued { .. } => 6,
        UserEvent::ApiKeyRevoked { .. } => 7,
        UserEvent::RoleChanged { .. } => 8,
        UserEvent::UserDisabled { .. } => 9,
        UserEvent::NotificationPreferencesChanged { .. } => 10,
        UserEvent::UserErased { .. } => 11,
    }
}

fn credit_ordinal(event: &CreditEvent) -> usize {
    match event {
        CreditEvent::CreditsGranted { .. } => 0,
        CreditEvent::CreditsPurchased { .. } => 1,
        CreditEvent::CreditsRevoked { .. } => 2,
        CreditEvent::CreditsReserved { .. } => 3,
        CreditEvent::ReservationCaptured { .. } => 4,
        CreditEvent::ReservationReleased { .. } => 5,
    }
}

fn video_ordinal(event: &VideoEvent) -> usize {
    match event {
        VideoEvent::VideoRequested { .. } => 0,
        VideoEvent::SubmissionStarted { .. } => 1,
        VideoEvent::VideoSubmitted { .. } => 2,
        VideoEvent::SubmissionFailed { .. } => 3,
        VideoEvent::VideoProgressed { .. } => 4,
        VideoEvent::VideoGenerated {} => 5,
        VideoEvent::VideoStored { .. } => 6,
        VideoEvent::VideoCompleted { .. } => 7,
        VideoEvent::VideoFailed { .. } => 8,
        VideoEvent::CancelRequested { .. } => 9,
        VideoEvent::VideoCancelled { .. } => 10,
        VideoEvent::VideoDeleted {} => 11,
    }
}

fn assert_covers_every_variant<E>(events: &[E], ordinal: fn(&E) -> usize) {
    let ordinals: Vec<usize> = events.iter().map(ordinal).collect();
    let expected: Vec<usize> = (0..events.len()).collect();
    assert_eq!(
        ordinals, expected,
        "one sample per variant, in declaration order"
    );
}

fn assert_tagged_by_event_type<E: DomainEvent>(events: &[E]) {
    for event in events {
        let json = serde_json::to_value(event).expect("events serialize");
        let tags: Vec<&String> = json.as_object().expect("an object").keys().collect();
        assert_eq!(tags, vec![&event.event_type()]);
        assert_eq!(
            event.event_version(),
            framegate_domain::versions::current_version(&event.event_type())
        );
        let back: E = serde_json::from_value(json).expect("events deserialize");
        assert_eq!(&back, event);
    }
}

#[test]
fn the_samples_cover_every_event_variant() {
    assert_covers_every_variant(&all_user_events(), user_ordinal);
    assert_covers_every_variant(&all_credit_events(), credit_ordinal);
    assert_covers_every_variant(&all_video_events(), video_ordinal);
}

#[test]
fn every_event_type_is_its_serde_tag_and_round_trips() {
    assert_tagged_by_event_type(&all_user_events());
    assert_tagged_by_event_type(&all_credit_events());
    assert_tagged_by_event_type(&all_video_events());
}

#[test]
fn a_request_recorded_before_per_request_webhooks_decodes_without_one() {
    let mut json = serde_json::to_value(VideoEvent::VideoRequested {
        video_id: video_id(),
        spec: spec(),
    })
    .expect("events serialize");
    json["VideoRequested"]["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("webhook");
    let VideoEvent::VideoRequested { spec: old, .. } =
        serde_json::from_value(json).expect("an old request decodes")
    else {
        panic!("not a request");
    };
    assert_eq!(old.webhook, None);
    let without = VideoSpec {
        webhook: None,
        ..spec()
    };
    let json = serde_json::to_value(&without).expect("spec");
    assert!(json.get("webhook").is_none(), "absent, not null: {json}");
}

#[test]
fn the_registered_email_sits_where_the_personal_fields_list_names_it() {
    // The store seals it from there (framegate_domain::pii, ADR 0043).
    assert_eq!(
        framegate_domain::pii::personal_fields("UserRegistered"),
        ["email"]
    );
    let json = serde_json::to_value(user_registered()).expect("events serialize");
    assert_eq!(
        json.pointer("/UserRegistered/email"),
        Some(&Value::String("alice@example.com".to_string()))
    );
}

#[test]
fn every_user_event_matches_its_snapshot() {
    let [registered, verification_issued, verified, password_changed, reset_requested, reset_completed, key_issued, key_revoked, role_changed, disabled, notifications, erased] =
        <[UserEvent; 12]>::try_from(all_user_events()).expect("twelve user events");
    assert_json_snapshot!("user_registered", registered);
    assert_json_snapshot!("email_verification_issued", verification_issued);
    assert_json_snapshot!("email_verified", verified);
    assert_json_snapshot!("password_changed", password_changed);
    assert_json_snapshot!("password_reset_requested", reset_requested);
    assert_json_snapshot!("password_reset_completed", reset_completed);
    assert_json_snapshot!("api_key_issued", key_issued);
    assert_json_snapshot!("api_key_revoked", key_revoked);
    assert_json_snapshot!("role_changed", role_changed);
    assert_json_snapshot!("user_disabled", disabled);
    assert_json_snapshot!("notification_preferences_changed", notifications);
    assert_json_snapshot!("user_erased", erased);
}

#[test]
fn every_credit_event_matches_its_snapshot() {
    let [granted, purchased, revoked, reserved, captured, released] =
        <[CreditEvent; 6]>::try_from(all_credit_events()).expect("six credit events");
    assert_json_snapshot!("credits_granted", granted);
    assert_json_snapshot!("credits_purchased", purchased);
    assert_json_snapshot!("credits_revoked", revoked);
    assert_json_snapshot!("credits_reserved", reserved);
    assert_json_snapshot!("reservation_captured", captured);
    assert_json_snapshot!("reservation_released", released);
}

#[test]
fn every_video_event_matches_its_snapshot() {
    let [requested, submission_started, submitted, submission_failed, progressed, generated, stored, completed, failed, cancel_requested, cancelled, deleted] =
        <[VideoEvent; 12]>::try_from(all_video_events()).expect("twelve video events");
    assert_json_snapshot!("video_requested", requested);
    assert_json_snapshot!("submission_started", submission_started);
    assert_json_snapshot!("video_submitted", submitted);
    assert_json_snapshot!("submission_failed", submission_failed);
    assert_json_snapshot!("video_progressed", progressed);
    assert_json_snapshot!("video_generated", generated);
    assert_json_snapshot!("video_stored", stored);
    assert_json_snapshot!("video_completed", completed);
    assert_json_snapshot!("video_failed", failed);
    assert_json_snapshot!("cancel_requested", cancel_requested);
    assert_json_snapshot!("video_cancelled", cancelled);
    assert_json_snapshot!("video_deleted", deleted);
}

/// The secret values a user event carries, as they appear in its JSON.
fn secrets_of(event: &UserEvent) -> Vec<String> {
    match event {
        UserEvent::UserRegistered {
            password_hash,
            verification_token_hash,
            ..
        } => vec![
            password_hash.as_str().to_string(),
            verification_token_hash.as_str().to_string(),
        ],
        UserEvent::EmailVerificationIssued { token_hash, .. }
        | UserEvent::PasswordResetRequested { token_hash, .. } => {
            vec![token_hash.as_str().to_string()]
        }
        UserEvent::PasswordChanged { password_hash }
        | UserEvent::PasswordResetCompleted { password_hash } => {
            vec![password_hash.as_str().to_string()]
        }
        UserEvent::ApiKeyIssued { key_hash, .. } => vec![key_hash.as_str().to_string()],
        UserEvent::EmailVerified {}
        | UserEvent::ApiKeyRevoked { .. }
        | UserEvent::RoleChanged { .. }
        | UserEvent::UserDisabled { .. }
        | UserEvent::NotificationPreferencesChanged { .. }
        | UserEvent::UserErased { .. } => vec![],
    }
}

fn assert_no_unredacted_hash_key(value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key.ends_with("_hash") {
                    assert_eq!(value, &Value::String(REDACTED.to_string()), "{key}");
                }
                assert_no_unredacted_hash_key(value);
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_unredacted_hash_key),
        _ => {}
    }
}

#[test]
fn redaction_removes_every_secret_of_every_user_event() {
    for event in all_user_events() {
        let event_type = event.event_type();
        let stored = serde_json::to_value(&event).expect("events serialize");
        let secrets = secrets_of(&event);
        assert_eq!(secrets.len(), sensitive_fields("User", &event_type).len());
        for secret in &secrets {
            assert!(stored.to_string().contains(secret.as_str()), "{event_type}");
        }

        let redacted = redact_payload("User", &event_type, &stored);
        let text = redacted.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{event_type} leaks {secret}"
            );
        }
        assert_no_unredacted_hash_key(&redacted);
        assert_eq!(redact_event::<User>(&event).expect("redacts"), redacted);
    }
}

#[test]
fn redaction_keeps_everything_that_is_not_secret() {
    let redacted = redact_event::<User>(&user_registered()).expect("redacts");
    let body = &redacted["UserRegistered"];
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["role"], "user");
    assert_eq!(body["password_hash"], REDACTED);
    assert_eq!(body["verification_token_hash"], REDACTED);
    assert_json_snapshot!("user_registered_redacted", redacted);
}

#[test]
fn events_without_secrets_pass_redaction_unchanged() {
    for event in all_credit_events() {
        let stored = serde_json::to_value(&event).expect("events serialize");
        assert_eq!(
            redact_event::<CreditAccount>(&event).expect("redacts"),
            stored
        );
    }
    for event in all_video_events() {
        let stored = serde_json::to_value(&event).expect("events serialize");
        assert_eq!(redact_event::<Video>(&event).expect("redacts"), stored);
    }
}

#[test]
fn redaction_also_works_on_a_bare_event_body() {
    let body = serde_json::json!({ "password_hash": PASSWORD_HASH, "note": "kept" });
    let redacted = redact_payload("User", "PasswordChanged", &body);
    assert_eq!(
        redacted,
        serde_json::json!({ "password_hash": REDACTED, "note": "kept" })
    );
}

#[test]
fn unlisted_hash_fields_are_redacted_anyway() {
    let payload = serde_json::json!({
        "FutureEvent": { "recovery_code_hash": "abc", "items": [{ "other_hash": "def" }], "gone_hash": null }
    });
    let redacted = redact_payload("User", "FutureEvent", &payload);
    assert_eq!(
        redacted,
        serde_json::json!({
            "FutureEvent": { "recovery_code_hash": REDACTED, "items": [{ "other_hash": REDACTED }], "gone_hash": null }
        })
    );
}

#[test]
fn a_purchase_stored_before_payment_details_still_decodes_and_keeps_its_form() {
    let stored = serde_json::json!({
        "CreditsPurchased": { "amount": 500, "payment_reference": "pi_123" }
    });
    let event: CreditEvent = serde_json::from_value(stored.clone()).expect("decodes");
    assert_eq!(
        event,
        CreditEvent::CreditsPurchased {
            amount: Credits::new(500),
            payment_reference: "pi_123".to_string(),
            payment: None,
        }
    );
    assert_eq!(serde_json::to_value(&event).expect("serializes"), stored);
}

//! Given/when/then tests of the `WebhookEndpoint` aggregate and the stored form of each of its
//! events (JSON snapshots, which the event schema contracts also read).

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;
use framegate_domain::webhook::{DisabledReason, DEFAULT_EVENT_TYPES, MAX_URL_CHARS};
use framegate_domain::{
    FixedClock, UserId, WebhookCommand, WebhookEndpoint, WebhookEndpointId, WebhookError,
    WebhookEvent,
};
use insta::assert_json_snapshot;
use uuid::Uuid;

const FINGERPRINT: &str = "0123456789abcdef";
const NEXT_FINGERPRINT: &str = "fedcba9876543210";

fn framework() -> TestFramework<WebhookEndpoint> {
    let now = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("a valid timestamp");
    TestFramework::with(FixedClock(now).shared())
}

fn owner() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

fn someone_else() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002))
}

fn endpoint_id() -> WebhookEndpointId {
    WebhookEndpointId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00e1))
}

fn create_with(url: &str, events: Option<Vec<&str>>) -> WebhookCommand {
    WebhookCommand::Create {
        endpoint_id: endpoint_id(),
        owner: owner(),
        url: url.to_owned(),
        events: events.map(|e| e.into_iter().map(str::to_owned).collect()),
        description: Some("  orders service ".to_owned()),
        secret_fingerprint: FINGERPRINT.to_owned(),
    }
}

fn created() -> WebhookEvent {
    WebhookEvent::WebhookEndpointCreated {
        endpoint_id: endpoint_id(),
        owner: owner(),
        url: "https://hooks.example.com/framegate".to_owned(),
        events: vec!["video.completed".to_owned(), "video.failed".to_owned()],
        description: Some("orders service".to_owned()),
        secret_fingerprint: FINGERPRINT.to_owned(),
    }
}

fn update(by: UserId) -> WebhookCommand {
    enable(by, None)
}

fn enable(by: UserId, enabled: Option<bool>) -> WebhookCommand {
    WebhookCommand::Update {
        by,
        url: None,
        events: None,
        description: None,
        enabled,
    }
}

fn disabled_gone() -> WebhookEvent {
    WebhookEvent::WebhookEndpointDisabled {
        reason: DisabledReason::Gone,
        detail: "the endpoint answered 410 Gone".to_owned(),
    }
}

#[test]
fn creating_records_the_settings_with_event_types_in_canonical_order_and_a_trimmed_description() {
    framework()
        .given_no_previous_events()
        .when(create_with(
            " https://hooks.example.com/framegate ",
            Some(vec!["video.failed", "video.completed", "video.failed"]),
        ))
        .then_expect_events(vec![created()]);
}

#[test]
fn an_endpoint_created_without_events_gets_every_video_event_but_progress() {
    let events = framework()
        .given_no_previous_events()
        .when(create_with("https://hooks.example.com/a", None))
        .inspect_result()
        .expect("created");
    let WebhookEvent::WebhookEndpointCreated { events, .. } = &events[0] else {
        panic!("expected a creation, got {events:?}");
    };
    assert_eq!(events, &DEFAULT_EVENT_TYPES.map(str::to_owned).to_vec());
    assert!(!events.iter().any(|e| e == "video.progress"));
}

#[test]
fn bad_urls_event_types_and_descriptions_are_refused() {
    let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
    for url in [
        "ftp://example.com/x",
        "https://",
        "https://user:pass@example.com/x",
        "https://example.com/x#frag",
        "https://exa mple.com/",
        "https://example.com/\u{7}",
        "example.com/hook",
        long.as_str(),
    ] {
        framework()
            .given_no_previous_events()
            .when(create_with(url, None))
            .then_expect_error(WebhookError::InvalidUrl);
    }
    framework()
        .given_no_previous_events()
        .when(create_with(
            "https://example.com/",
            Some(vec!["video.exploded"]),
        ))
        .then_expect_error(WebhookError::UnknownEventType("video.exploded".to_owned()));
    framework()
        .given_no_previous_events()
        .when(create_with("https://example.com/", Some(vec![])))
        .then_expect_error(WebhookError::NoEventTypes);
    framework()
        .given_no_previous_events()
        .when(WebhookCommand::Create {
            endpoint_id: endpoint_id(),
            owner: owner(),
            url: "https://example.com/".to_owned(),
            events: None,
            description: Some("line\nbreak".to_owned()),
            secret_fingerprint: FINGERPRINT.to_owned(),
        })
        .then_expect_error(WebhookError::InvalidDescription);
    framework()
        .given(vec![created()])
        .when(create_with("https://example.com/", None))
        .then_expect_error(WebhookError::AlreadyCreated);
}

#[test]
fn an_update_records_the_full_new_settings_and_nothing_when_nothing_changes() {
    framework()
        .given(vec![created()])
        .when(WebhookCommand::Update {
            by: owner(),
            url: Some("https://hooks.example.com/v2".to_owned()),
            events: None,
            description: Some(None),
            enabled: None,
        })
        .then_expect_events(vec![WebhookEvent::WebhookEndpointUpdated {
            url: "https://hooks.example.com/v2".to_owned(),
            events: vec!["video.completed".to_owned(), "video.failed".to_owned()],
            description: None,
        }]);
    framework()
        .given(vec![created()])
        .when(WebhookCommand::Update {
            by: owner(),
            url: Some("https://hooks.example.com/framegate".to_owned()),
            events: Some(vec![
                "video.failed".to_owned(),
                "video.completed".to_owned(),
            ]),
            description: None,
            enabled: Some(true),
        })
        .then_expect_events(vec![]);
}

#[test]
fn the_owner_disables_and_enables_and_a_platform_disable_keeps_its_first_reason() {
    framework()
        .given(vec![created()])
        .when(enable(owner(), Some(false)))
        .then_expect_events(vec![WebhookEvent::WebhookEndpointDisabled {
            reason: DisabledReason::Owner,
            detail: "disabled by its owner".to_owned(),
        }]);
    framework()
        .given(vec![created(), disabled_gone()])
        .when(enable(owner(), Some(true)))
        .then_expect_events(vec![WebhookEvent::WebhookEndpointEnabled {}]);
    framework()
        .given(vec![created(), disabled_gone()])
        .when(WebhookCommand::Disable {
            reason: DisabledReason::Failing,
            detail: "failing for 5 days".to_owned(),
        })
        .then_expect_events(vec![]);
    framework()
        .given(vec![created()])
        .when(WebhookCommand::Disable {
            reason: DisabledReason::Gone,
            detail: "the endpoint answered 410 Gone".to_owned(),
        })
        .then_expect_events(vec![disabled_gone()]);
}

#[test]
fn someone_elses_or_a_deleted_endpoint_is_not_found() {
    for command in [
        update(someone_else()),
        WebhookCommand::Delete { by: someone_else() },
        WebhookCommand::RotateSecret {
            by: someone_else(),
            secret_fingerprint: NEXT_FINGERPRINT.to_owned(),
            previous_expires_at: 1_767_312_000,
        },
    ] {
        framework()
            .given(vec![created()])
            .when(command)
            .then_expect_error(WebhookError::NotFound);
    }
    framework()
        .given(vec![created(), WebhookEvent::WebhookEndpointDeleted {}])
        .when(WebhookCommand::Delete { by: owner() })
        .then_expect_error(WebhookError::NotFound);
    framework()
        .given(vec![created(), WebhookEvent::WebhookEndpointDeleted {}])
        .when(WebhookCommand::Disable {
            reason: DisabledReason::Gone,
            detail: "gone".to_owned(),
        })
        .then_expect_error(WebhookError::NotFound);
    framework()
        .given_no_previous_events()
        .when(update(owner()))
        .then_expect_error(WebhookError::NotFound);
}

#[test]
fn a_rotation_records_the_new_fingerprint_and_refuses_anything_else() {
    framework()
        .given(vec![created()])
        .when(WebhookCommand::RotateSecret {
            by: owner(),
            secret_fingerprint: NEXT_FINGERPRINT.to_owned(),
            previous_expires_at: 1_767_312_000,
        })
        .then_expect_events(vec![WebhookEvent::WebhookEndpointSecretRotated {
            secret_fingerprint: NEXT_FINGERPRINT.to_owned(),
            previous_expires_at: 1_767_312_000,
        }]);
    framework()
        .given(vec![created()])
        .when(WebhookCommand::RotateSecret {
            by: owner(),
            secret_fingerprint: "whsec_notafingerprint".to_owned(),
            previous_expires_at: 1_767_312_000,
        })
        .then_expect_error(WebhookError::InvalidFingerprint);
}

#[test]
fn webhook_endpoint_created_json_is_stable() {
    assert_json_snapshot!("webhook_endpoint_created", created());
}

#[test]
fn webhook_endpoint_updated_json_is_stable() {
    assert_json_snapshot!(
        "webhook_endpoint_updated",
        WebhookEvent::WebhookEndpointUpdated {
            url: "https://hooks.example.com/v2".to_owned(),
            events: vec!["video.completed".to_owned()],
            description: None,
        }
    );
}

#[test]
fn webhook_endpoint_secret_rotated_json_is_stable() {
    assert_json_snapshot!(
        "webhook_endpoint_secret_rotated",
        WebhookEvent::WebhookEndpointSecretRotated {
            secret_fingerprint: NEXT_FINGERPRINT.to_owned(),
            previous_expires_at: 1_767_312_000,
        }
    );
}

#[test]
fn webhook_endpoint_disabled_json_is_stable() {
    assert_json_snapshot!("webhook_endpoint_disabled", disabled_gone());
}

#[test]
fn webhook_endpoint_enabled_json_is_stable() {
    assert_json_snapshot!(
        "webhook_endpoint_enabled",
        WebhookEvent::WebhookEndpointEnabled {}
    );
}

#[test]
fn webhook_endpoint_deleted_json_is_stable() {
    assert_json_snapshot!(
        "webhook_endpoint_deleted",
        WebhookEvent::WebhookEndpointDeleted {}
    );
}

//! Given/when/then tests of notification preferences on the `User` aggregate.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate as _;
use framegate_domain::{
    hash_token, Credits, FixedClock, NotificationPreferences, PasswordHash, PreferencesChange,
    Role, User, UserCommand, UserError, UserEvent, UserId,
};
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp")
}

fn framework() -> TestFramework<User> {
    TestFramework::with(FixedClock(now()).shared())
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: UserId::from_uuid(Uuid::from_u128(1)),
        email: "alice@example.com".to_string(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$salt$hash"),
        role: Role::User,
        verification_token_hash: hash_token("verify"),
        verification_expires_at: now() + TimeDelta::hours(1),
    }
}

fn change(change: PreferencesChange) -> UserCommand {
    UserCommand::ChangeNotificationPreferences { change }
}

fn changed(preferences: NotificationPreferences) -> UserEvent {
    UserEvent::NotificationPreferencesChanged { preferences }
}

#[test]
fn opting_in_records_the_whole_new_set_of_preferences() {
    framework()
        .given(vec![registered()])
        .when(change(PreferencesChange {
            video_completed: Some(true),
            ..PreferencesChange::default()
        }))
        .then_expect_events(vec![changed(NotificationPreferences {
            video_completed: true,
            ..NotificationPreferences::default()
        })]);
}

#[test]
fn a_partial_change_keeps_the_preferences_it_does_not_name() {
    let before = NotificationPreferences {
        video_completed: true,
        video_failed: true,
        credits_low: false,
        credits_low_threshold: Credits::new(40),
    };
    framework()
        .given(vec![registered(), changed(before)])
        .when(change(PreferencesChange {
            credits_low: Some(true),
            video_failed: Some(false),
            ..PreferencesChange::default()
        }))
        .then_expect_events(vec![changed(NotificationPreferences {
            video_failed: false,
            credits_low: true,
            ..before
        })]);
}

#[test]
fn a_change_to_what_is_already_set_records_nothing() {
    framework()
        .given(vec![registered()])
        .when(change(PreferencesChange {
            video_completed: Some(false),
            credits_low_threshold: Some(Credits::new(100)),
            ..PreferencesChange::default()
        }))
        .then_expect_events(vec![]);
}

#[test]
fn a_negative_threshold_is_refused() {
    framework()
        .given(vec![registered()])
        .when(change(PreferencesChange {
            credits_low_threshold: Some(Credits::new(-5)),
            ..PreferencesChange::default()
        }))
        .then_expect_error(UserError::NegativeThreshold);
}

#[test]
fn a_disabled_user_cannot_change_preferences() {
    framework()
        .given(vec![
            registered(),
            UserEvent::UserDisabled {
                reason: "abuse".to_string(),
            },
        ])
        .when(change(PreferencesChange {
            video_failed: Some(true),
            ..PreferencesChange::default()
        }))
        .then_expect_error(UserError::UserDisabled);
}

#[test]
fn the_aggregate_holds_the_last_preferences_recorded() {
    let mut user = User::default();
    user.apply(registered());
    assert_eq!(
        user.notification_preferences(),
        NotificationPreferences::default()
    );
    let set = NotificationPreferences {
        video_completed: false,
        video_failed: true,
        credits_low: true,
        credits_low_threshold: Credits::new(0),
    };
    user.apply(changed(set));
    assert_eq!(user.notification_preferences(), set);
}

#[test]
fn a_user_state_stored_before_preferences_existed_still_loads() {
    let mut user = User::default();
    user.apply(registered());
    let mut stored = serde_json::to_value(&user).expect("serializes");
    stored
        .as_object_mut()
        .expect("an object")
        .remove("notifications");
    let loaded: User = serde_json::from_value(stored).expect("deserializes");
    assert_eq!(
        loaded.notification_preferences(),
        NotificationPreferences::default()
    );
}

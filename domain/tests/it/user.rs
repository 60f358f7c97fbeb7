//! Given/when/then tests of the `User` aggregate: every command's accepted path and each of
//! its refusals, compared by value.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use framegate_domain::{
    hash_token, ApiKeyHash, ApiKeyId, ErasedBy, FixedClock, PasswordHash, Role, TokenHash, User,
    UserCommand, UserError, UserEvent, UserId,
};
use uuid::Uuid;

const VERIFY_TOKEN: &str = "verify-token-1";
const RESET_TOKEN: &str = "reset-token-1";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp")
}

fn in_an_hour() -> DateTime<Utc> {
    now() + TimeDelta::hours(1)
}

fn framework() -> TestFramework<User> {
    TestFramework::with(FixedClock(now()).shared())
}

fn framework_at(at: DateTime<Utc>) -> TestFramework<User> {
    TestFramework::with(FixedClock(at).shared())
}

fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

fn key_id(n: u128) -> ApiKeyId {
    ApiKeyId::from_uuid(Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0100 + n,
    ))
}

fn password(n: u32) -> PasswordHash {
    PasswordHash::new(format!("$argon2id$v=19$m=19456,t=2,p=1$salt{n}$hash{n}"))
}

fn register_command(email: &str) -> UserCommand {
    UserCommand::Register {
        user_id: user_id(),
        email: email.to_string(),
        password_hash: password(1),
        verification_token_hash: hash_token(VERIFY_TOKEN),
        verification_expires_at: in_an_hour(),
        role: Role::User,
    }
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: user_id(),
        email: "alice@example.com".to_string(),
        password_hash: password(1),
        role: Role::User,
        verification_token_hash: hash_token(VERIFY_TOKEN),
        verification_expires_at: in_an_hour(),
    }
}

fn reset_requested() -> UserEvent {
    UserEvent::PasswordResetRequested {
        token_hash: hash_token(RESET_TOKEN),
        expires_at: in_an_hour(),
    }
}

fn key_issued(n: u128) -> UserEvent {
    UserEvent::ApiKeyIssued {
        key_id: key_id(n),
        name: format!("key {n}"),
        prefix: format!("fg_{n}"),
        key_hash: ApiKeyHash::new(format!("keyhash{n}")),
        scopes: vec!["videos:write".to_string()],
    }
}

fn issue_key_command(n: u128, name: &str) -> UserCommand {
    UserCommand::IssueApiKey {
        key_id: key_id(n),
        name: name.to_string(),
        prefix: format!("fg_{n}"),
        key_hash: ApiKeyHash::new(format!("keyhash{n}")),
        scopes: vec!["videos:write".to_string()],
    }
}

fn disabled() -> UserEvent {
    UserEvent::UserDisabled {
        reason: "abuse".to_string(),
    }
}

/// One of every command an existing user may receive, `Disable` excepted.
fn commands_for_an_existing_user() -> Vec<UserCommand> {
    vec![
        UserCommand::IssueEmailVerification {
            token_hash: hash_token("another"),
            expires_at: in_an_hour(),
        },
        UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        },
        UserCommand::ChangePassword {
            password_hash: password(2),
        },
        UserCommand::RequestPasswordReset {
            token_hash: hash_token(RESET_TOKEN),
            expires_at: in_an_hour(),
        },
        UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(2),
        },
        issue_key_command(1, "ci"),
        UserCommand::RevokeApiKey { key_id: key_id(1) },
        UserCommand::ChangeRole { role: Role::Admin },
        UserCommand::ChangeNotificationPreferences {
            change: framegate_domain::PreferencesChange {
                video_completed: Some(true),
                ..Default::default()
            },
        },
    ]
}

#[test]
fn registering_a_new_user_records_the_normalised_email() {
    framework()
        .given_no_previous_events()
        .when(register_command("  Alice@Example.COM "))
        .then_expect_events(vec![registered()]);
}

#[test]
fn registering_with_an_invalid_email_is_rejected() {
    let too_long = format!("{}@example.com", "a".repeat(243));
    for email in [
        "",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "alice@@example.com",
        "a@b@example.com",
        "alice smith@example.com",
        "alice@.example.com",
        "alice@example.com.",
        "alice@example..com",
        too_long.as_str(),
    ] {
        framework()
            .given_no_previous_events()
            .when(register_command(email))
            .then_expect_error(UserError::InvalidEmail);
    }
}

#[test]
fn registering_an_email_of_exactly_254_characters_is_accepted() {
    let email = format!("{}@example.com", "a".repeat(242));
    assert_eq!(email.len(), 254);
    let events = framework()
        .given_no_previous_events()
        .when(register_command(&email))
        .inspect_result();
    assert!(matches!(
        events.as_deref(),
        Ok([UserEvent::UserRegistered { .. }])
    ));
}

#[test]
fn registering_twice_is_rejected() {
    framework()
        .given(vec![registered()])
        .when(register_command("alice@example.com"))
        .then_expect_error(UserError::AlreadyRegistered);
}

#[test]
fn registering_a_disabled_user_again_is_rejected() {
    framework()
        .given(vec![registered(), disabled()])
        .when(register_command("alice@example.com"))
        .then_expect_error(UserError::AlreadyRegistered);
}

#[test]
fn commands_for_an_unregistered_user_are_rejected() {
    let mut commands = commands_for_an_existing_user();
    commands.push(UserCommand::Disable {
        reason: "abuse".to_string(),
    });
    for command in commands {
        // A one-time token is checked first: to a guesser an unknown account is a bad token.
        let expected = if carries_a_token(&command) {
            UserError::InvalidToken
        } else {
            UserError::NotRegistered
        };
        framework()
            .given_no_previous_events()
            .when(command)
            .then_expect_error(expected);
    }
}

fn carries_a_token(command: &UserCommand) -> bool {
    matches!(
        command,
        UserCommand::VerifyEmail { .. } | UserCommand::CompletePasswordReset { .. }
    )
}

#[test]
fn commands_for_a_disabled_user_are_rejected() {
    for command in commands_for_an_existing_user() {
        framework()
            .given(vec![
                registered(),
                key_issued(1),
                reset_requested(),
                disabled(),
            ])
            .when(command.clone())
            .then_expect_error(if carries_a_token(&command) {
                // Disabling voided every pending token: the answer says nothing more.
                UserError::InvalidToken
            } else {
                UserError::UserDisabled
            });
    }
}

#[test]
fn a_token_is_checked_before_the_accounts_state_is_told() {
    // A guess at a verified account: invalid, not "already verified".
    framework()
        .given(vec![registered(), UserEvent::EmailVerified {}])
        .when(UserCommand::VerifyEmail {
            token: "a guess".to_string(),
        })
        .then_expect_error(UserError::InvalidToken);
    // The real token again: already verified (a second click on the link).
    framework()
        .given(vec![registered(), UserEvent::EmailVerified {}])
        .when(UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        })
        .then_expect_error(UserError::AlreadyVerified);
    // A guess at a disabled account: invalid, not "disabled".
    framework()
        .given(vec![registered(), disabled()])
        .when(UserCommand::VerifyEmail {
            token: "a guess".to_string(),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn issuing_a_new_verification_token_records_it() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::IssueEmailVerification {
            token_hash: hash_token("verify-token-2"),
            expires_at: in_an_hour(),
        })
        .then_expect_events(vec![UserEvent::EmailVerificationIssued {
            token_hash: hash_token("verify-token-2"),
            expires_at: in_an_hour(),
        }]);
}

#[test]
fn a_reissued_verification_token_replaces_the_old_one() {
    let reissued = UserEvent::EmailVerificationIssued {
        token_hash: hash_token("verify-token-2"),
        expires_at: in_an_hour(),
    };
    framework()
        .given(vec![registered(), reissued.clone()])
        .when(UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        })
        .then_expect_error(UserError::InvalidToken);
    framework()
        .given(vec![registered(), reissued])
        .when(UserCommand::VerifyEmail {
            token: "verify-token-2".to_string(),
        })
        .then_expect_events(vec![UserEvent::EmailVerified {}]);
}

#[test]
fn issuing_a_verification_token_to_a_verified_user_is_rejected() {
    framework()
        .given(vec![registered(), UserEvent::EmailVerified {}])
        .when(UserCommand::IssueEmailVerification {
            token_hash: hash_token("verify-token-2"),
            expires_at: in_an_hour(),
        })
        .then_expect_error(UserError::AlreadyVerified);
}

#[test]
fn verifying_with_the_emailed_token_marks_the_email_verified() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        })
        .then_expect_events(vec![UserEvent::EmailVerified {}]);
}

#[test]
fn verifying_at_the_exact_expiry_instant_is_accepted() {
    framework_at(in_an_hour())
        .given(vec![registered()])
        .when(UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        })
        .then_expect_events(vec![UserEvent::EmailVerified {}]);
}

#[test]
fn verifying_with_a_wrong_token_is_rejected() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::VerifyEmail {
            token: "guess".to_string(),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn verifying_after_the_token_expired_is_rejected() {
    framework_at(in_an_hour() + TimeDelta::seconds(1))
        .given(vec![registered()])
        .when(UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        })
        .then_expect_error(UserError::TokenExpired);
}

#[test]
fn a_wrong_token_is_reported_as_invalid_even_after_expiry() {
    framework_at(in_an_hour() + TimeDelta::days(1))
        .given(vec![registered()])
        .when(UserCommand::VerifyEmail {
            token: "guess".to_string(),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn a_verification_token_works_only_once() {
    framework()
        .given(vec![registered(), UserEvent::EmailVerified {}])
        .when(UserCommand::VerifyEmail {
            token: VERIFY_TOKEN.to_string(),
        })
        .then_expect_error(UserError::AlreadyVerified);
}

#[test]
fn changing_the_password_records_the_new_hash() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::ChangePassword {
            password_hash: password(2),
        })
        .then_expect_events(vec![UserEvent::PasswordChanged {
            password_hash: password(2),
        }]);
}

#[test]
fn changing_the_password_voids_a_pending_reset() {
    framework()
        .given(vec![
            registered(),
            reset_requested(),
            UserEvent::PasswordChanged {
                password_hash: password(2),
            },
        ])
        .when(UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(3),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn requesting_a_password_reset_records_the_token_hash() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::RequestPasswordReset {
            token_hash: hash_token(RESET_TOKEN),
            expires_at: in_an_hour(),
        })
        .then_expect_events(vec![reset_requested()]);
}

#[test]
fn completing_a_reset_with_the_emailed_token_sets_the_new_password() {
    framework()
        .given(vec![registered(), reset_requested()])
        .when(UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(2),
        })
        .then_expect_events(vec![UserEvent::PasswordResetCompleted {
            password_hash: password(2),
        }]);
}

#[test]
fn completing_a_reset_that_was_never_requested_is_rejected() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(2),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn completing_a_reset_with_a_wrong_token_is_rejected() {
    framework()
        .given(vec![registered(), reset_requested()])
        .when(UserCommand::CompletePasswordReset {
            token: "guess".to_string(),
            password_hash: password(2),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn completing_an_expired_reset_is_rejected() {
    framework_at(in_an_hour() + TimeDelta::seconds(1))
        .given(vec![registered(), reset_requested()])
        .when(UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(2),
        })
        .then_expect_error(UserError::TokenExpired);
}

#[test]
fn a_reset_token_works_only_once() {
    framework()
        .given(vec![
            registered(),
            reset_requested(),
            UserEvent::PasswordResetCompleted {
                password_hash: password(2),
            },
        ])
        .when(UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(3),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn a_newer_reset_request_replaces_the_older_token() {
    framework()
        .given(vec![
            registered(),
            reset_requested(),
            UserEvent::PasswordResetRequested {
                token_hash: hash_token("reset-token-2"),
                expires_at: in_an_hour(),
            },
        ])
        .when(UserCommand::CompletePasswordReset {
            token: RESET_TOKEN.to_string(),
            password_hash: password(2),
        })
        .then_expect_error(UserError::InvalidToken);
}

#[test]
fn issuing_an_api_key_records_it_with_a_trimmed_name() {
    framework()
        .given(vec![registered()])
        .when(issue_key_command(1, "  key 1 "))
        .then_expect_events(vec![key_issued(1)]);
}

#[test]
fn issuing_an_api_key_with_a_100_character_name_is_accepted() {
    let name = "é".repeat(100);
    let events = framework()
        .given(vec![registered()])
        .when(issue_key_command(1, &name))
        .inspect_result();
    assert!(matches!(
        events.as_deref(),
        Ok([UserEvent::ApiKeyIssued { name: stored, .. }]) if *stored == name
    ));
}

#[test]
fn issuing_an_api_key_with_an_empty_or_overlong_name_is_rejected() {
    for name in [String::new(), "   ".to_string(), "k".repeat(101)] {
        framework()
            .given(vec![registered()])
            .when(issue_key_command(1, &name))
            .then_expect_error(UserError::InvalidApiKeyName);
    }
}

#[test]
fn issuing_an_api_key_with_a_used_id_is_rejected() {
    framework()
        .given(vec![registered(), key_issued(1)])
        .when(issue_key_command(1, "again"))
        .then_expect_error(UserError::DuplicateApiKey);
}

#[test]
fn a_revoked_api_key_id_cannot_be_reused() {
    framework()
        .given(vec![
            registered(),
            key_issued(1),
            UserEvent::ApiKeyRevoked { key_id: key_id(1) },
        ])
        .when(issue_key_command(1, "again"))
        .then_expect_error(UserError::DuplicateApiKey);
}

#[test]
fn revoking_an_api_key_records_it() {
    framework()
        .given(vec![registered(), key_issued(1), key_issued(2)])
        .when(UserCommand::RevokeApiKey { key_id: key_id(2) })
        .then_expect_events(vec![UserEvent::ApiKeyRevoked { key_id: key_id(2) }]);
}

#[test]
fn revoking_an_unknown_api_key_is_rejected() {
    framework()
        .given(vec![registered(), key_issued(1)])
        .when(UserCommand::RevokeApiKey { key_id: key_id(2) })
        .then_expect_error(UserError::UnknownApiKey);
}

#[test]
fn revoking_an_api_key_twice_is_rejected() {
    framework()
        .given(vec![
            registered(),
            key_issued(1),
            UserEvent::ApiKeyRevoked { key_id: key_id(1) },
        ])
        .when(UserCommand::RevokeApiKey { key_id: key_id(1) })
        .then_expect_error(UserError::ApiKeyAlreadyRevoked);
}

#[test]
fn changing_the_role_records_it() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::ChangeRole { role: Role::Admin })
        .then_expect_events(vec![UserEvent::RoleChanged { role: Role::Admin }]);
}

#[test]
fn changing_to_the_current_role_records_nothing() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::ChangeRole { role: Role::User })
        .then_expect_events(vec![]);
}

#[test]
fn disabling_a_user_records_the_reason() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::Disable {
            reason: "abuse".to_string(),
        })
        .then_expect_events(vec![disabled()]);
}

#[test]
fn disabling_a_user_twice_is_rejected() {
    framework()
        .given(vec![registered(), disabled()])
        .when(UserCommand::Disable {
            reason: "again".to_string(),
        })
        .then_expect_error(UserError::AlreadyDisabled);
}

#[test]
fn the_user_state_follows_its_events() {
    let mut user = User::default();
    assert!(!user.is_registered());
    assert_eq!(user.email(), None);

    for event in [
        registered(),
        UserEvent::EmailVerified {},
        key_issued(1),
        key_issued(2),
        UserEvent::ApiKeyRevoked { key_id: key_id(1) },
        reset_requested(),
        UserEvent::PasswordResetCompleted {
            password_hash: password(2),
        },
        UserEvent::RoleChanged { role: Role::Admin },
    ] {
        user.apply(event);
    }

    assert!(user.is_registered());
    assert_eq!(user.user_id(), Some(user_id()));
    assert_eq!(user.email(), Some("alice@example.com"));
    assert!(user.is_email_verified());
    assert_eq!(user.pending_verification(), None);
    assert_eq!(user.pending_password_reset(), None);
    assert_eq!(user.password_hash(), Some(&password(2)));
    assert_eq!(user.role(), Role::Admin);
    assert!(user.is_admin());
    assert_eq!(user.api_keys().len(), 2);
    assert!(user.api_key(key_id(1)).is_some_and(|key| key.revoked));
    let active: Vec<ApiKeyId> = user.active_api_keys().map(|key| key.key_id).collect();
    assert_eq!(active, vec![key_id(2)]);
    assert!(!user.is_disabled());

    user.apply(disabled());
    assert!(user.is_disabled());
    assert_eq!(user.disabled_reason(), Some("abuse"));
}

#[test]
fn a_registered_user_holds_the_pending_verification_token() {
    let mut user = User::default();
    user.apply(registered());
    let pending = user.pending_verification().expect("a pending token");
    assert_eq!(pending.token_hash, hash_token(VERIFY_TOKEN));
    assert_eq!(
        pending.token_hash,
        TokenHash::new(hash_token(VERIFY_TOKEN).into_inner())
    );
    assert_eq!(pending.expires_at, in_an_hour());
}

fn erased() -> UserEvent {
    UserEvent::UserErased {
        by: ErasedBy::Owner,
    }
}

#[test]
fn a_registered_user_even_a_disabled_one_can_be_erased_once() {
    framework()
        .given(vec![registered()])
        .when(UserCommand::Erase {
            by: ErasedBy::Owner,
        })
        .then_expect_events(vec![erased()]);
    framework()
        .given(vec![registered(), disabled()])
        .when(UserCommand::Erase {
            by: ErasedBy::Admin,
        })
        .then_expect_events(vec![UserEvent::UserErased {
            by: ErasedBy::Admin,
        }]);
    framework()
        .given(vec![registered(), erased()])
        .when(UserCommand::Erase {
            by: ErasedBy::Admin,
        })
        .then_expect_error(UserError::AlreadyErased);
    framework()
        .given_no_previous_events()
        .when(UserCommand::Erase {
            by: ErasedBy::Admin,
        })
        .then_expect_error(UserError::NotRegistered);
}

#[test]
fn an_erased_user_forgets_the_address_keeps_no_key_and_refuses_every_command() {
    let mut user = User::default();
    for event in [registered(), key_issued(1), reset_requested(), erased()] {
        user.apply(event);
    }
    assert!(user.is_erased() && user.is_disabled());
    assert_eq!(user.email(), None);
    assert_eq!(user.active_api_keys().count(), 0);
    assert!(user.pending_password_reset().is_none());
    let mut commands = commands_for_an_existing_user();
    commands.push(UserCommand::Disable {
        reason: "abuse".to_string(),
    });
    for command in commands {
        let expected = if carries_a_token(&command) {
            UserError::InvalidToken
        } else if matches!(command, UserCommand::Disable { .. }) {
            UserError::AlreadyErased
        } else {
            UserError::UserDisabled
        };
        framework()
            .given(vec![
                registered(),
                key_issued(1),
                reset_requested(),
                erased(),
            ])
            .when(command)
            .then_expect_error(expected);
    }
}

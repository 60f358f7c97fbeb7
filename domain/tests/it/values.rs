//! Value types and the small pure helpers around the aggregates: ids, credits, clocks,
//! token hashing, email normalisation, provider names and error codes.

use std::collections::HashSet;

use chrono::DateTime;
use framegate_domain::{
    hash_token, normalize_email, ApiKeyHash, ApiKeyId, CreditError, Credits, DomainServices,
    FixedClock, ImageId, PasswordHash, ProviderKind, ProviderPreference, Role, SystemClock,
    TokenHash, UnknownProvider, UserError, UserId, VideoError, VideoId, VideoStatus,
};
use uuid::Uuid;

const UUID: &str = "01900000-0000-7000-8000-000000000001";

#[test]
fn ids_display_parse_and_serialize_as_plain_uuids() {
    let uuid = Uuid::parse_str(UUID).expect("a valid uuid");
    let id = UserId::from_uuid(uuid);
    assert_eq!(id.as_uuid(), uuid);
    assert_eq!(id.to_string(), UUID);
    assert_eq!(UUID.parse::<UserId>().expect("parses"), id);
    assert_eq!(
        serde_json::to_string(&id).expect("serializes"),
        format!("\"{UUID}\"")
    );
    assert_eq!(
        serde_json::from_str::<VideoId>(&format!("\"{UUID}\"")).expect("deserializes"),
        VideoId::from_uuid(uuid)
    );
    assert_eq!(ImageId::from_uuid(uuid).to_string(), UUID);
    assert_eq!(ApiKeyId::from_uuid(uuid).to_string(), UUID);
    assert!("not-a-uuid".parse::<ApiKeyId>().is_err());
}

#[test]
fn credits_do_checked_integer_arithmetic() {
    let five = Credits::new(5);
    assert_eq!(five.value(), 5);
    assert_eq!(Credits::default(), Credits::ZERO);
    assert_eq!(five.checked_add(Credits::new(3)), Some(Credits::new(8)));
    assert_eq!(five.checked_sub(Credits::new(8)), Some(Credits::new(-3)));
    assert_eq!(Credits::new(i64::MAX).checked_add(Credits::new(1)), None);
    assert_eq!(Credits::new(i64::MIN).checked_sub(Credits::new(1)), None);
    assert!(five.is_positive());
    assert!(!Credits::ZERO.is_positive());
    assert!(Credits::new(-1).is_negative());
    assert!(Credits::new(1) < Credits::new(2));
    assert_eq!(five.to_string(), "5");
    assert_eq!(serde_json::to_string(&five).expect("serializes"), "5");
}

#[test]
fn a_fixed_clock_always_tells_the_same_time() {
    let at = DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp");
    let services = FixedClock(at).shared();
    assert_eq!(services.now(), at);
    assert_eq!(services.now(), at);
    assert!(SystemClock.now() > at - chrono::TimeDelta::days(365 * 10));
}

#[test]
fn token_hashes_are_lowercase_hex_sha256() {
    assert_eq!(
        hash_token("abc").as_str(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(hash_token("abc").matches("abc"));
    assert!(!hash_token("abc").matches("abd"));
}

#[test]
fn secret_hashes_do_not_show_in_debug_output() {
    let debug = format!(
        "{:?} {:?} {:?}",
        PasswordHash::new("pw-secret"),
        TokenHash::new("token-secret"),
        ApiKeyHash::new("key-secret")
    );
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("[redacted]"));
}

#[test]
fn emails_are_trimmed_and_lowercased() {
    assert_eq!(
        normalize_email(" Bob.Smith+Tag@Mail.Example.ORG\n"),
        Ok("bob.smith+tag@mail.example.org".to_string())
    );
    assert_eq!(
        normalize_email("bob@localhost"),
        Err(UserError::InvalidEmail)
    );
}

#[test]
fn roles_serialize_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&Role::Admin).expect("serializes"),
        "\"admin\""
    );
    assert_eq!(Role::default(), Role::User);
    assert_eq!(Role::User.as_str(), "user");
}

#[test]
fn provider_names_parse_case_insensitively() {
    for kind in ProviderKind::ALL {
        assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(kind));
        assert_eq!(
            kind.to_string().to_uppercase().parse::<ProviderKind>(),
            Ok(kind)
        );
        assert_eq!(
            kind.as_str().parse::<ProviderPreference>(),
            Ok(ProviderPreference::from(kind))
        );
        assert_eq!(ProviderPreference::from(kind).pinned(), Some(kind));
        assert_eq!(
            serde_json::to_value(kind).expect("serializes"),
            serde_json::to_value(ProviderPreference::from(kind)).expect("serializes")
        );
    }
    assert_eq!(
        "Auto".parse::<ProviderPreference>(),
        Ok(ProviderPreference::Auto)
    );
    assert_eq!(ProviderPreference::Auto.pinned(), None);
}

#[test]
fn unknown_provider_names_are_rejected() {
    assert_eq!(
        "runway".parse::<ProviderKind>(),
        Err(UnknownProvider("runway".to_string()))
    );
    assert_eq!(
        "auto".parse::<ProviderKind>(),
        Err(UnknownProvider("auto".to_string()))
    );
    assert_eq!(
        "".parse::<ProviderPreference>(),
        Err(UnknownProvider(String::new()))
    );
}

#[test]
fn only_completed_failed_and_cancelled_are_terminal() {
    let terminal: Vec<VideoStatus> = [
        VideoStatus::Queued,
        VideoStatus::Submitting,
        VideoStatus::Submitted,
        VideoStatus::Running,
        VideoStatus::Generated,
        VideoStatus::Stored,
        VideoStatus::Completed,
        VideoStatus::Failed,
        VideoStatus::CancelRequested,
        VideoStatus::Cancelled,
    ]
    .into_iter()
    .filter(|status| status.is_terminal())
    .collect();
    assert_eq!(
        terminal,
        vec![
            VideoStatus::Completed,
            VideoStatus::Failed,
            VideoStatus::Cancelled
        ]
    );
    assert_eq!(
        serde_json::to_string(&VideoStatus::CancelRequested).expect("serializes"),
        "\"cancel_requested\""
    );
    assert_eq!(VideoStatus::CancelRequested.to_string(), "cancel_requested");
}

fn assert_distinct_snake_case(codes: &[&'static str]) {
    let unique: HashSet<&str> = codes.iter().copied().collect();
    assert_eq!(unique.len(), codes.len(), "{codes:?}");
    for code in codes {
        assert!(
            !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{code}"
        );
    }
}

#[test]
fn error_codes_are_distinct_and_snake_case() {
    let user = [
        UserError::InvalidEmail,
        UserError::AlreadyRegistered,
        UserError::NotRegistered,
        UserError::UserDisabled,
        UserError::AlreadyVerified,
        UserError::NoPendingToken,
        UserError::InvalidToken,
        UserError::TokenExpired,
        UserError::InvalidApiKeyName,
        UserError::DuplicateApiKey,
        UserError::UnknownApiKey,
        UserError::ApiKeyAlreadyRevoked,
        UserError::AlreadyDisabled,
    ];
    assert_distinct_snake_case(&user.map(|e| e.code()));

    let credit = [
        CreditError::NonPositiveAmount,
        CreditError::MissingReason,
        CreditError::PaymentReferenceConflict,
        CreditError::InsufficientCredits {
            requested: Credits::new(2),
            available: Credits::new(1),
        },
        CreditError::ReservationExists,
        CreditError::UnknownReservation,
        CreditError::Overflow,
    ];
    assert_distinct_snake_case(&credit.map(|e| e.code()));

    let video = [
        VideoError::NotRequested,
        VideoError::AlreadyRequested,
        VideoError::EmptyPrompt,
        VideoError::PromptTooLong,
        VideoError::InvalidDuration,
        VideoError::NegativeCost,
        VideoError::InvalidTransition {
            from: VideoStatus::Queued,
            command: "cancel",
        },
        VideoError::AlreadyTerminal {
            status: VideoStatus::Completed,
        },
        VideoError::AlreadyCancelRequested,
        VideoError::AttemptNotIncreasing {
            current: 1,
            requested: 1,
        },
        VideoError::ProgressOutOfRange { percent: 101 },
        VideoError::EmptyBlobKey,
        VideoError::InvalidSha256,
    ];
    assert_distinct_snake_case(&video.map(|e| e.code()));
}

#[test]
fn error_messages_carry_their_figures() {
    let error = CreditError::InsufficientCredits {
        requested: Credits::new(101),
        available: Credits::new(100),
    };
    assert_eq!(
        error.to_string(),
        "insufficient credits: 101 requested, 100 available"
    );
    let error = VideoError::InvalidTransition {
        from: VideoStatus::Queued,
        command: "cancel",
    };
    assert_eq!(error.to_string(), "cannot cancel a video that is queued");
}

//! Given/when/then tests of the `CreditAccount` aggregate: balances, reservations and their
//! idempotent settlement.

use chrono::DateTime;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use framegate_domain::{
    CreditAccount, CreditCommand, CreditError, CreditEvent, Credits, FixedClock, Reservation,
    ReservationState, VideoId,
};
use uuid::Uuid;

fn framework() -> TestFramework<CreditAccount> {
    let now = DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp");
    TestFramework::with(FixedClock(now).shared())
}

fn c(value: i64) -> Credits {
    Credits::new(value)
}

fn video(n: u128) -> VideoId {
    VideoId::from_uuid(Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_1000 + n,
    ))
}

fn granted(amount: i64) -> CreditEvent {
    CreditEvent::CreditsGranted {
        amount: c(amount),
        reason: "welcome bonus".to_string(),
        granted_by: "system".to_string(),
    }
}

fn purchased(amount: i64, reference: &str) -> CreditEvent {
    CreditEvent::CreditsPurchased {
        amount: c(amount),
        payment_reference: reference.to_string(),
        payment: None,
    }
}

fn reserved(n: u128, amount: i64) -> CreditEvent {
    CreditEvent::CreditsReserved {
        video_id: video(n),
        amount: c(amount),
    }
}

fn captured(n: u128, reserved: i64, captured: i64) -> CreditEvent {
    CreditEvent::ReservationCaptured {
        video_id: video(n),
        reserved: c(reserved),
        captured: c(captured),
        released: c(reserved - captured),
    }
}

fn released(n: u128, amount: i64) -> CreditEvent {
    CreditEvent::ReservationReleased {
        video_id: video(n),
        amount: c(amount),
    }
}

fn grant(amount: i64, reason: &str) -> CreditCommand {
    CreditCommand::Grant {
        amount: c(amount),
        reason: reason.to_string(),
        granted_by: "system".to_string(),
    }
}

fn purchase(amount: i64, reference: &str) -> CreditCommand {
    CreditCommand::Purchase {
        amount: c(amount),
        payment_reference: reference.to_string(),
        payment: None,
    }
}

fn reserve(n: u128, amount: i64) -> CreditCommand {
    CreditCommand::Reserve {
        video_id: video(n),
        amount: c(amount),
    }
}

fn capture(n: u128, amount: i64) -> CreditCommand {
    CreditCommand::Capture {
        video_id: video(n),
        amount: c(amount),
    }
}

fn release(n: u128) -> CreditCommand {
    CreditCommand::Release { video_id: video(n) }
}

#[test]
fn granting_credits_records_the_grant() {
    framework()
        .given_no_previous_events()
        .when(grant(100, "welcome bonus"))
        .then_expect_events(vec![granted(100)]);
}

#[test]
fn granting_a_non_positive_amount_is_rejected() {
    for amount in [0, -5] {
        framework()
            .given_no_previous_events()
            .when(grant(amount, "welcome bonus"))
            .then_expect_error(CreditError::NonPositiveAmount);
    }
}

#[test]
fn granting_without_a_reason_is_rejected() {
    for reason in ["", "   "] {
        framework()
            .given_no_previous_events()
            .when(grant(100, reason))
            .then_expect_error(CreditError::MissingReason);
    }
}

#[test]
fn granting_past_the_largest_balance_is_rejected() {
    framework()
        .given(vec![granted(i64::MAX)])
        .when(grant(1, "one more"))
        .then_expect_error(CreditError::Overflow);
}

#[test]
fn purchasing_credits_records_the_payment_reference() {
    framework()
        .given_no_previous_events()
        .when(purchase(500, "pi_123"))
        .then_expect_events(vec![purchased(500, "pi_123")]);
}

#[test]
fn repeating_a_purchase_with_the_same_reference_records_nothing() {
    framework()
        .given(vec![purchased(500, "pi_123")])
        .when(purchase(500, "pi_123"))
        .then_expect_events(vec![]);
}

#[test]
fn a_new_payment_reference_is_a_new_purchase() {
    framework()
        .given(vec![purchased(500, "pi_123")])
        .when(purchase(500, "pi_456"))
        .then_expect_events(vec![purchased(500, "pi_456")]);
}

#[test]
fn reusing_a_payment_reference_for_another_amount_is_rejected() {
    framework()
        .given(vec![purchased(500, "pi_123")])
        .when(purchase(501, "pi_123"))
        .then_expect_error(CreditError::PaymentReferenceConflict);
}

#[test]
fn purchasing_a_non_positive_amount_is_rejected() {
    for amount in [0, -1] {
        framework()
            .given_no_previous_events()
            .when(purchase(amount, "pi_123"))
            .then_expect_error(CreditError::NonPositiveAmount);
    }
}

#[test]
fn purchasing_without_a_payment_reference_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(purchase(500, " "))
        .then_expect_error(CreditError::MissingReason);
}

#[test]
fn purchasing_past_the_largest_balance_is_rejected() {
    framework()
        .given(vec![granted(i64::MAX)])
        .when(purchase(1, "pi_123"))
        .then_expect_error(CreditError::Overflow);
}

#[test]
fn reserving_exactly_the_available_credits_succeeds() {
    framework()
        .given(vec![granted(60), purchased(40, "pi_1")])
        .when(reserve(1, 100))
        .then_expect_events(vec![reserved(1, 100)]);
}

#[test]
fn reserving_more_than_available_is_rejected() {
    framework()
        .given(vec![granted(60), purchased(40, "pi_1")])
        .when(reserve(1, 101))
        .then_expect_error(CreditError::InsufficientCredits {
            requested: c(101),
            available: c(100),
        });
}

#[test]
fn reserving_on_an_empty_account_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(reserve(1, 1))
        .then_expect_error(CreditError::InsufficientCredits {
            requested: c(1),
            available: c(0),
        });
}

#[test]
fn open_reservations_reduce_what_is_available() {
    framework()
        .given(vec![granted(100), reserved(1, 60)])
        .when(reserve(2, 41))
        .then_expect_error(CreditError::InsufficientCredits {
            requested: c(41),
            available: c(40),
        });
    framework()
        .given(vec![granted(100), reserved(1, 60)])
        .when(reserve(2, 40))
        .then_expect_events(vec![reserved(2, 40)]);
}

#[test]
fn reserving_a_non_positive_amount_is_rejected() {
    for amount in [0, -10] {
        framework()
            .given(vec![granted(100)])
            .when(reserve(1, amount))
            .then_expect_error(CreditError::NonPositiveAmount);
    }
}

#[test]
fn reserving_again_for_the_same_video_and_amount_records_nothing() {
    framework()
        .given(vec![granted(100), reserved(1, 60)])
        .when(reserve(1, 60))
        .then_expect_events(vec![]);
}

#[test]
fn reserving_again_for_the_same_video_with_another_amount_is_rejected() {
    framework()
        .given(vec![granted(100), reserved(1, 60)])
        .when(reserve(1, 30))
        .then_expect_error(CreditError::ReservationExists);
}

#[test]
fn reserving_again_for_a_settled_video_is_rejected() {
    for settled in [captured(1, 60, 60), released(1, 60)] {
        framework()
            .given(vec![granted(100), reserved(1, 60), settled])
            .when(reserve(1, 60))
            .then_expect_error(CreditError::ReservationExists);
    }
}

#[test]
fn capturing_the_whole_reservation_charges_it() {
    framework()
        .given(vec![granted(100), reserved(1, 60)])
        .when(capture(1, 60))
        .then_expect_events(vec![captured(1, 60, 60)]);
}

#[test]
fn capturing_less_than_reserved_returns_the_rest() {
    framework()
        .given(vec![granted(100), reserved(1, 50)])
        .when(capture(1, 30))
        .then_expect_events(vec![CreditEvent::ReservationCaptured {
            video_id: video(1),
            reserved: c(50),
            captured: c(30),
            released: c(20),
        }]);
    // 100 - 30 captured leaves 70 free for the next video, and not one credit more.
    framework()
        .given(vec![granted(100), reserved(1, 50), captured(1, 50, 30)])
        .when(reserve(2, 70))
        .then_expect_events(vec![reserved(2, 70)]);
    framework()
        .given(vec![granted(100), reserved(1, 50), captured(1, 50, 30)])
        .when(reserve(2, 71))
        .then_expect_error(CreditError::InsufficientCredits {
            requested: c(71),
            available: c(70),
        });
}

#[test]
fn capturing_zero_returns_the_whole_reservation() {
    framework()
        .given(vec![granted(100), reserved(1, 50)])
        .when(capture(1, 0))
        .then_expect_events(vec![captured(1, 50, 0)]);
}

#[test]
fn capturing_more_than_reserved_captures_the_reservation() {
    framework()
        .given(vec![granted(100), reserved(1, 50)])
        .when(capture(1, 51))
        .then_expect_events(vec![captured(1, 50, 50)]);
}

#[test]
fn capturing_a_negative_amount_is_rejected() {
    framework()
        .given(vec![granted(100), reserved(1, 50)])
        .when(capture(1, -1))
        .then_expect_error(CreditError::NonPositiveAmount);
}

#[test]
fn capturing_twice_is_a_no_op() {
    framework()
        .given(vec![granted(100), reserved(1, 50), captured(1, 50, 30)])
        .when(capture(1, 30))
        .then_expect_events(vec![]);
}

#[test]
fn capturing_after_release_is_a_no_op() {
    framework()
        .given(vec![granted(100), reserved(1, 50), released(1, 50)])
        .when(capture(1, 50))
        .then_expect_events(vec![]);
}

#[test]
fn capturing_an_unknown_reservation_is_rejected() {
    framework()
        .given(vec![granted(100), reserved(1, 50)])
        .when(capture(2, 10))
        .then_expect_error(CreditError::UnknownReservation);
}

#[test]
fn releasing_a_reservation_returns_it_to_available() {
    framework()
        .given(vec![granted(100), reserved(1, 50)])
        .when(release(1))
        .then_expect_events(vec![released(1, 50)]);
    framework()
        .given(vec![granted(100), reserved(1, 50), released(1, 50)])
        .when(reserve(2, 100))
        .then_expect_events(vec![reserved(2, 100)]);
}

#[test]
fn releasing_after_capture_is_a_no_op() {
    framework()
        .given(vec![granted(100), reserved(1, 50), captured(1, 50, 30)])
        .when(release(1))
        .then_expect_events(vec![]);
}

#[test]
fn releasing_twice_is_a_no_op() {
    framework()
        .given(vec![granted(100), reserved(1, 50), released(1, 50)])
        .when(release(1))
        .then_expect_events(vec![]);
}

#[test]
fn releasing_an_unknown_reservation_is_rejected() {
    framework()
        .given(vec![granted(100)])
        .when(release(1))
        .then_expect_error(CreditError::UnknownReservation);
}

#[test]
fn the_account_figures_follow_its_events() {
    let mut account = CreditAccount::default();
    assert_eq!(account.balance(), Credits::ZERO);
    assert_eq!(account.available(), Credits::ZERO);

    for event in [
        granted(100),
        purchased(50, "pi_1"),
        reserved(1, 40),
        reserved(2, 30),
        reserved(3, 20),
        captured(1, 40, 25),
        released(2, 30),
    ] {
        account.apply(event);
    }

    assert_eq!(account.balance(), c(125));
    assert_eq!(account.reserved(), c(20));
    assert_eq!(account.available(), c(105));
    assert_eq!(account.purchase("pi_1"), Some(c(50)));
    assert_eq!(account.purchase("pi_2"), None);
    assert_eq!(
        account.reservation(video(1)),
        Some(&Reservation {
            amount: c(40),
            state: ReservationState::Captured { captured: c(25) },
        })
    );
    assert_eq!(
        account.reservation(video(2)).map(|r| r.state),
        Some(ReservationState::Released)
    );
    assert!(account
        .reservation(video(3))
        .is_some_and(Reservation::is_open));
    assert_eq!(account.reservation(video(4)), None);
}

fn signup_granted(amount: i64) -> CreditEvent {
    CreditEvent::CreditsGranted {
        amount: c(amount),
        reason: framegate_domain::SIGNUP_REASON.to_string(),
        granted_by: framegate_domain::SIGNUP_GRANTED_BY.to_string(),
    }
}

#[test]
fn sign_up_credits_are_granted_once_in_an_accounts_life() {
    framework()
        .given_no_previous_events()
        .when(CreditCommand::GrantSignup { amount: c(100) })
        .then_expect_events(vec![signup_granted(100)]);
    // Asked again (at verification after registration, or twice): nothing more.
    framework()
        .given(vec![signup_granted(100)])
        .when(CreditCommand::GrantSignup { amount: c(100) })
        .then_expect_events(vec![]);
    // Other grants do not count as the sign-up grant.
    framework()
        .given(vec![granted(50)])
        .when(CreditCommand::GrantSignup { amount: c(100) })
        .then_expect_events(vec![signup_granted(100)]);
}

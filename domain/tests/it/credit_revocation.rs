//! Given/when/then tests of refunds on the `CreditAccount` aggregate: a refunded purchase
//! gives back its unspent share of credits, once per refunded amount, never below zero.

use chrono::DateTime;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use framegate_domain::{
    CreditAccount, CreditCommand, CreditError, CreditEvent, Credits, FixedClock, PaymentDetails,
    PaymentProvider, VideoId,
};
use uuid::Uuid;

const SESSION: &str = "cs_test_refunds";

fn framework() -> TestFramework<CreditAccount> {
    let now = DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp");
    TestFramework::with(FixedClock(now).shared())
}

fn c(value: i64) -> Credits {
    Credits::new(value)
}

fn payment(paid: i64) -> PaymentDetails {
    PaymentDetails {
        provider: PaymentProvider::Stripe,
        checkout_session: SESSION.to_string(),
        payment_intent: Some("pi_refunds".to_string()),
        pack: "starter".to_string(),
        amount_paid: paid,
        currency: "usd".to_string(),
    }
}

/// 1,000 credits for `paid` cents.
fn purchased(paid: i64) -> CreditEvent {
    CreditEvent::CreditsPurchased {
        amount: c(1000),
        payment_reference: SESSION.to_string(),
        payment: Some(payment(paid)),
    }
}

fn revoke(refunded: i64) -> CreditCommand {
    CreditCommand::RevokePurchase {
        payment_reference: SESSION.to_string(),
        refunded,
    }
}

fn revoked(refunded: i64, requested: i64, revoked: i64) -> CreditEvent {
    CreditEvent::CreditsRevoked {
        payment_reference: SESSION.to_string(),
        refunded,
        requested: c(requested),
        revoked: c(revoked),
        shortfall: c(requested - revoked),
    }
}

fn video() -> VideoId {
    VideoId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_1001))
}

fn spent(amount: i64) -> Vec<CreditEvent> {
    vec![
        CreditEvent::CreditsReserved {
            video_id: video(),
            amount: c(amount),
        },
        CreditEvent::ReservationCaptured {
            video_id: video(),
            reserved: c(amount),
            captured: c(amount),
            released: c(0),
        },
    ]
}

fn replay(events: Vec<CreditEvent>) -> CreditAccount {
    let mut account = CreditAccount::default();
    for event in events {
        account.apply(event);
    }
    account
}

#[test]
fn a_purchase_with_payment_details_records_them() {
    let command = CreditCommand::Purchase {
        amount: c(1000),
        payment_reference: SESSION.to_string(),
        payment: Some(payment(1000)),
    };
    framework()
        .given_no_previous_events()
        .when(command)
        .then_expect_events(vec![purchased(1000)]);
}

#[test]
fn a_full_refund_of_an_unspent_purchase_takes_every_credit_back() {
    framework()
        .given(vec![purchased(1000)])
        .when(revoke(1000))
        .then_expect_events(vec![revoked(1000, 1000, 1000)]);
}

#[test]
fn a_refund_after_partial_spending_takes_back_only_what_is_left_and_records_the_shortfall() {
    let mut given = vec![purchased(1000)];
    given.extend(spent(300));
    framework()
        .given(given.clone())
        .when(revoke(1000))
        .then_expect_events(vec![revoked(1000, 1000, 700)]);
    given.push(revoked(1000, 1000, 700));
    let account = replay(given);
    assert_eq!(account.balance(), c(0), "never below zero");
}

#[test]
fn reserved_credits_stay_reserved_through_a_refund() {
    let given = vec![
        purchased(1000),
        CreditEvent::CreditsReserved {
            video_id: video(),
            amount: c(400),
        },
    ];
    framework()
        .given(given)
        .when(revoke(1000))
        .then_expect_events(vec![revoked(1000, 1000, 600)]);
}

#[test]
fn cumulative_partial_refunds_take_back_only_the_increment() {
    framework()
        .given(vec![purchased(1000), revoked(250, 250, 250)])
        .when(revoke(600))
        .then_expect_events(vec![revoked(600, 350, 350)]);
}

#[test]
fn a_redelivered_or_older_refund_takes_nothing_back() {
    for refunded in [600, 250] {
        framework()
            .given(vec![purchased(1000), revoked(600, 600, 600)])
            .when(revoke(refunded))
            .then_expect_events(vec![]);
    }
}

#[test]
fn a_shortfall_is_not_asked_again_by_a_later_refund() {
    // The first refund asked 500 and got 100; the second asks only its own 500.
    let mut given = vec![purchased(1000)];
    given.extend(spent(900));
    given.push(revoked(500, 500, 100));
    framework()
        .given(given)
        .when(revoke(1000))
        .then_expect_events(vec![revoked(1000, 500, 0)]);
}

#[test]
fn shares_round_down_and_a_full_refund_is_everything() {
    // 1,000 credits for 30.00: 10.00 is 333 credits, all of it 1,000.
    framework()
        .given(vec![purchased(3000)])
        .when(revoke(1000))
        .then_expect_events(vec![revoked(1000, 333, 333)]);
    framework()
        .given(vec![purchased(3000), revoked(1000, 333, 333)])
        .when(revoke(3000))
        .then_expect_events(vec![revoked(3000, 667, 667)]);
}

#[test]
fn a_refund_above_the_amount_paid_counts_as_full_and_is_not_repeated() {
    framework()
        .given(vec![purchased(1000)])
        .when(revoke(5000))
        .then_expect_events(vec![revoked(1000, 1000, 1000)]);
    framework()
        .given(vec![purchased(1000), revoked(1000, 1000, 1000)])
        .when(revoke(5000))
        .then_expect_events(vec![]);
}

#[test]
fn refunding_an_unknown_purchase_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(revoke(100))
        .then_expect_error(CreditError::UnknownPurchase);
}

#[test]
fn refunding_a_purchase_recorded_without_payment_is_rejected() {
    let bare = CreditEvent::CreditsPurchased {
        amount: c(1000),
        payment_reference: SESSION.to_string(),
        payment: None,
    };
    framework()
        .given(vec![bare])
        .when(revoke(100))
        .then_expect_error(CreditError::PurchaseWithoutPayment);
}

#[test]
fn a_non_positive_refund_is_rejected() {
    framework()
        .given(vec![purchased(1000)])
        .when(revoke(0))
        .then_expect_error(CreditError::NonPositiveAmount);
}

#[test]
fn the_account_remembers_what_was_refunded_and_asked_back() {
    let account = replay(vec![
        purchased(1000),
        revoked(250, 250, 250),
        revoked(600, 350, 300),
    ]);
    let record = account.purchase_record(SESSION).expect("a purchase");
    assert_eq!(record.refunded, 600);
    assert_eq!(record.revocation_requested, c(600));
    assert_eq!(record.amount_paid, Some(1000));
    assert_eq!(account.balance(), c(450));
    assert_eq!(account.purchase(SESSION), Some(c(1000)));
}

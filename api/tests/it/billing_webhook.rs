//! Stripe's webhook against the real store: a paid session credits once however often and in
//! whatever order its events arrive, a refund or a lost dispute takes back only what is left
//! unspent (and says what it could not), bad, stale and malformed deliveries are refused with nothing done, an
//! event the database could not take is answered 5xx and credited on redelivery, and the
//! events alone explain the balance.

use crate::common;

use common::stripe::{event, payment_intent_of, refunded_charge, FakeStripe, WEBHOOK_SECRET};
use common::{assert_problem, TestApp};
use framegate_api::billing::signature;
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{CreditAccount, CreditCommand, Credits, VideoId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// An app billing through `stripe`, a signed-in buyer (100 sign-up credits), and one open
/// Checkout Session of the default pack (1,000 credits for 1,000 cents) for them.
async fn bought() -> (TestApp, FakeStripe, Uuid, String, String) {
    let stripe = FakeStripe::start().await;
    let config = stripe.config();
    let app = TestApp::with_config(move |c| c.billing.stripe = Some(config)).await;
    let (user, token, _) = app.signed_in_user("payer@example.com").await;
    let response = app
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"pack": "starter"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    let session = body["id"].as_str().expect("id").to_owned();
    (app, stripe, user, token, session)
}

async fn balance(app: &TestApp, token: &str) -> (i64, i64) {
    let body: Value = app
        .get("/v1/credits", Some(token))
        .await
        .json()
        .await
        .expect("json");
    (
        body["balance"].as_i64().expect("balance"),
        body["reserved"].as_i64().expect("reserved"),
    )
}

async fn events_of(app: &TestApp, user: Uuid, event_type: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT payload FROM events
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1 AND event_type = $2
          ORDER BY sequence",
    )
    .bind(user.to_string())
    .bind(event_type)
    .fetch_all(&app.db.pool)
    .await
    .expect("events")
}

/// Spends `amount` of the buyer's credits on a video (reserved and captured), or only
/// reserves it.
async fn spend(app: &TestApp, user: Uuid, amount: i64, capture: bool) {
    let meta = CommandMetadata::new_request(Actor::System);
    let video_id = VideoId::from_uuid(Uuid::now_v7());
    let credits = app.state.store.credits();
    let id = user.to_string();
    let reserve = CreditCommand::Reserve {
        video_id,
        amount: Credits::new(amount),
    };
    credits.execute(&id, reserve, &meta).await.expect("reserve");
    if capture {
        let capture = CreditCommand::Capture {
            video_id,
            amount: Credits::new(amount),
        };
        credits.execute(&id, capture, &meta).await.expect("capture");
    }
}

async fn purchase_of(app: &TestApp, token: &str) -> Value {
    let body: Value = app
        .get("/v1/billing/purchases", Some(token))
        .await
        .json()
        .await
        .expect("json");
    body["items"][0].clone()
}

#[tokio::test]
async fn a_paid_session_credits_once_however_often_and_in_whatever_order_it_is_delivered() {
    let (app, stripe, user, token, session) = bought().await;
    let paid = stripe.paid_session(&session);
    let completed = event("evt_completed", "checkout.session.completed", paid.clone());
    let succeeded = event(
        "evt_async",
        "checkout.session.async_payment_succeeded",
        paid,
    );
    // Two events about one session, the later kind first: the second credits nothing.
    app.deliver_expecting(&succeeded, "processed").await;
    app.deliver_expecting(&completed, "processed").await;
    for _ in 0..4 {
        app.deliver_expecting(&completed, "duplicate").await;
    }
    app.deliver_expecting(&succeeded, "duplicate").await;
    assert_eq!(balance(&app, &token).await, (1100, 0));
    assert_eq!(events_of(&app, user, "CreditsPurchased").await.len(), 1);

    // Another session, its event delivered five times at once.
    let response = app
        .post(
            "/v1/billing/checkout",
            Some(&token),
            json!({"pack": "starter"}),
        )
        .await;
    let second: Value = response.json().await.expect("json");
    let second = second["id"].as_str().expect("id");
    let racing = event(
        "evt_race",
        "checkout.session.completed",
        stripe.paid_session(second),
    );
    let deliveries = (0..5).map(|_| app.deliver(&racing));
    for response in futures::future::join_all(deliveries).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(balance(&app, &token).await, (2100, 0));
    assert_eq!(events_of(&app, user, "CreditsPurchased").await.len(), 2);
}

#[tokio::test]
async fn an_unpaid_session_or_an_unknown_event_type_credits_nothing() {
    let (app, stripe, _, token, session) = bought().await;
    let mut unpaid = stripe.paid_session(&session);
    unpaid["payment_status"] = json!("unpaid");
    let pending = event("evt_unpaid", "checkout.session.completed", unpaid);
    app.deliver_expecting(&pending, "ignored").await;
    let other = event(
        "evt_other",
        "customer.created",
        json!({"id": "cus_1", "object": "customer"}),
    );
    app.deliver_expecting(&other, "ignored").await;
    let mut foreign = stripe.paid_session(&session);
    foreign["metadata"] = json!({});
    let not_ours = event("evt_foreign", "checkout.session.completed", foreign);
    app.deliver_expecting(&not_ours, "ignored").await;
    assert_eq!(balance(&app, &token).await, (100, 0));
    // Ignored events are not remembered: the paid one later still counts.
    let paid = event(
        "evt_unpaid",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    app.deliver_expecting(&paid, "processed").await;
    assert_eq!(balance(&app, &token).await, (1100, 0));
}

#[tokio::test]
async fn a_refund_after_partial_spending_takes_back_only_what_is_unspent() {
    let (app, stripe, user, token, session) = bought().await;
    let paid = event(
        "evt_paid",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    app.deliver_expecting(&paid, "processed").await;
    spend(&app, user, 600, true).await;
    spend(&app, user, 100, false).await;
    assert_eq!(balance(&app, &token).await, (500, 100));

    let refund = event(
        "evt_refund",
        "charge.refunded",
        refunded_charge(&session, 1000, 1000),
    );
    app.deliver_expecting(&refund, "processed").await;
    // 1,000 asked back: 400 were available, 100 stay reserved, 500 were spent.
    assert_eq!(balance(&app, &token).await, (100, 100));
    let revoked = events_of(&app, user, "CreditsRevoked").await;
    assert_eq!(
        revoked,
        vec![json!({"CreditsRevoked": {
            "payment_reference": session,
            "refunded": 1000,
            "requested": 1000,
            "revoked": 400,
            "shortfall": 600,
        }})]
    );
    let purchase = purchase_of(&app, &token).await;
    assert_eq!(purchase["status"], "refunded");
    assert_eq!(purchase["refunded"], 1000);
    assert_eq!(purchase["credits_revoked"], 400);
    assert_eq!(purchase["revocation_shortfall"], 600);
    // Redelivered, or sent again as a new event: nothing more.
    app.deliver_expecting(&refund, "duplicate").await;
    let again = event(
        "evt_refund_again",
        "charge.refunded",
        refunded_charge(&session, 1000, 1000),
    );
    app.deliver_expecting(&again, "processed").await;
    assert_eq!(balance(&app, &token).await, (100, 100));
    assert_eq!(events_of(&app, user, "CreditsRevoked").await.len(), 1);
}

/// A dispute of `session_id`'s charge for `amount`, closed with `status`.
fn closed_dispute(session_id: &str, amount: i64, status: &str) -> Value {
    let id = session_id.trim_start_matches("cs_test_");
    json!({
        "id": format!("dp_{id}"),
        "object": "dispute",
        "amount": amount,
        "charge": format!("ch_{id}"),
        "currency": "usd",
        "payment_intent": payment_intent_of(session_id),
        "reason": "fraudulent",
        "status": status,
    })
}

#[tokio::test]
async fn a_lost_dispute_takes_back_like_a_refund_on_top_of_one_and_a_won_one_takes_nothing() {
    let (app, stripe, user, token, session) = bought().await;
    let paid = event(
        "evt_paid",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    app.deliver_expecting(&paid, "processed").await;
    let won = event(
        "evt_won",
        "charge.dispute.closed",
        closed_dispute(&session, 1000, "won"),
    );
    app.deliver_expecting(&won, "ignored").await;
    assert_eq!(balance(&app, &token).await, (1100, 0));

    // 200 refunded, then the rest (800) lost in a dispute: everything comes back.
    let refund = event(
        "evt_refund",
        "charge.refunded",
        refunded_charge(&session, 1000, 200),
    );
    app.deliver_expecting(&refund, "processed").await;
    spend(&app, user, 500, true).await;
    assert_eq!(balance(&app, &token).await, (400, 0));
    let lost = event(
        "evt_lost",
        "charge.dispute.closed",
        closed_dispute(&session, 800, "lost"),
    );
    app.deliver_expecting(&lost, "processed").await;
    // 800 more asked back: 400 were available, 400 had been spent.
    assert_eq!(balance(&app, &token).await, (0, 0));
    let revoked: Vec<Value> = events_of(&app, user, "CreditsRevoked").await;
    assert_eq!(revoked.len(), 2);
    assert_eq!(
        revoked[1],
        json!({"CreditsRevoked": {
            "payment_reference": session,
            "refunded": 1000,
            "requested": 800,
            "revoked": 400,
            "shortfall": 400,
        }})
    );
    // The same dispute again, as a new event: nothing more.
    let again = event(
        "evt_lost_again",
        "charge.dispute.closed",
        closed_dispute(&session, 800, "lost"),
    );
    app.deliver_expecting(&again, "processed").await;
    assert_eq!(events_of(&app, user, "CreditsRevoked").await.len(), 2);
}

#[tokio::test]
async fn partial_refunds_take_back_only_their_increment_in_any_order() {
    let (app, stripe, user, token, session) = bought().await;
    let paid = event(
        "evt_paid",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    app.deliver_expecting(&paid, "processed").await;
    let quarter = event(
        "evt_r1",
        "charge.refunded",
        refunded_charge(&session, 1000, 250),
    );
    let sixty = event(
        "evt_r2",
        "charge.refunded",
        refunded_charge(&session, 1000, 600),
    );
    app.deliver_expecting(&quarter, "processed").await;
    assert_eq!(balance(&app, &token).await, (850, 0));
    app.deliver_expecting(&sixty, "processed").await;
    assert_eq!(balance(&app, &token).await, (500, 0));
    // The smaller total arriving late (as a new event) takes nothing.
    let late = event(
        "evt_r1_late",
        "charge.refunded",
        refunded_charge(&session, 1000, 250),
    );
    app.deliver_expecting(&late, "processed").await;
    assert_eq!(balance(&app, &token).await, (500, 0));
    let revoked: Vec<i64> = events_of(&app, user, "CreditsRevoked")
        .await
        .iter()
        .map(|e| e["CreditsRevoked"]["revoked"].as_i64().expect("revoked"))
        .collect();
    assert_eq!(revoked, vec![250, 350]);
    let purchase = purchase_of(&app, &token).await;
    assert_eq!(purchase["status"], "partially_refunded");
    assert_eq!(purchase["refunded"], 600);
    assert_eq!(purchase["credits_revoked"], 600);
}

#[tokio::test]
async fn a_refund_delivered_before_its_purchase_is_applied_when_the_purchase_arrives() {
    let (app, stripe, user, token, session) = bought().await;
    let refund = event(
        "evt_early_refund",
        "charge.refunded",
        refunded_charge(&session, 1000, 400),
    );
    app.deliver_expecting(&refund, "processed").await;
    assert_eq!(
        balance(&app, &token).await,
        (100, 0),
        "nothing to take back yet"
    );
    let paid = event(
        "evt_late_paid",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    app.deliver_expecting(&paid, "processed").await;
    assert_eq!(
        balance(&app, &token).await,
        (700, 0),
        "1,000 bought, 400 refunded"
    );
    assert_eq!(events_of(&app, user, "CreditsRevoked").await.len(), 1);
}

#[tokio::test]
async fn bad_stale_and_malformed_deliveries_are_refused_and_do_nothing() {
    let (app, stripe, _, token, session) = bought().await;
    let paid = event(
        "evt_guarded",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    let body = serde_json::to_vec(&paid).expect("json");
    let now = chrono::Utc::now().timestamp();

    let wrong_secret = signature::header(&["whsec_someone_else"], now, &body);
    let response = app.stripe_webhook_with(&body, &wrong_secret).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_signature").await;
    let mut tampered = paid.clone();
    tampered["data"]["object"]["metadata"]["credits"] = json!("1000000");
    let tampered = serde_json::to_vec(&tampered).expect("json");
    let signed_original = signature::header(&[WEBHOOK_SECRET], now, &body);
    let response = app.stripe_webhook_with(&tampered, &signed_original).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_signature").await;
    for header in ["", "t=123", "garbage"] {
        let response = app.stripe_webhook_with(&body, header).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "invalid_signature").await;
    }
    let stale = signature::header(&[WEBHOOK_SECRET], now - 301, &body);
    let response = app.stripe_webhook_with(&body, &stale).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "stale_signature").await;
    let junk = b"{not json";
    let signed_junk = signature::header(&[WEBHOOK_SECRET], now, junk);
    let response = app.stripe_webhook_with(junk, &signed_junk).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed_event").await;
    let no_session = event(
        "evt_bad_object",
        "checkout.session.completed",
        json!({"x": 1}),
    );
    let response = app.deliver(&no_session).await;
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed_event").await;
    assert_eq!(balance(&app, &token).await, (100, 0));

    // Signed by either secret while Stripe rolls it: accepted.
    let rolling = signature::header(&["whsec_old_secret", WEBHOOK_SECRET], now, &body);
    let response = app.stripe_webhook_with(&body, &rolling).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(balance(&app, &token).await, (1100, 0));
}

#[tokio::test]
async fn an_event_the_database_cannot_take_is_a_5xx_and_counts_on_redelivery() {
    let (app, stripe, user, token, session) = bought().await;
    let paid = event(
        "evt_retry",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    // A table the event needs after its purchase is stored is away: the event is not
    // acknowledged, and its redelivery finds the purchase done and completes the rest.
    sqlx::query("ALTER TABLE stripe_refunds RENAME TO stripe_refunds_away")
        .execute(&app.db.pool)
        .await
        .expect("rename");
    let response = app.deliver(&paid).await;
    assert!(response.status().is_server_error(), "{}", response.status());
    sqlx::query("ALTER TABLE stripe_refunds_away RENAME TO stripe_refunds")
        .execute(&app.db.pool)
        .await
        .expect("rename back");
    app.deliver_expecting(&paid, "processed").await;
    app.deliver_expecting(&paid, "duplicate").await;
    assert_eq!(balance(&app, &token).await, (1100, 0));
    assert_eq!(events_of(&app, user, "CreditsPurchased").await.len(), 1);
}

#[tokio::test]
async fn the_events_explain_the_balance_and_the_charge() {
    let (app, stripe, user, token, session) = bought().await;
    let paid = event(
        "evt_explain",
        "checkout.session.completed",
        stripe.paid_session(&session),
    );
    app.deliver_expecting(&paid, "processed").await;
    spend(&app, user, 300, true).await;
    let refund = event(
        "evt_explain_refund",
        "charge.refunded",
        refunded_charge(&session, 1000, 1000),
    );
    app.deliver_expecting(&refund, "processed").await;

    let purchased = events_of(&app, user, "CreditsPurchased").await;
    assert_eq!(
        purchased,
        vec![json!({"CreditsPurchased": {
            "amount": 1000,
            "payment_reference": session,
            "payment": {
                "provider": "stripe",
                "checkout_session": session,
                "payment_intent": payment_intent_of(&session),
                "pack": "starter",
                "amount_paid": 1000,
                "currency": "usd",
            },
        }})]
    );
    // Who caused it: the Stripe event, recorded in the metadata.
    let causes: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'causation_id' FROM events
          WHERE aggregate_id = $1 AND event_type IN ('CreditsPurchased', 'CreditsRevoked')
          ORDER BY sequence",
    )
    .bind(user.to_string())
    .fetch_all(&app.db.pool)
    .await
    .expect("metadata");
    assert_eq!(
        causes,
        vec![
            "stripe_event:evt_explain",
            "stripe_event:evt_explain_refund"
        ]
    );

    // The ledger sums to the balance, and the account rebuilt from its events agrees.
    let ledger: Value = app
        .get("/v1/credits/ledger?limit=100", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    let items = ledger["items"].as_array().expect("items");
    let sum: i64 = items
        .iter()
        .map(|i| i["balance_change"].as_i64().expect("change"))
        .sum();
    let (balance, _) = balance(&app, &token).await;
    assert_eq!((sum, balance), (100 + 1000 - 300 - 800, 0));
    assert_eq!(items[0]["kind"], "revoked");
    assert_eq!(items[0]["balance_change"], -800);
    assert_eq!(items[0]["payment_reference"], session);
    let (account, _) = app
        .state
        .store
        .credits()
        .replay(&user.to_string())
        .await
        .expect("replay");
    let account: CreditAccount = account;
    assert_eq!(account.balance().value(), balance);
    let record = account.purchase_record(&session).expect("the purchase");
    assert_eq!(
        (record.refunded, record.revocation_requested.value()),
        (1000, 1000)
    );
}

//! Login throttling through the real router (issue 12): guessing an account's password from
//! one IP gets that IP throttled, never the owner locked out, and guessing from many IPs is
//! still bounded.
//!
//! Until issue 12 every login attempt counted against the account, whoever made it: ten
//! wrong passwords a minute from anywhere, and the owner's right one was a 429. The API runs
//! behind a trusted proxy here (`FRAMEGATE_TRUST_PROXY=true`), so each request says which
//! client it is for with `X-Forwarded-For`.

use crate::common;

use common::{assert_problem, TestApp, PASSWORD};
use framegate_api::client_ip::ProxyTrust;
use reqwest::{Response, StatusCode};
use serde_json::json;

const VICTIM: &str = "victim@example.com";

async fn app() -> TestApp {
    let app = TestApp::with_config(|c| {
        c.proxies = ProxyTrust::ImmediatePeer;
        c.rate.login_per_minute = 3;
    })
    .await;
    app.register(VICTIM).await;
    app
}

async fn login_from(app: &TestApp, client: &str, email: &str, password: &str) -> Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("send")
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[tokio::test]
async fn an_attacker_exhausting_an_accounts_failures_does_not_lock_its_owner_out() {
    let app = app().await;
    let attacker = "203.0.113.66";
    for _ in 0..3 {
        let guess = login_from(&app, attacker, VICTIM, "wrong password guess").await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    // The attacker is throttled, even with the right password...
    let throttled = login_from(&app, attacker, VICTIM, PASSWORD).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&throttled).is_some_and(|s| s >= 1));
    assert_problem(throttled, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // ...while the owner, from their own address, logs in.
    let owner = login_from(&app, "198.51.100.20", VICTIM, PASSWORD).await;
    assert_eq!(owner.status(), StatusCode::OK);
    let again = login_from(&app, "198.51.100.20", VICTIM, PASSWORD).await;
    assert_eq!(again.status(), StatusCode::OK, "and keeps logging in");
}

#[tokio::test]
async fn an_ip_that_keeps_failing_on_an_account_is_throttled_for_it_while_others_are_not() {
    let app = app().await;
    // Two typos from the owner's address, then a guesser elsewhere spends the rest of the
    // account's failures: the owner, who has failed on it, waits; other IPs do not.
    let owner = "198.51.100.20";
    for _ in 0..2 {
        let typo = login_from(&app, owner, VICTIM, "correct horse battery stapel").await;
        assert_eq!(typo.status(), StatusCode::UNAUTHORIZED);
    }
    let guess = login_from(&app, "203.0.113.66", VICTIM, "wrong password guess").await;
    assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    let refused = login_from(&app, owner, VICTIM, PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused).is_some_and(|s| (1..=60).contains(&s)));
    let elsewhere = login_from(&app, "198.51.100.21", VICTIM, PASSWORD).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_distributed_guesser_gets_one_guess_per_ip_once_the_accounts_failures_are_spent() {
    let app = app().await;
    let mut statuses = Vec::new();
    for round in 0..2 {
        for n in 1..=6 {
            let client = format!("192.0.2.{n}");
            let guess = login_from(&app, &client, VICTIM, &format!("guess {round}/{n}")).await;
            statuses.push(guess.status().as_u16());
        }
    }
    // Round one: each IP's first guess (the account's three, then one per clean IP).
    // Round two: the account is under attack and every one of them has failed on it.
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 401, 429, 429, 429, 429, 429, 429]
    );
    let owner = login_from(&app, "198.51.100.20", VICTIM, PASSWORD).await;
    assert_eq!(owner.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_accounts_are_throttled_like_known_ones() {
    let app = app().await;
    let mut statuses = Vec::new();
    for (network, email) in [(1, VICTIM), (2, "nobody@example.com")] {
        for n in 1..=4 {
            // Addresses of their own per email: each IP's budget is 3 attempts a minute.
            let client = format!("192.0.{network}.{n}");
            let guess = login_from(&app, &client, email, "wrong").await;
            statuses.push(guess.status().as_u16());
            let again = login_from(&app, &client, email, "wrong again").await;
            statuses.push(again.status().as_u16());
        }
    }
    // Per email: 3 failures fill the account's minute (2 from .1, 1 from .2), .2's second
    // try is refused, .3 and .4 get one guess each. Whether the account exists changes
    // nothing.
    let per_email = [401, 401, 401, 429, 401, 429, 401, 429];
    assert_eq!(statuses[..8], per_email);
    assert_eq!(statuses[8..], per_email);
}

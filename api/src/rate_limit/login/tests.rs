//! The failure ledgers on a clock of their own: every `now` is given, so minutes pass in
//! microseconds.

use std::net::Ipv4Addr;

use super::*;

const ACCOUNT: &str = "victim@example.com";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

struct Clock(Instant);

impl Clock {
    fn at(&self, seconds: u64) -> Instant {
        self.0 + Duration::from_secs(seconds)
    }
}

fn clock() -> Clock {
    Clock(Instant::now())
}

/// A wrong password from `ip` at `now`: `Err` when it was not even allowed to try.
fn fail(throttle: &LoginThrottle, ip: IpAddr, now: Instant) -> Result<(), Throttled> {
    throttle.begin(ip, ACCOUNT, now).map(drop)
}

#[test]
fn failures_from_one_ip_throttle_that_ip_on_that_account_and_no_other() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    for n in 0..3 {
        assert!(fail(&throttle, ip(1), clock.at(n)).is_ok(), "failure {n}");
    }
    let refused = fail(&throttle, ip(1), clock.at(3)).expect_err("the guesser is throttled");
    assert!(refused.retry_after > Duration::ZERO);
    assert!(refused.retry_after <= PAIR_WINDOW / 3, "{refused:?}");
    assert!(
        throttle
            .begin(ip(1), "other@example.com", clock.at(3))
            .is_ok(),
        "another account is another record"
    );
}

#[test]
fn the_owner_gets_in_from_another_ip_while_the_account_is_under_attack() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    for n in 0..3 {
        fail(&throttle, ip(1), clock.at(n)).expect("a guess");
    }
    for n in 0..5 {
        let attempt = throttle
            .begin(ip(2), ACCOUNT, clock.at(10 + n))
            .expect("a clean IP may try");
        attempt.accepted_at(clock.at(10 + n));
    }
    assert!(
        fail(&throttle, ip(1), clock.at(20)).is_err(),
        "the guesser still is not"
    );
}

#[test]
fn while_the_account_is_under_attack_each_ip_gets_one_guess_per_window() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    let mut guesses = 0;
    for round in 0..5 {
        for last in 1..=50 {
            if fail(&throttle, ip(last), clock.at(round)).is_ok() {
                guesses += 1;
            }
        }
    }
    assert_eq!(
        guesses, 50,
        "one guess per IP, although each IP has a budget of 3"
    );
    // Once the account's minute has passed it is no longer under attack: an IP may use the
    // rest of its own budget (two more failures of three per window), and no more.
    let later = clock.at(61);
    assert!(fail(&throttle, ip(1), later).is_ok());
    assert!(fail(&throttle, ip(1), later).is_ok());
    assert!(fail(&throttle, ip(1), later).is_err());
}

#[test]
fn a_refused_attempt_under_attack_is_told_when_to_come_back() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    for last in 1..=3 {
        fail(&throttle, ip(last), clock.at(0)).expect("a guess");
    }
    let refused = fail(&throttle, ip(1), clock.at(0)).expect_err("under attack, already failed");
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(60),
        "{refused:?}"
    );
}

#[test]
fn failures_are_forgiven_one_at_a_time() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    for n in 0..3 {
        fail(&throttle, ip(1), clock.at(n)).expect("a guess");
    }
    assert!(fail(&throttle, ip(1), clock.at(100)).is_err());
    // One failure of three is forgiven every five minutes.
    assert!(fail(&throttle, ip(1), clock.at(5 * 60)).is_ok());
    assert!(fail(&throttle, ip(1), clock.at(5 * 60 + 1)).is_err());
}

#[test]
fn concurrent_attempts_are_charged_before_their_passwords_are_checked() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            throttle
                .begin(ip(1), ACCOUNT, clock.at(0))
                .expect("allowed")
        })
        .collect();
    assert!(throttle.begin(ip(1), ACCOUNT, clock.at(0)).is_err());
    drop(in_flight);
}

#[test]
fn right_passwords_are_never_counted_and_clear_the_ips_record() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    fail(&throttle, ip(1), clock.at(0)).expect("a typo");
    fail(&throttle, ip(1), clock.at(1)).expect("another typo");
    for n in 0..20 {
        throttle
            .begin(ip(1), ACCOUNT, clock.at(2))
            .unwrap_or_else(|e| panic!("login {n}: {e:?}"))
            .accepted_at(clock.at(2));
    }
    // Without the login, one more typo would have been all this IP had left.
    for n in 0..3 {
        assert!(
            fail(&throttle, ip(1), clock.at(100)).is_ok(),
            "typo {n} after a login"
        );
    }
}

#[test]
fn records_with_nothing_left_to_forgive_are_forgotten() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    fail(&throttle, ip(1), clock.at(0)).expect("a guess");
    assert_eq!(throttle.records(), (1, 1));
    throttle.ledgers().prune(clock.at(60));
    assert_eq!(throttle.records(), (1, 0), "the account's minute is over");
    throttle.ledgers().prune(clock.at(PAIR_WINDOW.as_secs()));
    assert_eq!(throttle.records(), (0, 0));
}

#[test]
fn a_full_ledger_still_lets_in_accounts_that_are_not_under_attack() {
    let throttle = LoginThrottle::new(3);
    let clock = clock();
    for n in 0..3 {
        fail(&throttle, ip(2), clock.at(n)).expect("a guess");
    }
    // A flood of failing pairs fills the ledger.
    for n in 1..MAX_RECORDS {
        throttle
            .begin(ip(1), &format!("sprayed{n}@example.com"), clock.at(3))
            .map(drop)
            .expect("room");
    }
    assert_eq!(throttle.records(), (MAX_RECORDS, MAX_RECORDS));
    // Someone else logs in: let in, untracked, and a right password refunds nothing.
    throttle
        .begin(ip(7), "owner@example.com", clock.at(4))
        .expect("not locked out by a full ledger")
        .accepted_at(clock.at(4));
    assert_eq!(throttle.records(), (MAX_RECORDS, MAX_RECORDS));
    // The account under attack takes no untracked IP.
    assert!(fail(&throttle, ip(8), clock.at(4)).is_err());
}

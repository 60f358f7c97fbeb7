//! Unit tests of the buckets and the headers (login throttling has its own, in `login`).

use std::net::Ipv4Addr;

use axum::http::StatusCode;
use framegate_domain::{Role, UserId};
use uuid::Uuid;

use super::*;
use crate::auth::Credential;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
}

fn with_slot() -> (Extensions, RateLimitSlot) {
    let slot = RateLimitSlot::default();
    let mut ext = Extensions::new();
    ext.insert(slot.clone());
    (ext, slot)
}

fn principal() -> Principal {
    Principal {
        user_id: UserId::from(Uuid::new_v4()),
        role: Role::User,
        credential: Credential::AccessToken {
            jti: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
        },
    }
}

fn retry_after(error: ApiError) -> Duration {
    match error {
        ApiError::RateLimited { retry_after } => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[test]
fn the_sixty_first_anonymous_request_in_a_minute_is_refused_with_retry_after() {
    let limits = RateLimits::new(&RateConfig::default());
    let (ext, slot) = with_slot();
    for n in 0..60 {
        assert!(limits.check_anonymous(ip(1), &ext).is_ok(), "request {n}");
    }
    let info = slot.get().expect("recorded");
    assert_eq!((info.limit, info.remaining), (60, 0));

    let refused = limits
        .check_anonymous(ip(1), &ext)
        .expect_err("61st refused");
    let wait = retry_after(refused);
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    let response = ApiError::RateLimited { retry_after: wait }.into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let header: u64 = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(header >= 1);
}

#[test]
fn another_ip_is_not_affected_by_a_limited_one() {
    let limits = RateLimits::new(&RateConfig {
        anonymous_per_minute: 3,
        ..RateConfig::default()
    });
    let ext = Extensions::new();
    for _ in 0..3 {
        assert!(limits.check_anonymous(ip(1), &ext).is_ok());
    }
    assert!(limits.check_anonymous(ip(1), &ext).is_err());
    assert!(limits.check_anonymous(ip(2), &ext).is_ok());
}

#[test]
fn an_ipv6_client_shares_one_bucket_per_slash_64() {
    let limits = RateLimits::new(&RateConfig {
        anonymous_per_minute: 2,
        ..RateConfig::default()
    });
    let ext = Extensions::new();
    let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    assert!(limits.check_anonymous(a, &ext).is_ok());
    assert!(limits.check_anonymous(b, &ext).is_ok());
    assert!(limits.check_anonymous(a, &ext).is_err());
    assert!(limits.check_anonymous(other, &ext).is_ok());
}

#[test]
fn the_principal_limit_is_independent_of_the_ip_limit() {
    let limits = RateLimits::new(&RateConfig {
        anonymous_per_minute: 1,
        user_per_minute: 3,
        ..RateConfig::default()
    });
    let (ext, slot) = with_slot();
    assert!(limits.check_anonymous(ip(1), &ext).is_ok());
    assert!(limits.check_anonymous(ip(1), &ext).is_err());

    let alice = principal();
    for _ in 0..3 {
        assert!(limits.check_principal(&alice, &ext).is_ok());
    }
    assert!(retry_after(limits.check_principal(&alice, &ext).expect_err("4th")) > Duration::ZERO);
    assert_eq!(slot.get().map(|i| (i.limit, i.remaining)), Some((3, 0)));
    assert!(
        limits.check_principal(&principal(), &ext).is_ok(),
        "another user has their own bucket"
    );
}

#[test]
fn password_resets_are_limited_per_ip_and_never_per_account() {
    let limits = RateLimits::new(&RateConfig {
        login_per_minute: 3,
        ..RateConfig::default()
    });
    let ext = Extensions::new();
    for n in 0..10 {
        assert!(limits.check_password_reset(ip(n), &ext).is_ok(), "IP {n}");
    }
    for _ in 0..2 {
        assert!(limits.check_password_reset(ip(1), &ext).is_ok());
    }
    assert!(limits.check_password_reset(ip(1), &ext).is_err());
}

#[test]
fn login_limits_do_not_consume_the_anonymous_bucket() {
    let limits = RateLimits::new(&RateConfig {
        anonymous_per_minute: 1,
        login_per_minute: 5,
        ..RateConfig::default()
    });
    let ext = Extensions::new();
    for _ in 0..3 {
        assert!(limits.check_password_reset(ip(1), &ext).is_ok());
    }
    assert!(limits.check_anonymous(ip(1), &ext).is_ok());
}

#[test]
fn the_slot_keeps_the_strictest_outcome() {
    let slot = RateLimitSlot::default();
    let info = |remaining| RateLimitInfo {
        limit: 10,
        remaining,
        reset: Duration::from_secs(1),
    };
    slot.record(info(5));
    slot.record(info(8));
    assert_eq!(slot.get().map(|i| i.remaining), Some(5));
    slot.record(info(0));
    assert_eq!(slot.get().map(|i| i.remaining), Some(0));
}

#[test]
fn headers_show_limit_remaining_and_reset_in_whole_seconds() {
    let mut headers = HeaderMap::new();
    RateLimitInfo {
        limit: 60,
        remaining: 57,
        reset: Duration::from_millis(2500),
    }
    .apply(&mut headers);
    let get = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(get(RATELIMIT_LIMIT).as_deref(), Some("60"));
    assert_eq!(get(RATELIMIT_REMAINING).as_deref(), Some("57"));
    assert_eq!(get(RATELIMIT_RESET).as_deref(), Some("3"));
}

#[test]
fn a_login_attempt_pays_the_ips_bucket_and_failures_throttle_only_the_failing_ip() {
    let limits = RateLimits::new(&RateConfig {
        login_per_minute: 3,
        ..RateConfig::default()
    });
    let (ext, slot) = with_slot();
    for _ in 0..3 {
        drop(
            limits
                .check_login_attempt(ip(1), "Victim@Example.com ", &ext)
                .expect("a guess"),
        );
    }
    let refused = limits
        .check_login_attempt(ip(1), "someone.else@example.com", &ext)
        .expect_err("the IP's bucket is empty");
    assert!(retry_after(refused) > Duration::ZERO);
    assert_eq!(slot.get().map(|i| i.remaining), Some(0));
    limits
        .check_login_attempt(ip(2), "victim@example.com", &ext)
        .expect("the owner's IP has not been failing")
        .password_accepted();
}

#[test]
fn login_attempts_do_not_use_the_password_reset_buckets() {
    let limits = RateLimits::new(&RateConfig {
        login_per_minute: 2,
        ..RateConfig::default()
    });
    let ext = Extensions::new();
    for n in 0..4 {
        limits
            .check_login_attempt(ip(n), "victim@example.com", &ext)
            .expect("the right password from fresh IPs")
            .password_accepted();
    }
    assert!(limits.check_password_reset(ip(9), &ext).is_ok());
}

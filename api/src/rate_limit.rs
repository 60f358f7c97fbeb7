//! Request rate limits: per client IP for anonymous calls, per user for authenticated ones,
//! and a stricter pair of buckets (per IP and per account) for login and password reset.
//!
//! The buckets are in-memory GCRA limiters (governor), so each API process limits on its own;
//! behind N replicas the effective limit is N times the configured one. Every decision is
//! reported to the caller in the IETF draft `RateLimit-Limit` / `RateLimit-Remaining` /
//! `RateLimit-Reset` headers, and a refusal is a 429 problem with `Retry-After`.
//!
//! Who is checked where: `layer` resolves the caller before the request runs and charges
//! either the user's bucket (good credentials) or the IP's (none, or credentials that do not
//! authenticate, on any route), so neither guessing tokens nor sending junk credentials to a
//! public endpoint escapes the limit. The `/v1/auth/*` endpoints always count against the IP. The `Principal` extractor charges only on routers
//! without the layer. Which IP a request comes from is `client_ip`'s decision (proxies).

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Extensions, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::{api_keys, authenticate, presented_api_key, route_family, Principal};
use crate::client_ip::{client_ip, ProxyTrust};
use crate::error::ApiError;
use crate::state::AppState;

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Requests per minute for each kind of caller. A value of 0 is treated as 1.
#[derive(Clone, Debug)]
pub struct RateConfig {
    /// Per client IP, for requests without credentials.
    pub anonymous_per_minute: u32,
    /// Per user (tokens and API keys of one user share the bucket).
    pub user_per_minute: u32,
    /// Login and password reset: per client IP, and separately per account.
    pub login_per_minute: u32,
    /// Per client IP: API keys looked up in the store because this process could not
    /// answer for them from memory (a key's first use, or one nobody has).
    pub key_lookups_per_minute: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            anonymous_per_minute: 60,
            user_per_minute: 600,
            login_per_minute: 10,
            key_lookups_per_minute: 600,
        }
    }
}

/// The outcome of one check, as the response headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// The bucket size (requests per minute).
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Until the bucket is full again (or, after a refusal, until the next request is allowed).
    pub reset: Duration,
}

impl RateLimitInfo {
    /// Writes the three `RateLimit-*` headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let reset = self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0);
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(reset));
    }
}

/// Per-request slot where checks made anywhere during the request (middleware, extractor,
/// handler) leave their outcome for `layer` to put on the response. The strictest outcome
/// (fewest requests remaining) wins.
#[derive(Debug, Clone, Default)]
pub struct RateLimitSlot(Arc<Mutex<Option<RateLimitInfo>>>);

impl RateLimitSlot {
    pub fn record(&self, info: RateLimitInfo) {
        // A poisoned lock only means another check panicked mid-record; the value is still
        // a plain Option we can overwrite.
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none_or(|current| info.remaining <= current.remaining) {
            *slot = Some(info);
        }
    }

    pub fn get(&self) -> Option<RateLimitInfo> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type Limiter<K> = DefaultKeyedRateLimiter<K, StateInformationMiddleware>;

/// All rate-limit buckets of this process.
pub struct RateLimits {
    anonymous: Limiter<IpAddr>,
    principals: Limiter<String>,
    login_ips: Limiter<IpAddr>,
    login_accounts: Limiter<String>,
    key_lookups: Limiter<IpAddr>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("anonymous_keys", &self.anonymous.len())
            .field("principal_keys", &self.principals.len())
            .finish_non_exhaustive()
    }
}

fn per_minute<K: Hash + Eq + Clone>(n: u32) -> Limiter<K> {
    let burst = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(burst)).with_middleware::<StateInformationMiddleware>()
}

impl RateLimits {
    pub fn new(config: &RateConfig) -> Self {
        Self {
            anonymous: per_minute(config.anonymous_per_minute),
            principals: per_minute(config.user_per_minute),
            login_ips: per_minute(config.login_per_minute),
            login_accounts: per_minute(config.login_per_minute),
            key_lookups: per_minute(config.key_lookups_per_minute),
        }
    }

    /// One request from an anonymous caller at `ip`.
    pub fn check_anonymous(&self, ip: IpAddr, ext: &Extensions) -> Result<(), ApiError> {
        check(&self.anonymous, &bucket_ip(ip), ext.get::<RateLimitSlot>())
    }

    /// One lookup of an API key in the store for a caller at `ip`.
    pub fn check_key_lookup(&self, ip: IpAddr, ext: &Extensions) -> Result<(), ApiError> {
        check(
            &self.key_lookups,
            &bucket_ip(ip),
            ext.get::<RateLimitSlot>(),
        )
    }

    /// One request from an authenticated caller; called by the `Principal` extractor once per
    /// request.
    pub fn check_principal(&self, principal: &Principal, ext: &Extensions) -> Result<(), ApiError> {
        check(
            &self.principals,
            &principal.scope(),
            ext.get::<RateLimitSlot>(),
        )
    }

    /// One attempt at login, password reset or reset confirmation for `account` (an email or a
    /// user id) from `ip`. Both the IP's and the account's buckets must allow it: the first
    /// stops one client trying many accounts, the second many clients trying one account.
    pub fn check_login(&self, ip: IpAddr, account: &str, ext: &Extensions) -> Result<(), ApiError> {
        let slot = ext.get::<RateLimitSlot>();
        check(&self.login_ips, &bucket_ip(ip), slot)?;
        check(&self.login_accounts, &account.trim().to_lowercase(), slot)
    }

    /// Forgets buckets that are full again, bounding memory; call it periodically (every few
    /// minutes is plenty).
    pub fn retain_recent(&self) {
        self.anonymous.retain_recent();
        self.principals.retain_recent();
        self.login_ips.retain_recent();
        self.login_accounts.retain_recent();
        self.key_lookups.retain_recent();
        self.key_lookups.shrink_to_fit();
        self.anonymous.shrink_to_fit();
        self.principals.shrink_to_fit();
        self.login_ips.shrink_to_fit();
        self.login_accounts.shrink_to_fit();
    }
}

fn check<K: Hash + Eq + Clone>(
    limiter: &Limiter<K>,
    key: &K,
    slot: Option<&RateLimitSlot>,
) -> Result<(), ApiError> {
    match limiter.check_key(key) {
        Ok(snapshot) => {
            let quota = snapshot.quota();
            let limit = quota.burst_size().get();
            let remaining = snapshot.remaining_burst_capacity();
            if let Some(slot) = slot {
                slot.record(RateLimitInfo {
                    limit,
                    remaining,
                    reset: quota.replenish_interval() * limit.saturating_sub(remaining),
                });
            }
            Ok(())
        }
        Err(not_until) => {
            let retry_after = not_until.wait_time_from(limiter.clock().now());
            if let Some(slot) = slot {
                slot.record(RateLimitInfo {
                    limit: not_until.quota().burst_size().get(),
                    remaining: 0,
                    reset: retry_after,
                });
            }
            Err(ApiError::RateLimited { retry_after })
        }
    }
}

/// The bucket key for an address: IPv6 clients usually own a whole /64, so they share one
/// bucket per /64 rather than getting 2^64 of them.
fn bucket_ip(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`) applying the limits to every request.
///
/// It resolves the caller first (the credential cache makes that cheap) and leaves the
/// `Principal` in the request's extensions for the extractor, so the bucket is charged once,
/// before any work: to the user when the credentials are good, to the IP otherwise, whatever
/// the route does with them.
pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // The sign-up, login, refresh and reset endpoints do not act for a caller: they are
    // charged to the IP whatever credentials come along, so one valid token cannot lend its
    // larger user bucket to mass registrations.
    let acts_for_caller = route_family(request.uri().path()) != "auth";
    // An API key the cache cannot answer for costs a lookup in the store: the caller's IP
    // pays for it from a budget of lookups before it is made, so junk keys cost a bounded
    // number of queries (and each is remembered briefly, so repeating it costs nothing). A
    // valid key is looked up once and then answered from memory; its requests go to its
    // user's bucket as always.
    if acts_for_caller {
        if let Some(secret) = presented_api_key(request.headers()) {
            if !api_keys::resolved_without_lookup(&state, secret) {
                let connect = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| *addr);
                let ip = client_ip(request.headers(), connect, &state.config.proxies);
                if let Err(refused) = state.limits.check_key_lookup(ip, request.extensions()) {
                    tracing::info!(%ip, "API key lookup limit reached");
                    return refused.into_response();
                }
            }
        }
    }
    let principal = if acts_for_caller && request.headers().contains_key(header::AUTHORIZATION) {
        // A refusal (bad token, database away) is the handler's to report; here the caller
        // simply counts as anonymous.
        authenticate(&state, request.headers()).await.ok().flatten()
    } else {
        None
    };
    if let Some(principal) = &principal {
        request.extensions_mut().insert(principal.clone());
    }
    enforce(
        &state.limits,
        &state.config.proxies,
        principal.as_ref(),
        request,
        next,
    )
    .await
}

/// What `layer` does once the caller is known (`None`: anonymous, or credentials that do
/// not authenticate), without the application state (usable from tests and other routers).
pub async fn enforce(
    limits: &RateLimits,
    proxies: &ProxyTrust,
    principal: Option<&Principal>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = RateLimitSlot::default();
    request.extensions_mut().insert(slot.clone());
    let connect = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let ip = client_ip(request.headers(), connect, proxies);

    let allowed = match principal {
        Some(principal) => check(&limits.principals, &principal.scope(), Some(&slot)),
        None => check(&limits.anonymous, &bucket_ip(ip), Some(&slot)),
    };
    let mut response = match allowed {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            match principal {
                Some(principal) => {
                    tracing::info!(user = %principal.user_id, "user rate limit reached")
                }
                None => tracing::info!(%ip, "anonymous rate limit reached"),
            }
            refused.into_response()
        }
    };
    if let Some(info) = slot.get() {
        info.apply(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
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
        assert!(
            retry_after(limits.check_principal(&alice, &ext).expect_err("4th")) > Duration::ZERO
        );
        assert_eq!(slot.get().map(|i| (i.limit, i.remaining)), Some((3, 0)));
        assert!(
            limits.check_principal(&principal(), &ext).is_ok(),
            "another user has their own bucket"
        );
    }

    #[test]
    fn login_attempts_for_one_account_are_limited_across_ips() {
        let limits = RateLimits::new(&RateConfig {
            login_per_minute: 3,
            ..RateConfig::default()
        });
        let ext = Extensions::new();
        for n in 0..3 {
            assert!(limits
                .check_login(ip(n), "victim@example.com", &ext)
                .is_ok());
        }
        assert!(
            limits
                .check_login(ip(9), "Victim@Example.com ", &ext)
                .is_err(),
            "same account, new IP"
        );
        assert!(
            limits
                .check_login(ip(9), "someone@example.com", &ext)
                .is_ok(),
            "other account"
        );
    }

    #[test]
    fn login_attempts_from_one_ip_are_limited_across_accounts() {
        let limits = RateLimits::new(&RateConfig {
            login_per_minute: 3,
            ..RateConfig::default()
        });
        let ext = Extensions::new();
        for n in 0..3 {
            assert!(limits
                .check_login(ip(1), &format!("user{n}@example.com"), &ext)
                .is_ok());
        }
        assert!(limits
            .check_login(ip(1), "fresh@example.com", &ext)
            .is_err());
        assert!(limits.check_login(ip(2), "fresh@example.com", &ext).is_ok());
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
            assert!(limits.check_login(ip(1), "a@example.com", &ext).is_ok());
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
}

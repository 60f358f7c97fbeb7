//! Request rate limits: per client IP for anonymous calls, per user for authenticated ones,
//! and stricter ones for the `/v1/auth` endpoints: per IP for every attempt, failed logins
//! per (IP, account) and per account ([`login`]: a guesser cannot lock the owner out).
//! Password-reset requests and confirmations are limited per IP only: an account-wide limit
//! is one anyone can spend to keep the owner out.
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

pub mod login;

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Login and password reset: attempts per client IP; failed logins per account (and the
    /// same number per IP and account every 15 minutes, see [`login`]).
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
    login_failures: login::LoginThrottle,
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
            login_failures: login::LoginThrottle::new(config.login_per_minute),
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

    /// One login attempt on `account` (a normalised email, known or not) from `ip`: charged
    /// to the IP's bucket, then to the failure ledgers of [`login`], which refuse an IP that
    /// has been failing on this account but never one that has not. The attempt counts as a
    /// failure unless [`login::LoginAttempt::password_accepted`] is called on it.
    pub fn check_login_attempt(
        &self,
        ip: IpAddr,
        account: &str,
        ext: &Extensions,
    ) -> Result<login::LoginAttempt<'_>, ApiError> {
        let slot = ext.get::<RateLimitSlot>();
        check(&self.login_ips, &bucket_ip(ip), slot)?;
        let account = account.trim().to_lowercase();
        self.login_failures
            .begin(bucket_ip(ip), &account, Instant::now())
            .map_err(|login::Throttled { retry_after }| {
                if let Some(slot) = slot {
                    slot.record(RateLimitInfo {
                        limit: self.login_failures.burst(),
                        remaining: 0,
                        reset: retry_after,
                    });
                }
                ApiError::RateLimited { retry_after }
            })
    }

    /// One password-reset request or confirmation for `account` (an email or a user id) from
    /// `ip`. Both the IP's and the account's buckets must allow it: the first stops one
    /// client trying many accounts, the second many clients trying one account. (Logins use
    /// [`RateLimits::check_login_attempt`] instead, which counts failures only.)
    /// A password-reset request or confirmation: per client IP only. Refusing by account
    /// would let anyone who floods an address (or, for confirmations, sends junk tokens
    /// naming a user id) keep its owner out; the mail outbox's sender bounds the mail an
    /// account gets instead (one token a minute), and a reset token's 256 random bits bound
    /// guessing.
    pub fn check_password_reset(&self, ip: IpAddr, ext: &Extensions) -> Result<(), ApiError> {
        check(&self.login_ips, &bucket_ip(ip), ext.get::<RateLimitSlot>())
    }

    /// Forgets buckets that are full again, bounding memory; call it periodically (every few
    /// minutes is plenty).
    pub fn retain_recent(&self) {
        self.anonymous.retain_recent();
        self.principals.retain_recent();
        self.login_ips.retain_recent();
        self.login_failures.retain_recent();
        self.key_lookups.retain_recent();
        self.key_lookups.shrink_to_fit();
        self.anonymous.shrink_to_fit();
        self.principals.shrink_to_fit();
        self.login_ips.shrink_to_fit();
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
mod tests;

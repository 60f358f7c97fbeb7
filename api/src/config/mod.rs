//! API configuration from the environment (`FRAMEGATE_*`), validated at start-up.
//!
//! Bad configuration fails fast with a message naming the variable (never a secret's value).
//! This module reads the settings in order; its parts own the concerns with rules of their
//! own: `secrets` (the deployment, `FRAMEGATE_ENV=production`'s checks, the JWT secret),
//! `network` (listen address, connection limits, proxies). Billing, streams, blobs and
//! moderation rules parse themselves in their own modules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use framegate_commands::blobs::BlobConfig;
use framegate_commands::deployment::{Deployment, Secret};
use framegate_domain::catalog::Catalog;
use framegate_domain::routing::{configured_providers, RoutingPolicy};
use framegate_domain::ProviderKind;

use crate::billing::BillingConfig;
use crate::client_ip::ProxyTrust;
use crate::images::{ImageLimits, RuleSet, RULES_ENV};
use crate::mail::MailConfig;
use crate::rate_limit::RateConfig;
use crate::server::HttpLimits;
use crate::streams::StreamConfig;

mod network;
mod secrets;
#[cfg(test)]
mod tests;

pub use secrets::MIN_JWT_SECRET_LEN;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub http_addr: SocketAddr,
    /// What `FRAMEGATE_ENV` says (production checks secrets and requires them).
    pub deployment: Deployment,
    /// The HS256 key of access tokens (and, derived, of sealed idempotent responses).
    pub jwt_secret: Secret<Vec<u8>>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub verification_ttl: Duration,
    pub reset_ttl: Duration,
    /// Credits every new user receives.
    pub signup_credits: i64,
    /// When they receive them (`FRAMEGATE_SIGNUP_CREDITS_ON`).
    pub signup_credits_on: SignupCreditsOn,
    /// Where links in emails point.
    pub public_url: String,
    pub mail: MailConfig,
    pub rate: RateConfig,
    /// Whose X-Forwarded-For entries are believed (`FRAMEGATE_TRUST_PROXY`,
    /// `FRAMEGATE_TRUSTED_PROXIES`; see `client_ip`).
    pub proxies: ProxyTrust,
    /// Connection cap and slow-client timeouts (`FRAMEGATE_HTTP_*`; see `server`).
    pub http: HttpLimits,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long an Idempotency-Key claim outlives its request's last sign of life: a retry
    /// after the request's process died waits at most this long.
    pub idempotency_lease: Duration,
    /// Concurrent argon2 hashes (each ~19 MiB and tens of ms of CPU).
    pub max_concurrent_hashes: usize,
    /// Models, capabilities and per-second prices.
    pub catalog: Catalog,
    /// Providers that can take jobs (the simulator always; others once configured).
    pub enabled_providers: Vec<ProviderKind>,
    /// How `provider: auto` ranks the enabled providers.
    pub routing: RoutingPolicy,
    /// What an uploaded image may be: file size, sides, decoder memory.
    pub images: ImageLimits,
    /// Image uploads decoded at once; each decode may use up to `images.max_alloc` bytes.
    pub image_concurrency: usize,
    /// The moderation rules every upload is reviewed by; none (the default) allows all.
    pub image_moderation: RuleSet,
    /// Blob storage (uploaded images, generated videos); `AppState` builds the filesystem
    /// adapter from it, `AppState::with_blobs` swaps in another.
    pub blobs: BlobConfig,
    /// How long signed download URLs stay valid.
    pub download_ttl: Duration,
    /// Video event streams: caps, lifetime, pacing (`FRAMEGATE_SSE_*`; see `streams`).
    pub streams: StreamConfig,
    /// Credit packs and Stripe (`FRAMEGATE_CREDIT_PACKS`, `FRAMEGATE_STRIPE_*`; see `billing`).
    pub billing: BillingConfig,
    /// The bearer token `GET /metrics` asks for (`FRAMEGATE_METRICS_TOKEN`); none: open.
    pub metrics_token: Option<crate::metrics::MetricsToken>,
    /// Where the OpenAI-compatible Videos API is mounted (`FRAMEGATE_OPENAI_PREFIX`; see
    /// `openai`).
    pub openai_prefix: String,
}

impl ApiConfig {
    /// Defaults suitable for one machine and for tests; `jwt_secret` is random.
    pub fn development() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            deployment: Deployment::Development,
            jwt_secret: secrets::random_jwt_secret(),
            jwt_issuer: "framegate".to_owned(),
            jwt_audience: "framegate-api".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            verification_ttl: Duration::from_secs(48 * 3600),
            reset_ttl: Duration::from_secs(3600),
            signup_credits: 100,
            signup_credits_on: SignupCreditsOn::Verify,
            public_url: "http://127.0.0.1:8080".to_owned(),
            mail: MailConfig::default(),
            rate: RateConfig::default(),
            proxies: ProxyTrust::None,
            http: HttpLimits::default(),
            body_limit: 1024 * 1024,
            idempotency_lease: Duration::from_secs(10),
            max_concurrent_hashes: 4,
            catalog: Catalog::defaults(),
            enabled_providers: vec![ProviderKind::Simulator],
            routing: RoutingPolicy::Price,
            images: ImageLimits::default(),
            image_concurrency: 2,
            image_moderation: RuleSet::default(),
            blobs: development_blobs(),
            download_ttl: Duration::from_secs(3600),
            streams: StreamConfig::default(),
            billing: BillingConfig::development("http://127.0.0.1:8080"),
            metrics_token: None,
            openai_prefix: crate::openai::DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Reads every `FRAMEGATE_*` setting over the development defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::development();
        config.deployment = secrets::deployment(&get)?;
        config.http_addr = network::http_addr(&get, config.http_addr, config.deployment)?;
        if get("FRAMEGATE_HTTP_ADDR").is_some() {
            config.public_url = format!("http://{}", config.http_addr);
        }
        if let Some(secret) = secrets::jwt_secret(&get, config.deployment)? {
            config.jwt_secret = secret;
        }
        if let Some(v) = get("FRAMEGATE_JWT_ISSUER") {
            config.jwt_issuer = v;
        }
        if let Some(v) = get("FRAMEGATE_JWT_AUDIENCE") {
            config.jwt_audience = v;
        }
        if let Some(v) = get("FRAMEGATE_SIGNUP_CREDITS") {
            config.signup_credits = parse("FRAMEGATE_SIGNUP_CREDITS", &v)?;
            if config.signup_credits < 0 {
                return Err(ConfigError {
                    variable: "FRAMEGATE_SIGNUP_CREDITS",
                    message: "must not be negative".to_owned(),
                });
            }
        }
        if let Some(v) = get("FRAMEGATE_SIGNUP_CREDITS_ON") {
            config.signup_credits_on = match v.trim() {
                "verify" => SignupCreditsOn::Verify,
                "register" => SignupCreditsOn::Register,
                other => {
                    return Err(ConfigError {
                        variable: "FRAMEGATE_SIGNUP_CREDITS_ON",
                        message: format!("{other:?}: expected verify or register"),
                    })
                }
            };
        }
        if let Some(v) = get("FRAMEGATE_PUBLIC_URL") {
            config.public_url = v.trim_end_matches('/').to_owned();
        }
        if let Some(v) = get("FRAMEGATE_SMTP_URL") {
            config.mail.smtp_url = Some(Secret::new(v));
        }
        if let Some(v) = get("FRAMEGATE_MAIL_FROM") {
            config.mail.from = v;
        }
        if let Some(v) = get("FRAMEGATE_MAILBOX_DIR") {
            config.mail.mailbox_dir = PathBuf::from(v);
        }
        if let Some(v) = get("FRAMEGATE_RATE_ANONYMOUS_PER_MINUTE") {
            config.rate.anonymous_per_minute = positive("FRAMEGATE_RATE_ANONYMOUS_PER_MINUTE", &v)?;
        }
        if let Some(v) = get("FRAMEGATE_RATE_USER_PER_MINUTE") {
            config.rate.user_per_minute = positive("FRAMEGATE_RATE_USER_PER_MINUTE", &v)?;
        }
        if let Some(v) = get("FRAMEGATE_RATE_KEY_LOOKUPS_PER_MINUTE") {
            config.rate.key_lookups_per_minute =
                positive("FRAMEGATE_RATE_KEY_LOOKUPS_PER_MINUTE", &v)?;
        }
        if let Some(v) = get("FRAMEGATE_RATE_LOGIN_PER_MINUTE") {
            config.rate.login_per_minute = positive("FRAMEGATE_RATE_LOGIN_PER_MINUTE", &v)?;
        }
        config.proxies = network::proxies(&get)?;
        config.http = network::http_limits(&get)?;
        config.streams = StreamConfig::from_lookup(&get)?;
        config.billing = BillingConfig::from_lookup(&get, &config.public_url)?;
        if let Some(v) = get("FRAMEGATE_IDEMPOTENCY_LEASE_SECONDS") {
            let seconds = positive("FRAMEGATE_IDEMPOTENCY_LEASE_SECONDS", &v)?;
            config.idempotency_lease = Duration::from_secs(u64::from(seconds));
        }
        if let Some(v) = get("FRAMEGATE_OPENAI_PREFIX") {
            config.openai_prefix =
                crate::openai::parse_prefix(&v).map_err(|message| ConfigError {
                    variable: "FRAMEGATE_OPENAI_PREFIX",
                    message,
                })?;
        }
        if let Some(v) = get("FRAMEGATE_BODY_LIMIT_BYTES") {
            config.body_limit = parse("FRAMEGATE_BODY_LIMIT_BYTES", &v)?;
        }
        if let Some(v) = get("FRAMEGATE_DOWNLOAD_TTL_SECONDS") {
            config.download_ttl =
                Duration::from_secs(u64::from(positive("FRAMEGATE_DOWNLOAD_TTL_SECONDS", &v)?));
        }
        // Download links point at the API's public URL unless blob storage says otherwise.
        let public_url = config.public_url.clone();
        config.blobs = BlobConfig::from_lookup(|name| match name {
            "FRAMEGATE_PUBLIC_URL" => get(name).or_else(|| Some(public_url.clone())),
            _ => get(name),
        })
        .map_err(|e| {
            // Blob errors are text that names its variable; name it here too.
            let message = e.to_string();
            let variable = [
                "FRAMEGATE_BLOB_SIGNING_KEY",
                "FRAMEGATE_S3_BUCKET",
                "FRAMEGATE_S3_PATH_STYLE",
                "FRAMEGATE_PUBLIC_URL",
                "FRAMEGATE_ENV",
            ]
            .into_iter()
            .find(|variable| message.contains(variable))
            .unwrap_or("FRAMEGATE_BLOB_STORE");
            ConfigError { variable, message }
        })?;
        if let Some(v) = get("FRAMEGATE_IMAGE_CONCURRENCY") {
            config.image_concurrency = positive("FRAMEGATE_IMAGE_CONCURRENCY", &v)? as usize;
        }
        if let Some(v) = get(RULES_ENV) {
            config.image_moderation = RuleSet::parse(&v).map_err(|e| {
                let message = e.to_string();
                ConfigError {
                    variable: RULES_ENV,
                    // The rule set's errors already start with the variable's name.
                    message: message
                        .strip_prefix(&format!("{RULES_ENV}: "))
                        .unwrap_or(&message)
                        .to_owned(),
                }
            })?;
        }
        config.enabled_providers = configured_providers(&get).map_err(|message| ConfigError {
            variable: "FRAMEGATE_SIMULATOR",
            message,
        })?;
        config.routing = RoutingPolicy::from_lookup(&get).map_err(|message| ConfigError {
            variable: "FRAMEGATE_PROVIDER_ROUTING",
            message,
        })?;
        if let Some(path) = get("FRAMEGATE_CATALOG_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                variable: "FRAMEGATE_CATALOG_FILE",
                message: format!("{path}: {e}"),
            })?;
            config.catalog = Catalog::from_json(&text).map_err(|e| ConfigError {
                variable: "FRAMEGATE_CATALOG_FILE",
                message: format!("{path}: {e}"),
            })?;
        }
        config.metrics_token = get(crate::metrics::MetricsToken::ENV)
            .and_then(|token| crate::metrics::MetricsToken::new(&token));
        Ok(config)
    }
}

/// The filesystem store under `.framegate/blobs` with a random signing key.
fn development_blobs() -> BlobConfig {
    BlobConfig::from_lookup(|_| None)
        .unwrap_or_else(|error| unreachable!("the default blob configuration is valid: {error}"))
}

/// When a new user receives the sign-up credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupCreditsOn {
    /// When they verify their email address: an address nobody reads earns nothing, so
    /// scripted registrations of random addresses farm no credits.
    Verify,
    /// At registration (trusted or invite-only deployments).
    Register,
}

impl SignupCreditsOn {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupCreditsOn::Verify => "verification",
            SignupCreditsOn::Register => "registration",
        }
    }
}

pub(crate) fn parse<T: std::str::FromStr>(
    variable: &'static str,
    value: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError {
        variable,
        message: format!("{value:?}: {e}"),
    })
}

pub(crate) fn positive(variable: &'static str, value: &str) -> Result<u32, ConfigError> {
    match parse::<u32>(variable, value)? {
        0 => Err(ConfigError {
            variable,
            message: "must be at least 1".to_owned(),
        }),
        n => Ok(n),
    }
}

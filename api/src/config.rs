//! API configuration from the environment (`FRAMEGATE_*`), validated at start-up.
//!
//! Bad configuration fails fast with a message naming the variable. In production mode
//! (`FRAMEGATE_ENV=production`) a JWT secret is mandatory; in development one is generated
//! (tokens then do not survive a restart) and a warning says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use framegate_commands::blobs::BlobConfig;
use framegate_domain::catalog::Catalog;
use framegate_domain::routing::{configured_providers, RoutingPolicy};
use framegate_domain::ProviderKind;
use rand::RngCore as _;

use crate::billing::BillingConfig;
use crate::client_ip::ProxyTrust;
use crate::images::{ImageLimits, RuleSet, RULES_ENV};
use crate::mail::MailConfig;
use crate::rate_limit::RateConfig;
use crate::server::HttpLimits;
use crate::streams::StreamConfig;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub http_addr: SocketAddr,
    pub production: bool,
    pub jwt_secret: Vec<u8>,
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
}

impl ApiConfig {
    /// Defaults suitable for one machine and for tests; `jwt_secret` is random.
    pub fn development() -> Self {
        let mut secret = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            production: false,
            jwt_secret: secret,
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
        }
    }

    /// Reads every `FRAMEGATE_*` setting over the development defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::development();
        config.production = match get("FRAMEGATE_ENV").as_deref() {
            None | Some("development") | Some("dev") | Some("test") => false,
            Some("production") | Some("prod") => true,
            Some(other) => {
                return Err(ConfigError {
                    variable: "FRAMEGATE_ENV",
                    message: format!("expected development or production, got {other:?}"),
                })
            }
        };
        if let Some(addr) = get("FRAMEGATE_HTTP_ADDR") {
            config.http_addr = parse("FRAMEGATE_HTTP_ADDR", &addr)?;
            config.public_url = format!("http://{}", config.http_addr);
        }
        match get("FRAMEGATE_JWT_SECRET") {
            Some(secret) if secret.len() >= 32 => config.jwt_secret = secret.into_bytes(),
            Some(_) => {
                return Err(ConfigError {
                    variable: "FRAMEGATE_JWT_SECRET",
                    message: "must be at least 32 characters".to_owned(),
                })
            }
            None if config.production => {
                return Err(ConfigError {
                    variable: "FRAMEGATE_JWT_SECRET",
                    message: "is required when FRAMEGATE_ENV=production".to_owned(),
                })
            }
            None => tracing::warn!(
                "FRAMEGATE_JWT_SECRET is not set: using a random secret; tokens will not survive a restart"
            ),
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
            config.mail.smtp_url = Some(v);
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
        config.proxies = proxies(&get)?;
        config.http = http_limits(&get)?;
        config.streams = StreamConfig::from_lookup(&get)?;
        config.billing = BillingConfig::from_lookup(&get, &config.public_url)?;
        if let Some(v) = get("FRAMEGATE_IDEMPOTENCY_LEASE_SECONDS") {
            let seconds = positive("FRAMEGATE_IDEMPOTENCY_LEASE_SECONDS", &v)?;
            config.idempotency_lease = Duration::from_secs(u64::from(seconds));
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
        .map_err(|e| ConfigError {
            variable: "FRAMEGATE_BLOB_STORE",
            message: e.to_string(),
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

/// `FRAMEGATE_TRUSTED_PROXIES` names the proxies and implies `FRAMEGATE_TRUST_PROXY=true`;
/// `FRAMEGATE_TRUST_PROXY=true` alone trusts whatever connects (one proxy in front).
fn proxies(get: impl Fn(&str) -> Option<String>) -> Result<ProxyTrust, ConfigError> {
    const TRUST: &str = "FRAMEGATE_TRUST_PROXY";
    const NETWORKS: &str = "FRAMEGATE_TRUSTED_PROXIES";
    let trust: Option<bool> = get(TRUST).map(|v| parse(TRUST, &v)).transpose()?;
    let networks = match get(NETWORKS) {
        Some(list) => list.parse::<ProxyTrust>().map_err(|e| ConfigError {
            variable: NETWORKS,
            message: e.to_string(),
        })?,
        None => ProxyTrust::None,
    };
    match (trust, networks) {
        (Some(false), ProxyTrust::Networks(_)) => Err(ConfigError {
            variable: NETWORKS,
            message: format!("is set, but {TRUST}=false says there is no proxy; unset one"),
        }),
        (_, networks @ ProxyTrust::Networks(_)) => Ok(networks),
        (Some(true), _) => Ok(ProxyTrust::ImmediatePeer),
        _ => Ok(ProxyTrust::None),
    }
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

/// `FRAMEGATE_HTTP_*`: whole seconds and a connection count, each at least 1 (a zero
/// timeout would cut every client; a zero cap would serve none).
fn http_limits(get: impl Fn(&str) -> Option<String>) -> Result<HttpLimits, ConfigError> {
    let mut limits = HttpLimits::default();
    let seconds = |variable: &'static str, default: Duration| match get(variable) {
        Some(v) => positive(variable, &v).map(|n| Duration::from_secs(u64::from(n))),
        None => Ok(default),
    };
    limits.header_timeout = seconds(
        "FRAMEGATE_HTTP_HEADER_TIMEOUT_SECONDS",
        limits.header_timeout,
    )?;
    limits.body_timeout = seconds("FRAMEGATE_HTTP_BODY_TIMEOUT_SECONDS", limits.body_timeout)?;
    limits.idle_timeout = seconds("FRAMEGATE_HTTP_IDLE_TIMEOUT_SECONDS", limits.idle_timeout)?;
    if let Some(v) = get("FRAMEGATE_HTTP_MAX_CONNECTIONS") {
        limits.max_connections = positive("FRAMEGATE_HTTP_MAX_CONNECTIONS", &v)?;
    }
    Ok(limits)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn production_refuses_to_start_without_a_jwt_secret() {
        let error = ApiConfig::from_lookup(lookup(&[("FRAMEGATE_ENV", "production")]))
            .expect_err("refused");
        assert_eq!(error.variable, "FRAMEGATE_JWT_SECRET");
    }

    #[test]
    fn development_generates_a_secret_and_reads_overrides() {
        let config = ApiConfig::from_lookup(lookup(&[
            ("FRAMEGATE_HTTP_ADDR", "127.0.0.1:9999"),
            ("FRAMEGATE_SIGNUP_CREDITS", "25"),
        ]))
        .expect("config");
        assert_eq!(config.jwt_secret.len(), 32);
        assert_eq!(config.http_addr.port(), 9999);
        assert_eq!(config.signup_credits, 25);
    }

    #[test]
    fn image_moderation_rules_and_concurrency_are_read() {
        let config = ApiConfig::from_lookup(lookup(&[
            (RULES_ENV, "deny_formats=webp; max_megapixels=12"),
            ("FRAMEGATE_IMAGE_CONCURRENCY", "3"),
        ]))
        .expect("config");
        assert_eq!(
            config.image_moderation.to_string(),
            "deny_formats=webp;max_megapixels=12"
        );
        assert_eq!(config.image_concurrency, 3);
        let defaults = ApiConfig::from_lookup(lookup(&[])).expect("config");
        assert!(defaults.image_moderation.is_empty(), "no rules: allow all");
        assert_eq!(defaults.images, ImageLimits::default());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("FRAMEGATE_HTTP_ADDR", "not an address"),
            ("FRAMEGATE_SIGNUP_CREDITS", "-5"),
            ("FRAMEGATE_JWT_SECRET", "short"),
            ("FRAMEGATE_RATE_ANONYMOUS_PER_MINUTE", "0"),
            ("FRAMEGATE_ENV", "staging"),
            ("FRAMEGATE_IMAGE_CONCURRENCY", "0"),
            (RULES_ENV, "deny_everything=yes"),
            ("FRAMEGATE_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.5/24"),
            ("FRAMEGATE_TRUSTED_PROXIES", "proxy.internal"),
            ("FRAMEGATE_TRUST_PROXY", "yes"),
            ("FRAMEGATE_HTTP_HEADER_TIMEOUT_SECONDS", "0"),
            ("FRAMEGATE_HTTP_BODY_TIMEOUT_SECONDS", "1.5"),
            ("FRAMEGATE_HTTP_IDLE_TIMEOUT_SECONDS", "-1"),
            ("FRAMEGATE_HTTP_MAX_CONNECTIONS", "0"),
            ("FRAMEGATE_HTTP_MAX_CONNECTIONS", "many"),
        ] {
            let error = ApiConfig::from_lookup(lookup(&[(variable, value)])).expect_err(variable);
            assert_eq!(error.variable, variable);
        }
    }

    #[test]
    fn http_limits_default_to_slow_client_safe_values_and_read_overrides() {
        let defaults = ApiConfig::from_lookup(lookup(&[])).expect("config").http;
        assert_eq!(
            defaults,
            HttpLimits {
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(75),
                max_connections: 1024,
            }
        );
        let config = ApiConfig::from_lookup(lookup(&[
            ("FRAMEGATE_HTTP_HEADER_TIMEOUT_SECONDS", "5"),
            ("FRAMEGATE_HTTP_BODY_TIMEOUT_SECONDS", " 30 "),
            ("FRAMEGATE_HTTP_IDLE_TIMEOUT_SECONDS", "120"),
            ("FRAMEGATE_HTTP_MAX_CONNECTIONS", "4096"),
        ]))
        .expect("config");
        assert_eq!(
            config.http,
            HttpLimits {
                header_timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(120),
                max_connections: 4096,
            }
        );
    }

    #[test]
    fn trusted_proxies_are_networks_and_trust_proxy_alone_trusts_the_peer() {
        let config = |pairs: &[(&str, &str)]| {
            ApiConfig::from_lookup(lookup(pairs))
                .map(|c| c.proxies)
                .map_err(|e| e.to_string())
        };
        assert_eq!(config(&[]), Ok(ProxyTrust::None));
        assert_eq!(
            config(&[("FRAMEGATE_TRUST_PROXY", "true")]),
            Ok(ProxyTrust::ImmediatePeer)
        );
        let networks = "10.0.0.0/8,192.168.1.5/32,::1/128";
        let expected = networks.parse::<ProxyTrust>().map_err(|e| e.to_string());
        assert!(matches!(&expected, Ok(ProxyTrust::Networks(n)) if n.len() == 3));
        assert_eq!(config(&[("FRAMEGATE_TRUSTED_PROXIES", networks)]), expected);
        assert_eq!(
            config(&[
                ("FRAMEGATE_TRUST_PROXY", "true"),
                ("FRAMEGATE_TRUSTED_PROXIES", networks)
            ]),
            expected
        );
        assert_eq!(
            config(&[("FRAMEGATE_TRUSTED_PROXIES", "")]),
            Ok(ProxyTrust::None),
            "empty: unset"
        );
        let contradiction = config(&[
            ("FRAMEGATE_TRUST_PROXY", "false"),
            ("FRAMEGATE_TRUSTED_PROXIES", networks),
        ])
        .expect_err("contradiction");
        assert!(
            contradiction.contains("FRAMEGATE_TRUSTED_PROXIES"),
            "{contradiction}"
        );
        let bad = config(&[("FRAMEGATE_TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.1/33")])
            .expect_err("bad prefix");
        assert!(bad.contains("10.0.0.1/33"), "{bad}");
    }

    #[test]
    fn sign_up_credits_wait_for_verification_unless_told_otherwise() {
        let config = ApiConfig::from_lookup(lookup(&[])).expect("config");
        assert_eq!(config.signup_credits_on, SignupCreditsOn::Verify);
        let config = ApiConfig::from_lookup(lookup(&[("FRAMEGATE_SIGNUP_CREDITS_ON", "register")]))
            .expect("config");
        assert_eq!(config.signup_credits_on, SignupCreditsOn::Register);
        let error = ApiConfig::from_lookup(lookup(&[("FRAMEGATE_SIGNUP_CREDITS_ON", "login")]))
            .expect_err("not a choice");
        assert_eq!(error.variable, "FRAMEGATE_SIGNUP_CREDITS_ON");
    }
}

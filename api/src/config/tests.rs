//! Parsing the API's configuration: defaults, overrides, refusals naming their variable,
//! and what production demands of secrets and listen addresses.

use framegate_commands::testing::lookup;

use super::*;

/// Secrets that pass production's checks (tests only: they are in this repository now).
const JWT: &str = "Q7m2Xc9VbN4kLp8RtZ1wYe6HsJd3GfA5uTq0";
const BLOB_KEY: &str = "b9Vq2kLx7TzR4mWp8YcN3hJd6FgS1aQe0uIo5";

fn production(extra: &[(&'static str, &'static str)]) -> Result<ApiConfig, ConfigError> {
    let mut pairs = vec![
        ("FRAMEGATE_ENV", "production"),
        ("FRAMEGATE_JWT_SECRET", JWT),
        ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
    ];
    // Later pairs replace earlier ones of the same name.
    pairs.retain(|(name, _)| !extra.iter().any(|(other, _)| other == name));
    pairs.extend_from_slice(extra);
    ApiConfig::from_lookup(lookup(&pairs))
}

#[test]
fn production_refuses_to_start_without_a_jwt_secret_or_a_blob_signing_key() {
    let error = ApiConfig::from_lookup(lookup(&[
        ("FRAMEGATE_ENV", "production"),
        ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
    ]))
    .expect_err("refused");
    assert_eq!(error.variable, "FRAMEGATE_JWT_SECRET");
    assert!(error.message.contains("required"), "{error}");
    let error = ApiConfig::from_lookup(lookup(&[
        ("FRAMEGATE_ENV", "production"),
        ("FRAMEGATE_JWT_SECRET", JWT),
    ]))
    .expect_err("refused");
    assert_eq!(error.variable, "FRAMEGATE_BLOB_SIGNING_KEY", "{error}");
    assert!(error.message.contains("is required"), "{error}");
}

#[test]
fn production_starts_with_strong_secrets_and_checks_nothing_elsewhere() {
    let config = production(&[]).expect("strong secrets pass");
    assert_eq!(config.deployment, Deployment::Production);
    assert_eq!(config.jwt_secret.expose(), JWT.as_bytes());
    let dev = ApiConfig::from_lookup(lookup(&[(
        "FRAMEGATE_JWT_SECRET",
        "change-me-change-me-change-me-change-me",
    )]))
    .expect("development takes what it is given");
    assert_eq!(dev.deployment, Deployment::Undeclared);
}

#[test]
fn production_refuses_every_published_placeholder_naming_its_variable() {
    for (variable, value) in [
        (
            "FRAMEGATE_JWT_SECRET",
            "change-me-change-me-change-me-change-me",
        ),
        (
            "FRAMEGATE_JWT_SECRET",
            "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME",
        ),
        (
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "change-me-too-change-me-too-change-me-too",
        ),
        (
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "0123456789abcdef0123456789abcdef",
        ),
        (
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "framegate-bench-signing-key-0123456789",
        ),
        ("FRAMEGATE_STRIPE_SECRET_KEY", "sk_test_framegate"),
        (
            "FRAMEGATE_STRIPE_WEBHOOK_SECRET",
            "whsec_test_framegate_billing",
        ),
        (
            "FRAMEGATE_SMTP_URL",
            "smtps://mailer:framegate@smtp.example.net:465",
        ),
        (
            "DATABASE_URL",
            "postgres://framegate:framegate@postgres:5432/framegate",
        ),
        ("FRAMEGATE_KAFKA_PROP_SASL_PASSWORD", "changeme"),
        ("FRAMEGATE_SORA_API_KEY", "sk-test-secret"),
    ] {
        let error = production(&[(variable, value)]).expect_err(value);
        assert_eq!(error.variable, variable, "{error}");
        assert!(error.message.contains("placeholder"), "{error}");
        assert!(
            error.message.contains("FRAMEGATE_ENV=production"),
            "{error}"
        );
    }
}

#[test]
fn production_refuses_short_and_uniform_secrets_without_printing_them() {
    let short = "Xq3v9LmZ2pRt8KwY4nBc7HdJ6sFa1GeU"; // 32 bytes: enough for a key
    production(&[("FRAMEGATE_JWT_SECRET", short)]).expect("32 bytes pass");
    for (variable, value, rule) in [
        (
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "Xq3v9LmZ2pRt8KwY4nBc7HdJ6sFa1Ge",
            "at least 32",
        ),
        (
            "FRAMEGATE_JWT_SECRET",
            "abcdefghabcdefghabcdefghabcdefghabcd",
            "repeated",
        ),
        (
            "FRAMEGATE_JWT_SECRET",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "distinct",
        ),
        ("FRAMEGATE_STRIPE_SECRET_KEY", "sk_live_4f9", "at least 16"),
    ] {
        let error = production(&[(variable, value)]).expect_err(value);
        assert_eq!(error.variable, variable, "{error}");
        assert!(error.message.contains(rule), "{error}");
        assert!(!error.to_string().contains(value), "{error}");
    }
}

#[test]
fn a_reachable_listen_address_needs_framegate_env() {
    let error = ApiConfig::from_lookup(lookup(&[("FRAMEGATE_HTTP_ADDR", "0.0.0.0:8080")]))
        .expect_err("refused");
    assert_eq!(error.variable, "FRAMEGATE_ENV");
    assert!(
        error.message.contains("FRAMEGATE_HTTP_ADDR=0.0.0.0:8080"),
        "{error}"
    );
    ApiConfig::from_lookup(lookup(&[
        ("FRAMEGATE_HTTP_ADDR", "0.0.0.0:8080"),
        ("FRAMEGATE_ENV", "development"),
    ]))
    .expect("declared development may serve a network");
    production(&[("FRAMEGATE_HTTP_ADDR", "0.0.0.0:8080")]).expect("production may");
    ApiConfig::from_lookup(lookup(&[("FRAMEGATE_HTTP_ADDR", "127.0.0.1:0")]))
        .expect("loopback needs nothing");
}

#[test]
fn debug_output_never_contains_a_secret() {
    let smtp_password = "Vb8nM2xQ7kLp4RtZ9wYe";
    let smtp = format!("smtps://mailer:{smtp_password}@smtp.example.net:465");
    let stripe_key = "sk_live_9fJ2kQ7mXb4nVc8LpRt1ZyWe6HsD3gA5";
    let stripe_webhook = "whsec_Tq8Wm3Zx9Lb2Vn7Kc4Rp1Yh6Jd5Gs0Fa";
    let mut pairs = vec![
        ("FRAMEGATE_ENV", "production"),
        ("FRAMEGATE_JWT_SECRET", JWT),
        ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
        ("FRAMEGATE_STRIPE_SECRET_KEY", stripe_key),
        ("FRAMEGATE_STRIPE_WEBHOOK_SECRET", stripe_webhook),
    ];
    pairs.push(("FRAMEGATE_SMTP_URL", smtp.as_str()));
    let config = ApiConfig::from_lookup(lookup(&pairs)).expect("config");
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        for secret in [JWT, BLOB_KEY, smtp_password, stripe_key, stripe_webhook] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[redacted]"), "{shown}");
    }
    // The bytes of the JWT secret would show as a list of numbers.
    let numbers = format!("{:?}", JWT.as_bytes());
    assert!(!format!("{config:?}").contains(&numbers[1..20]));
}

#[test]
fn development_generates_a_secret_and_reads_overrides() {
    let config = ApiConfig::from_lookup(lookup(&[
        ("FRAMEGATE_HTTP_ADDR", "127.0.0.1:9999"),
        ("FRAMEGATE_SIGNUP_CREDITS", "25"),
    ]))
    .expect("config");
    assert_eq!(config.jwt_secret.expose().len(), 32);
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

//! Which kind of deployment a process is (`FRAMEGATE_ENV`) and what that demands of it.
//!
//! Every role reads the same variable, so the rules live here, beside the one list of the
//! secrets the platform reads ([`SECRETS`]):
//!
//! - `production` (or `prod`): every secret that is set is checked ([`strength`]); the JWT
//!   secret and the filesystem blob store's signing key are required (by their configs).
//! - `development` (or `dev`; `framegate dev` is always development) and `test`: no checks,
//!   missing keys are generated per process.
//! - unset: like development, but a role refuses to listen on an address other machines can
//!   reach ([`Deployment::check_listen`]), so a forgotten variable never exposes a server
//!   running on generated or placeholder secrets.
//!
//! Secret fields of config structs are wrapped in [`Secret`], whose `Debug` is redacted.

use std::net::SocketAddr;

mod secret;
pub mod strength;

pub use secret::Secret;
pub use strength::{SecretKind, Weakness};

/// The variable naming the deployment.
pub const ENV_VAR: &str = "FRAMEGATE_ENV";

/// What `FRAMEGATE_ENV` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    Production,
    Development,
    Test,
    /// `FRAMEGATE_ENV` is unset (or empty): development on loopback only.
    Undeclared,
}

/// A setting refused because of the deployment; names the variable, never a secret value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("configuration: {variable}: {message}")]
pub struct DeploymentError {
    pub variable: &'static str,
    pub message: String,
}

/// Where in a variable the secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole value.
    Whole,
    /// The password of a `scheme://user:password@host` URL (none: nothing to check).
    UrlPassword,
}

/// Every secret any role reads, and how strictly it is checked in production. Unset or
/// empty variables are not checked here; the configs that need one say so themselves.
pub const SECRETS: &[(&str, SecretKind, Part)] = &[
    ("FRAMEGATE_JWT_SECRET", SecretKind::Key, Part::Whole),
    ("FRAMEGATE_BLOB_SIGNING_KEY", SecretKind::Key, Part::Whole),
    ("FRAMEGATE_MASTER_KEYS", SecretKind::Key, Part::Whole),
    ("FRAMEGATE_EMAIL_HASH_KEY", SecretKind::Key, Part::Whole),
    (
        "FRAMEGATE_METRICS_TOKEN",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_STRIPE_SECRET_KEY",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_STRIPE_WEBHOOK_SECRET",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_SMTP_URL",
        SecretKind::Credential,
        Part::UrlPassword,
    ),
    ("FRAMEGATE_VEO_API_KEY", SecretKind::Credential, Part::Whole),
    (
        "FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_SORA_API_KEY",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_KLING_SECRET_KEY",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_KAFKA_PROP_SASL_PASSWORD",
        SecretKind::Credential,
        Part::Whole,
    ),
    (
        "FRAMEGATE_KAFKA_PROP_SSL_KEY_PASSWORD",
        SecretKind::Credential,
        Part::Whole,
    ),
    ("AWS_SECRET_ACCESS_KEY", SecretKind::Credential, Part::Whole),
    (
        "DATABASE_URL",
        SecretKind::DatabasePassword,
        Part::UrlPassword,
    ),
    ("PGPASSWORD", SecretKind::DatabasePassword, Part::Whole),
];

impl Deployment {
    pub fn from_env() -> Result<Self, DeploymentError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, DeploymentError> {
        match get(ENV_VAR).as_deref().map(str::trim) {
            None | Some("") => Ok(Deployment::Undeclared),
            Some("production" | "prod") => Ok(Deployment::Production),
            Some("development" | "dev") => Ok(Deployment::Development),
            Some("test") => Ok(Deployment::Test),
            Some(other) => Err(DeploymentError {
                variable: ENV_VAR,
                message: format!("{other:?}: expected production, development (dev) or test"),
            }),
        }
    }

    pub fn is_production(self) -> bool {
        self == Deployment::Production
    }

    /// A role about to listen on `addr` (set by `variable`): refused when `FRAMEGATE_ENV` is
    /// unset and the address is not loopback (`0.0.0.0` included), so that only a deployment
    /// that said what it is serves other machines.
    pub fn check_listen(
        self,
        variable: &'static str,
        addr: SocketAddr,
    ) -> Result<(), DeploymentError> {
        if self == Deployment::Undeclared && !addr.ip().is_loopback() {
            return Err(DeploymentError {
                variable: ENV_VAR,
                message: format!(
                    "is not set, and {variable}={addr} is reachable from other machines: set \
                     FRAMEGATE_ENV=production (secrets are then checked) or \
                     FRAMEGATE_ENV=development to serve a network with development defaults"
                ),
            });
        }
        Ok(())
    }

    /// In production, checks every secret of [`SECRETS`] that `get` has; elsewhere nothing.
    /// The first refused one is returned.
    pub fn check_secrets(
        self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), DeploymentError> {
        if !self.is_production() {
            return Ok(());
        }
        for &(variable, kind, part) in SECRETS {
            let Some(value) = get(variable).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let secret = match part {
                Part::Whole => Some(value.as_str()),
                Part::UrlPassword => url_password(&value),
            };
            if let Some(secret) = secret {
                strength::check(secret, kind).map_err(|weakness| refused(variable, &weakness))?;
            }
        }
        Ok(())
    }

    /// In production, checks one secret that is not in [`SECRETS`] (or not from the
    /// environment).
    pub fn check_secret(
        self,
        variable: &'static str,
        value: &str,
        kind: SecretKind,
    ) -> Result<(), DeploymentError> {
        if self.is_production() {
            strength::check(value, kind).map_err(|weakness| refused(variable, &weakness))?;
        }
        Ok(())
    }
}

fn refused(variable: &'static str, weakness: &Weakness) -> DeploymentError {
    DeploymentError {
        variable,
        message: format!("refused with FRAMEGATE_ENV=production: {weakness}"),
    }
}

/// The password of `scheme://user:password@host/...`, if there is one.
pub fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::lookup;

    #[test]
    fn framegate_env_names_the_deployment_and_refuses_anything_else() {
        let env = |value: &str| Deployment::from_lookup(lookup(&[(ENV_VAR, value)]));
        assert_eq!(
            Deployment::from_lookup(lookup(&[])),
            Ok(Deployment::Undeclared)
        );
        assert_eq!(env(""), Ok(Deployment::Undeclared));
        assert_eq!(env("production"), Ok(Deployment::Production));
        assert_eq!(env("prod"), Ok(Deployment::Production));
        assert_eq!(env("dev"), Ok(Deployment::Development));
        assert_eq!(env("development"), Ok(Deployment::Development));
        assert_eq!(env("test"), Ok(Deployment::Test));
        assert_eq!(env("staging").expect_err("unknown").variable, ENV_VAR);
    }

    #[test]
    fn an_undeclared_deployment_listens_on_loopback_only() {
        let public: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let lan: SocketAddr = "192.168.1.10:8080".parse().expect("addr");
        let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let loopback6: SocketAddr = "[::1]:8080".parse().expect("addr");
        let undeclared = Deployment::Undeclared;
        let error = undeclared
            .check_listen("FRAMEGATE_HTTP_ADDR", public)
            .expect_err("refused");
        assert_eq!(error.variable, ENV_VAR);
        assert!(
            error.message.contains("FRAMEGATE_HTTP_ADDR=0.0.0.0:8080"),
            "{error}"
        );
        assert!(undeclared.check_listen("X", lan).is_err());
        assert!(undeclared.check_listen("X", loopback).is_ok());
        assert!(undeclared.check_listen("X", loopback6).is_ok());
        for declared in [
            Deployment::Production,
            Deployment::Development,
            Deployment::Test,
        ] {
            assert!(declared.check_listen("X", public).is_ok(), "{declared:?}");
        }
    }

    #[test]
    fn production_checks_every_listed_secret_and_names_it() {
        for &(variable, _, part) in SECRETS {
            let value = match part {
                Part::Whole => "change-me-change-me-change-me-change-me".to_owned(),
                Part::UrlPassword => "scheme://user:framegate@host:1/db".to_owned(),
            };
            let error = Deployment::Production
                .check_secrets(lookup(&[(variable, value.as_str())]))
                .expect_err(variable);
            assert_eq!(error.variable, variable);
            assert!(error.message.contains("placeholder"), "{error}");
            assert!(!error.to_string().contains("framegate@"), "{error}");
            for relaxed in [
                Deployment::Development,
                Deployment::Test,
                Deployment::Undeclared,
            ] {
                assert!(relaxed
                    .check_secrets(lookup(&[(variable, value.as_str())]))
                    .is_ok());
            }
        }
    }

    #[test]
    fn urls_without_a_password_and_empty_variables_pass() {
        let production = Deployment::Production;
        assert!(production
            .check_secrets(lookup(&[
                (
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/postgres"
                ),
                ("FRAMEGATE_SMTP_URL", "smtp://relay.internal:25"),
                ("FRAMEGATE_JWT_SECRET", ""),
            ]))
            .is_ok());
        assert_eq!(
            url_password("postgres://fg:s3cr%40t@db:5432/fg"),
            Some("s3cr%40t")
        );
        assert_eq!(url_password("smtps://user:pa:ss@mail:465"), Some("pa:ss"));
        assert_eq!(url_password("postgres://db/fg?user=a@b"), None);
        assert_eq!(url_password("not a url"), None);
    }
}

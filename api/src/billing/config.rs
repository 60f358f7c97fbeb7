//! Billing configuration (`FRAMEGATE_CREDIT_PACKS`, `FRAMEGATE_STRIPE_*`,
//! `FRAMEGATE_BILLING_*_URL`), kept apart from the rest of the API's configuration.
//!
//! Without a Stripe secret key billing is off: the packs are still listed, but checkout
//! answers 503 `billing_disabled`. A key without a webhook secret is refused at start-up,
//! since payments would then never turn into credits.

use framegate_commands::deployment::Secret;

use crate::config::{parse, ConfigError};

/// What `FRAMEGATE_CREDIT_PACKS` is unless set: 1,000 credits for US$10.00.
pub const DEFAULT_PACKS: &str = "starter=1000:1000:usd";

/// Stripe's API unless `FRAMEGATE_STRIPE_API_BASE` points elsewhere (tests, a proxy).
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// One credit pack of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// `[a-z0-9_-]{1,40}`, what `POST /v1/billing/checkout` names.
    pub name: String,
    pub credits: i64,
    /// The price in the currency's smallest unit (cents for USD).
    pub amount: i64,
    /// ISO 4217, lower case, as Stripe writes it.
    pub currency: String,
}

/// The Stripe account billing talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeConfig {
    /// `sk_live_...` / `sk_test_...` (or a restricted `rk_...` key).
    pub secret_key: Secret<String>,
    /// Without a trailing slash.
    pub api_base: String,
    /// `whsec_...`: the key of the endpoint's `Stripe-Signature` HMAC, used as it is written.
    pub webhook_secret: Secret<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingConfig {
    pub packs: Vec<Pack>,
    /// `None`: billing is off.
    pub stripe: Option<StripeConfig>,
    /// Where Stripe sends the buyer after paying; `{CHECKOUT_SESSION_ID}` is filled in by
    /// Stripe.
    pub success_url: String,
    /// Where Stripe sends a buyer who gives up.
    pub cancel_url: String,
}

impl BillingConfig {
    /// The default catalog, billing off, return URLs under `public_url`.
    pub fn development(public_url: &str) -> Self {
        Self {
            packs: parse_packs(DEFAULT_PACKS).unwrap_or_default(),
            stripe: None,
            success_url: format!("{public_url}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"),
            cancel_url: format!("{public_url}/billing/cancelled"),
        }
    }

    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        public_url: &str,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::development(public_url);
        if let Some(packs) = get("FRAMEGATE_CREDIT_PACKS") {
            config.packs = parse_packs(&packs).map_err(|message| ConfigError {
                variable: "FRAMEGATE_CREDIT_PACKS",
                message,
            })?;
        }
        if let Some(url) = get("FRAMEGATE_BILLING_SUCCESS_URL") {
            config.success_url = absolute_url("FRAMEGATE_BILLING_SUCCESS_URL", &url)?;
        }
        if let Some(url) = get("FRAMEGATE_BILLING_CANCEL_URL") {
            config.cancel_url = absolute_url("FRAMEGATE_BILLING_CANCEL_URL", &url)?;
        }
        let api_base = match get("FRAMEGATE_STRIPE_API_BASE") {
            Some(base) => absolute_url("FRAMEGATE_STRIPE_API_BASE", &base)?
                .trim_end_matches('/')
                .to_owned(),
            None => DEFAULT_API_BASE.to_owned(),
        };
        let secret_key = get("FRAMEGATE_STRIPE_SECRET_KEY").filter(|k| !k.trim().is_empty());
        let webhook_secret = get("FRAMEGATE_STRIPE_WEBHOOK_SECRET").filter(|k| !k.is_empty());
        config.stripe = match (secret_key, webhook_secret) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError {
                    variable: "FRAMEGATE_STRIPE_SECRET_KEY",
                    message: "is required with FRAMEGATE_STRIPE_WEBHOOK_SECRET".to_owned(),
                })
            }
            (Some(_), None) => {
                return Err(ConfigError {
                    variable: "FRAMEGATE_STRIPE_WEBHOOK_SECRET",
                    message: "is required with FRAMEGATE_STRIPE_SECRET_KEY: without it no \
                              payment would ever turn into credits"
                        .to_owned(),
                })
            }
            (Some(secret_key), Some(webhook_secret)) => {
                if !webhook_secret.starts_with("whsec_") {
                    return Err(ConfigError {
                        variable: "FRAMEGATE_STRIPE_WEBHOOK_SECRET",
                        message: "must be the endpoint's signing secret, whsec_...".to_owned(),
                    });
                }
                if !secret_key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError {
                        variable: "FRAMEGATE_STRIPE_SECRET_KEY",
                        message: "must be printable ASCII (sk_... or rk_...)".to_owned(),
                    });
                }
                Some(StripeConfig {
                    secret_key: Secret::new(secret_key.trim().to_owned()),
                    api_base,
                    webhook_secret: Secret::new(webhook_secret),
                })
            }
        };
        Ok(config)
    }

    pub fn pack(&self, name: &str) -> Option<&Pack> {
        self.packs.iter().find(|p| p.name == name)
    }
}

fn absolute_url(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    if value.starts_with("https://") || value.starts_with("http://") {
        return Ok(value.to_owned());
    }
    Err(ConfigError {
        variable,
        message: format!("{value:?}: expected an http(s):// URL"),
    })
}

/// `name=credits:amount:currency,...`, e.g. `starter=1000:1000:usd,pro=5000:4500:usd`.
pub fn parse_packs(text: &str) -> Result<Vec<Pack>, String> {
    let mut packs: Vec<Pack> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, terms) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected name=credits:amount:currency"))?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > 40
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "{name:?}: a pack name is 1 to 40 of a-z, 0-9, _ and -"
            ));
        }
        let [credits, amount, currency] = terms.split(':').map(str::trim).collect::<Vec<_>>()[..]
        else {
            return Err(format!("{entry:?}: expected name=credits:amount:currency"));
        };
        let credits: i64 = parse("FRAMEGATE_CREDIT_PACKS", credits).map_err(|e| e.message)?;
        let amount: i64 = parse("FRAMEGATE_CREDIT_PACKS", amount).map_err(|e| e.message)?;
        if credits < 1 || amount < 1 {
            return Err(format!(
                "{entry:?}: credits and amount (smallest currency unit) must be at least 1"
            ));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(format!(
                "{entry:?}: the currency is a lower-case ISO 4217 code such as usd"
            ));
        }
        if packs.iter().any(|p| p.name == name) {
            return Err(format!("{name:?} is named twice"));
        }
        packs.push(Pack {
            name: name.to_owned(),
            credits,
            amount,
            currency: currency.to_owned(),
        });
    }
    if packs.is_empty() {
        return Err("names no pack".to_owned());
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<BillingConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        BillingConfig::from_lookup(|name| vars.get(name).cloned(), "https://fg.example")
    }

    #[test]
    fn the_default_is_one_pack_and_billing_off() {
        let config = config(&[]).expect("defaults");
        assert_eq!(
            config.packs,
            vec![Pack {
                name: "starter".to_owned(),
                credits: 1000,
                amount: 1000,
                currency: "usd".to_owned(),
            }]
        );
        assert!(config.stripe.is_none());
        assert_eq!(
            config.success_url,
            "https://fg.example/billing/success?session_id={CHECKOUT_SESSION_ID}"
        );
    }

    #[test]
    fn packs_parse_and_bad_ones_are_named() {
        let packs = parse_packs("starter=1000:1000:usd, pro=5000:4500:eur").expect("two packs");
        assert_eq!(packs[1].name, "pro");
        assert_eq!((packs[1].credits, packs[1].amount), (5000, 4500));
        assert_eq!(packs[1].currency, "eur");
        for bad in [
            "",
            "starter",
            "starter=1000:1000",
            "Starter=1:1:usd",
            "a=0:100:usd",
            "a=10:-1:usd",
            "a=10:1.5:usd",
            "a=10:100:USD",
            "a=10:100:dollars",
            "a=1:1:usd,a=2:2:usd",
        ] {
            assert!(parse_packs(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn the_api_configuration_reads_billing_from_the_environment() {
        use crate::config::ApiConfig;
        let config = ApiConfig::from_lookup(|name| match name {
            "FRAMEGATE_PUBLIC_URL" => Some("https://fg.example/".to_owned()),
            "FRAMEGATE_CREDIT_PACKS" => Some("big=10:20:eur".to_owned()),
            _ => None,
        })
        .expect("config");
        assert_eq!(config.billing.packs[0].name, "big");
        assert_eq!(
            config.billing.cancel_url,
            "https://fg.example/billing/cancelled"
        );
        let bad = ApiConfig::from_lookup(|name| {
            (name == "FRAMEGATE_CREDIT_PACKS").then(|| "big".to_owned())
        })
        .expect_err("refused");
        assert_eq!(bad.variable, "FRAMEGATE_CREDIT_PACKS");
    }

    #[test]
    fn stripe_needs_both_secrets() {
        let on = config(&[
            ("FRAMEGATE_STRIPE_SECRET_KEY", "sk_test_123"),
            ("FRAMEGATE_STRIPE_WEBHOOK_SECRET", "whsec_abc"),
            ("FRAMEGATE_STRIPE_API_BASE", "http://127.0.0.1:9/"),
        ])
        .expect("billing on");
        let stripe = on.stripe.expect("stripe");
        assert_eq!(stripe.api_base, "http://127.0.0.1:9");
        assert!(!format!("{stripe:?}").contains("sk_test_123"));
        let missing =
            config(&[("FRAMEGATE_STRIPE_SECRET_KEY", "sk_test_123")]).expect_err("refused");
        assert_eq!(missing.variable, "FRAMEGATE_STRIPE_WEBHOOK_SECRET");
        let wrong = config(&[
            ("FRAMEGATE_STRIPE_SECRET_KEY", "sk_test_123"),
            ("FRAMEGATE_STRIPE_WEBHOOK_SECRET", "secret"),
        ])
        .expect_err("refused");
        assert_eq!(wrong.variable, "FRAMEGATE_STRIPE_WEBHOOK_SECRET");
        let orphan =
            config(&[("FRAMEGATE_STRIPE_WEBHOOK_SECRET", "whsec_abc")]).expect_err("refused");
        assert_eq!(orphan.variable, "FRAMEGATE_STRIPE_SECRET_KEY");
        let base = config(&[("FRAMEGATE_STRIPE_API_BASE", "api.stripe.com")]).expect_err("refused");
        assert_eq!(base.variable, "FRAMEGATE_STRIPE_API_BASE");
    }
}

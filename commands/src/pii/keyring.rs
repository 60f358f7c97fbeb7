//! The configured keys of crypto-shredding: the master keys that wrap users' data keys (by
//! version, one of them current) and the key of the email lookup hash.
//!
//! `FRAMEGATE_MASTER_KEYS` is `version:base64,version:base64,...`, the current key first;
//! rotating is: put a new key first, run `framegate keys rotate` (every data key is re-wrapped
//! under it), then drop the old one. `FRAMEGATE_EMAIL_HASH_KEY` (base64, ≥ 32 bytes) keys the
//! HMAC the unique email index is built on; changing it would orphan every existing claim, so
//! it is not rotatable. Outside production both default to fixed development keys (which are
//! public: this file holds them); production requires both.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::crypto::SecretKey;
use crate::deployment::{Deployment, DeploymentError};

pub const MASTER_KEYS_VAR: &str = "FRAMEGATE_MASTER_KEYS";
pub const EMAIL_HASH_KEY_VAR: &str = "FRAMEGATE_EMAIL_HASH_KEY";

#[derive(Debug, Clone)]
pub struct Keyring {
    current: u32,
    masters: BTreeMap<u32, SecretKey>,
    email_hash: SecretKey,
}

impl Keyring {
    /// A keyring of `masters` (the first is current) and an email hash key.
    pub fn new(masters: Vec<(u32, SecretKey)>, email_hash: SecretKey) -> Option<Self> {
        let current = masters.first()?.0;
        Some(Self {
            current,
            masters: masters.into_iter().collect(),
            email_hash,
        })
    }

    /// The public development keyring (master key version 0): never for production.
    pub fn development() -> Self {
        let derive = |label: &str| {
            SecretKey::from_bytes(&Sha256::digest(label.as_bytes())).expect("32 bytes")
        };
        Self {
            current: 0,
            masters: BTreeMap::from([(0, derive("framegate development master key"))]),
            email_hash: derive("framegate development email hash key"),
        }
    }

    /// The keyring the environment describes (read through `get`).
    pub fn from_lookup(
        deployment: Deployment,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, DeploymentError> {
        let masters = get(MASTER_KEYS_VAR).filter(|v| !v.trim().is_empty());
        let email = get(EMAIL_HASH_KEY_VAR).filter(|v| !v.trim().is_empty());
        let (masters, email) = match (masters, email) {
            (Some(masters), Some(email)) => (masters, email),
            (None, None) if !deployment.is_production() => return Ok(Self::development()),
            (masters, email) => {
                let (variable, other) = if masters.is_none() {
                    (MASTER_KEYS_VAR, email.map(|_| EMAIL_HASH_KEY_VAR))
                } else {
                    (EMAIL_HASH_KEY_VAR, Some(MASTER_KEYS_VAR))
                };
                return Err(DeploymentError {
                    variable,
                    message: match other {
                        Some(other) if !deployment.is_production() => {
                            format!("is required with {other}")
                        }
                        _ => "is required when FRAMEGATE_ENV=production".to_owned(),
                    },
                });
            }
        };
        let refused = |variable: &'static str, message: &str| DeploymentError {
            variable,
            message: message.to_owned(),
        };
        let mut parsed = Vec::new();
        for entry in masters.split(',').map(str::trim) {
            let (version, key) = entry.split_once(':').ok_or_else(|| {
                refused(
                    MASTER_KEYS_VAR,
                    "expected version:base64 entries, comma-separated",
                )
            })?;
            let version: u32 = version
                .trim()
                .parse()
                .map_err(|_| refused(MASTER_KEYS_VAR, "a key version is not a whole number"))?;
            let key = decode_key(key)
                .ok_or_else(|| refused(MASTER_KEYS_VAR, "a key is not 32 bytes of base64"))?;
            if parsed.iter().any(|(v, _)| *v == version) {
                return Err(refused(MASTER_KEYS_VAR, "a key version appears twice"));
            }
            parsed.push((version, key));
        }
        let email = STANDARD
            .decode(email.trim())
            .ok()
            .filter(|key| key.len() >= 32)
            .ok_or_else(|| refused(EMAIL_HASH_KEY_VAR, "expected at least 32 bytes of base64"))?;
        let email = SecretKey::from_bytes(&Sha256::digest(&email)).expect("32 bytes");
        Self::new(parsed, email).ok_or_else(|| refused(MASTER_KEYS_VAR, "no key"))
    }

    pub fn current_version(&self) -> u32 {
        self.current
    }

    pub fn current(&self) -> &SecretKey {
        &self.masters[&self.current]
    }

    pub fn master(&self, version: u32) -> Option<&SecretKey> {
        self.masters.get(&version)
    }

    /// The lookup hash of a normalized email address.
    pub fn email_hash(&self, normalized_email: &str) -> Vec<u8> {
        self.email_hash.mac(normalized_email.as_bytes())
    }

    /// A stable pseudonym of `value` for tables that need to match it but not to read it (the
    /// Idempotency-Key scope of an anonymous client's IP): 128 bits of a keyed hash, as hex.
    pub fn pseudonym(&self, kind: &str, value: &str) -> String {
        let mac = self.email_hash.mac(format!("{kind}\0{value}").as_bytes());
        hex::encode(&mac[..16])
    }
}

fn decode_key(text: &str) -> Option<SecretKey> {
    SecretKey::from_bytes(&STANDARD.decode(text.trim()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(byte: u8, len: usize) -> String {
        STANDARD.encode(vec![byte; len])
    }

    #[test]
    fn the_first_master_key_is_current_and_older_ones_still_open() {
        let env = |name: &str| match name {
            MASTER_KEYS_VAR => Some(format!("2:{},1:{}", b64(2, 32), b64(1, 32))),
            EMAIL_HASH_KEY_VAR => Some(b64(9, 32)),
            _ => None,
        };
        let keyring = Keyring::from_lookup(Deployment::Production, env).expect("valid");
        assert_eq!(keyring.current_version(), 2);
        assert!(keyring.master(1).is_some());
        assert!(keyring.master(3).is_none());
    }

    #[test]
    fn production_requires_both_keys_and_refuses_bad_ones() {
        let none = |_: &str| None;
        let error = Keyring::from_lookup(Deployment::Production, none).expect_err("required");
        assert_eq!(error.variable, MASTER_KEYS_VAR);
        assert_eq!(
            Keyring::from_lookup(Deployment::Development, none)
                .expect("development keys")
                .current_version(),
            0
        );
        let short = |name: &str| match name {
            MASTER_KEYS_VAR => Some(format!("1:{}", b64(1, 16))),
            EMAIL_HASH_KEY_VAR => Some(b64(9, 32)),
            _ => None,
        };
        let error = Keyring::from_lookup(Deployment::Test, short).expect_err("too short");
        assert_eq!(error.variable, MASTER_KEYS_VAR);
    }
}

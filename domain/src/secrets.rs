//! Hashed secrets as they appear in commands, events and aggregate state.
//!
//! Raw secrets (passwords, email and reset tokens, API keys) never enter an event: the
//! service layer hashes them first (argon2 for passwords, SHA-256 for high-entropy tokens,
//! which need no salt or stretching). Separate newtypes stop a token hash being compared
//! with a password hash, and their `Debug` output is redacted so that logging a command or
//! an event with `{:?}` cannot leak what the event store must keep to itself.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::redact::REDACTED;

macro_rules! secret_hash {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        // The JSON Schema is the published one (docs/events): consumers only ever see the
        // redacted form, so it allows nothing but the placeholder.
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        #[schemars(
            description = "A secret hash: the event store keeps it, everything published \
                           carries \"[redacted]\" instead (docs/adr/0004-secrets-in-events.md).",
            extend("const" = REDACTED)
        )]
        pub struct $name(String);

        impl $name {
            pub fn new(hash: impl Into<String>) -> Self {
                Self(hash.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), REDACTED)
            }
        }
    };
}

secret_hash!(
    /// A password hash in PHC string form, computed outside the domain.
    PasswordHash
);
secret_hash!(
    /// The lowercase hex SHA-256 of an emailed one-time token.
    TokenHash
);
secret_hash!(
    /// The hash of an API key's secret, computed by the service that minted the key.
    ApiKeyHash
);

/// Hashes a one-time token (email verification, password reset) for storage and lookup.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(hex::encode(Sha256::digest(token.as_bytes())))
}

impl TokenHash {
    /// Whether `token` is the secret this hash was made from.
    pub fn matches(&self, token: &str) -> bool {
        constant_time_eq(hash_token(token).0.as_bytes(), self.0.as_bytes())
    }
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

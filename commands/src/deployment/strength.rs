//! What a production secret must not be: a placeholder anyone can read in this repository,
//! too short, or too uniform to have come from a random generator.
//!
//! The checks are a floor against mistakes (a copied compose file, `secret`, `aaaa...`),
//! not a strength meter: a value that passes may still be guessable. `scripts/gen-secrets.sh`
//! writes values that pass with a wide margin. Messages name the variable and the rule,
//! never the value (ADR 0036).

use std::collections::HashMap;

/// Every secret value ever published with Framegate: the compose file's and tests' keys,
/// the Postgres password of the first compose file, the Standard Webhooks specification's
/// example secret. Compared after trimming and lower-casing.
const PLACEHOLDERS: &[&str] = &[
    // docker-compose.yml before ADR 0036.
    "change-me-change-me-change-me-change-me",
    "change-me-too-change-me-too-change-me-too",
    "framegate",
    // Tests and benches.
    "0123456789abcdef0123456789abcdef",
    "framegate-bench-signing-key-0123456789",
    "sk_test_framegate",
    "whsec_test_framegate_billing",
    "sk-test-secret",
    "sk-test-expired",
    "ak-test-access",
    "sk-secret",
    "test-api-key",
    // https://www.standardwebhooks.com's example secret (commands/src/webhook_signature.rs).
    "whsec_mfkq9r8gkyqrtwjupd8ilpzio2lalasw",
    // What people type when asked for a secret.
    "secret",
    "password",
    "postgres",
    "changeme",
    "test",
];

/// Words only a placeholder contains (`change-me-please-...`, `your-secret-here`).
const PLACEHOLDER_WORDS: &[&str] = &[
    "change-me",
    "change_me",
    "changeme",
    "replace-me",
    "replace_me",
    "replaceme",
    "placeholder",
    "your-secret",
    "your_secret",
    "example",
];

/// Fewer distinct characters than this is not random, whatever the length.
pub const MIN_DISTINCT_CHARS: usize = 5;

/// How strict a check is, by who makes the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A key the operator generates (JWT, blob link signing): at least 32 bytes and 64 bits
    /// by its character frequencies (32 random hex digits carry 87 or more).
    Key,
    /// A credential someone else issues (Stripe, SMTP, provider, Kafka SASL, AWS keys):
    /// its length is the issuer's choice, so at least 16 bytes (a Gmail app password) and
    /// 24 bits (16 random lower-case letters carry 36 or more).
    Credential,
    /// The database password inside `DATABASE_URL`: managed databases issue short ones and
    /// the database's own network rules guard it, so only placeholders and the uniform are
    /// refused.
    DatabasePassword,
}

impl SecretKind {
    pub fn min_bytes(self) -> usize {
        match self {
            SecretKind::Key => 32,
            SecretKind::Credential => 16,
            SecretKind::DatabasePassword => 1,
        }
    }

    pub fn min_bits(self) -> f64 {
        match self {
            SecretKind::Key => 64.0,
            SecretKind::Credential => 24.0,
            SecretKind::DatabasePassword => 0.0,
        }
    }
}

/// Why a secret is refused. The `Display` texts never include the value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Weakness {
    #[error(
        "is a placeholder published with Framegate (compose file, README or tests), so anyone \
         can use it; generate one with scripts/gen-secrets.sh"
    )]
    Placeholder,
    #[error("is {len} bytes long; production needs at least {min} (scripts/gen-secrets.sh)")]
    TooShort { len: usize, min: usize },
    #[error(
        "looks hand-made, not random: {why}; generate one with scripts/gen-secrets.sh or \
         `openssl rand -base64 48`"
    )]
    LowEntropy { why: &'static str },
}

/// Checks `value` against the rules of `kind`.
pub fn check(value: &str, kind: SecretKind) -> Result<(), Weakness> {
    let normalized = value.trim().to_lowercase();
    if PLACEHOLDERS.contains(&normalized.as_str())
        || PLACEHOLDER_WORDS
            .iter()
            .any(|word| normalized.contains(word))
    {
        return Err(Weakness::Placeholder);
    }
    let bytes = value.as_bytes();
    if bytes.len() < kind.min_bytes() {
        return Err(Weakness::TooShort {
            len: bytes.len(),
            min: kind.min_bytes(),
        });
    }
    let counts = byte_counts(bytes);
    if counts.len() < MIN_DISTINCT_CHARS {
        return Err(Weakness::LowEntropy {
            why: "fewer than 5 distinct characters",
        });
    }
    if repeats_a_shorter_string(bytes) {
        return Err(Weakness::LowEntropy {
            why: "one shorter string repeated",
        });
    }
    if shannon_bits(&counts, bytes.len()) < kind.min_bits() {
        return Err(Weakness::LowEntropy {
            why: "too few bits by its character frequencies",
        });
    }
    Ok(())
}

fn byte_counts(bytes: &[u8]) -> HashMap<u8, usize> {
    let mut counts = HashMap::new();
    for &b in bytes {
        *counts.entry(b).or_insert(0) += 1;
    }
    counts
}

/// The length times the Shannon entropy of the byte frequencies: what the value carries if
/// each byte were drawn independently from its own frequency table. It underestimates
/// random values only slightly and cannot see structure (hence the repetition check).
fn shannon_bits(counts: &HashMap<u8, usize>, len: usize) -> f64 {
    let n = len as f64;
    let per_byte: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
}

/// `abcabcabcab`: the value is a prefix of some string of at most half its length repeated.
fn repeats_a_shorter_string(bytes: &[u8]) -> bool {
    (1..=bytes.len() / 2).any(|period| bytes.iter().zip(&bytes[period..]).all(|(a, b)| a == b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_ever_published_is_refused_in_any_case() {
        for placeholder in PLACEHOLDERS {
            assert_eq!(
                check(placeholder, SecretKind::DatabasePassword),
                Err(Weakness::Placeholder),
                "{placeholder}"
            );
            assert_eq!(
                check(&placeholder.to_uppercase(), SecretKind::Credential),
                Err(Weakness::Placeholder)
            );
        }
        assert_eq!(
            check("please-change-me-before-going-live-x9Qz", SecretKind::Key),
            Err(Weakness::Placeholder)
        );
    }

    #[test]
    fn keys_shorter_than_32_bytes_are_refused() {
        assert_eq!(
            check("Xq3v9LmZ2pRt8KwY4nBc7HdJ6sFa1G", SecretKind::Key),
            Err(Weakness::TooShort { len: 30, min: 32 })
        );
        assert!(check("Xq3v9LmZ2pRt8KwY4nBc7HdJ6sFa1GeU", SecretKind::Key).is_ok());
        // A Gmail app password is a fine credential, not a key.
        assert!(check("qwhvzmxkrtbplnfa", SecretKind::Credential).is_ok());
    }

    #[test]
    fn uniform_and_repeated_values_are_refused_as_low_entropy() {
        for weak in [
            "a".repeat(48),
            "abcdabcdabcdabcdabcdabcdabcdabcdabcd".to_owned(),
            "0123456789abcdef0123456789abcdef0".to_owned(),
            "hunter2!hunter2!hunter2!hunter2!hunter2!".to_owned(),
            "aaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbcccd".to_owned(),
        ] {
            assert!(
                matches!(
                    check(&weak, SecretKind::Key),
                    Err(Weakness::LowEntropy { .. })
                ),
                "{weak}"
            );
        }
    }

    #[test]
    fn random_values_pass() {
        use rand::distributions::{Alphanumeric, DistString as _};
        use rand::RngCore as _;
        let mut rng = rand::thread_rng();
        for _ in 0..2000 {
            let mut key = [0u8; 16];
            rng.fill_bytes(&mut key);
            let hex32 = hex::encode(key);
            assert_eq!(check(&hex32, SecretKind::Key), Ok(()), "{hex32}");
            let alnum = Alphanumeric.sample_string(&mut rng, 16);
            assert_eq!(check(&alnum, SecretKind::Credential), Ok(()), "{alnum}");
        }
    }

    #[test]
    fn messages_never_contain_the_value() {
        let value = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
        let message = check(value, SecretKind::Key).expect_err("weak").to_string();
        assert!(!message.contains("zzzz"), "{message}");
    }
}

//! Kling's bearer tokens: HS256 JWTs with `iss` = the access key, valid for thirty minutes
//! from five seconds ago. One token is shared by every call and replaced when less than five
//! minutes of it remain, or when Kling has called it expired.

use std::sync::{Mutex, PoisonError};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::provider::{codes, ProviderFailure};

const TOKEN_TTL_SECS: u64 = 1800;
const TOKEN_NOT_BEFORE_SECS: u64 = 5;
/// A cached token is replaced when less than this much of its life remains.
const TOKEN_REFRESH_MARGIN_SECS: u64 = 300;

/// The shared token: reused until it nears expiry or Kling rejects it.
pub(super) struct Tokens {
    access_key: String,
    key: EncodingKey,
    current: Mutex<Option<Token>>,
}

#[derive(Clone)]
struct Token {
    value: String,
    expires_at: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    exp: u64,
    nbf: u64,
}

impl Tokens {
    pub(super) fn new(access_key: &str, secret_key: &str) -> Self {
        Self {
            access_key: access_key.to_owned(),
            key: EncodingKey::from_secret(secret_key.as_bytes()),
            current: Mutex::new(None),
        }
    }

    /// The token to send at `now` (unix seconds); `rejected` is one Kling called expired.
    pub(super) fn bearer(
        &self,
        now: u64,
        rejected: Option<&str>,
    ) -> Result<String, ProviderFailure> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = current.as_ref() {
            let fresh = token.expires_at > now + TOKEN_REFRESH_MARGIN_SECS;
            if fresh && rejected != Some(token.value.as_str()) {
                return Ok(token.value.clone());
            }
        }
        let claims = Claims {
            iss: &self.access_key,
            exp: now + TOKEN_TTL_SECS,
            nbf: now.saturating_sub(TOKEN_NOT_BEFORE_SECS),
        };
        // `Header::new` writes `typ: JWT` along with the algorithm.
        let value = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| {
                ProviderFailure::new(
                    codes::AUTH_FAILED,
                    format!("cannot sign a kling token: {e}"),
                    false,
                    false,
                )
            })?;
        *current = Some(Token {
            value: value.clone(),
            expires_at: claims.exp,
        });
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use serde::Deserialize;

    use super::*;

    #[test]
    fn tokens_carry_the_documented_claims() {
        #[derive(Deserialize)]
        struct Decoded {
            iss: String,
            exp: u64,
            nbf: u64,
        }
        let now = super::super::unix_now();
        let token = Tokens::new("ak", "sk").bearer(now, None).expect("token");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(
            (header.alg, header.typ.as_deref()),
            (Algorithm::HS256, Some("JWT"))
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        let claims =
            jsonwebtoken::decode::<Decoded>(&token, &DecodingKey::from_secret(b"sk"), &validation)
                .expect("valid token")
                .claims;
        assert_eq!(
            (claims.iss.as_str(), claims.exp, claims.nbf),
            ("ak", now + 1800, now - 5)
        );
    }

    #[test]
    fn a_token_is_reused_until_five_minutes_before_it_expires() {
        let tokens = Tokens::new("ak", "sk");
        let start = 1_900_000_000;
        let first = tokens.bearer(start, None).expect("token");
        let later = start + TOKEN_TTL_SECS - TOKEN_REFRESH_MARGIN_SECS - 1;
        assert_eq!(tokens.bearer(later, None).expect("token"), first);
        let near_expiry = later + 1;
        let second = tokens.bearer(near_expiry, None).expect("token");
        assert_ne!(second, first);
        assert_eq!(tokens.bearer(near_expiry + 1, None).expect("token"), second);
    }

    #[test]
    fn a_rejected_token_is_replaced_but_a_newer_one_is_kept() {
        let tokens = Tokens::new("ak", "sk");
        let old = tokens.bearer(1_900_000_000, None).expect("token");
        let new = tokens.bearer(1_900_000_001, Some(&old)).expect("token");
        assert_ne!(new, old);
        // Another caller rejected `old` too, after `new` replaced it: `new` stands.
        assert_eq!(
            tokens.bearer(1_900_000_002, Some(&old)).expect("token"),
            new
        );
    }
}

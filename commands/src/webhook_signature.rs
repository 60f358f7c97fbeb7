//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, issue 13): what webhook
//! deliveries will carry, so that receivers verify them with the official libraries.
//!
//! A secret is `whsec_` and the base64 of 24 to 64 random bytes. A delivery is signed over
//! `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256 and the signature sent as
//! `v1,<base64>`; while a secret is rotated the header carries one signature per live secret,
//! separated by spaces, and a receiver accepts any that matches. This module is the first
//! step of the webhook work: delivery, endpoints and the outbox come next and sign with it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a timestamp may be from the receiver's clock (the libraries' default).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// Bytes of a secret we generate (the spec allows 24 to 64).
const SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("a webhook secret is `whsec_` and the base64 of 24 to 64 bytes")]
    InvalidSecret,
    #[error("the timestamp is more than {TOLERANCE_SECONDS} s from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// A signing secret. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; SECRET_BYTES];
        rand::thread_rng().fill_bytes(&mut key);
        WebhookSecret(key)
    }

    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let key = text
            .strip_prefix(SECRET_PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .ok_or(SignatureError::InvalidSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SignatureError::InvalidSecret);
        }
        Ok(WebhookSecret(key))
    }

    /// The secret as its owner is shown it (once, at creation or rotation).
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(mac))
    }

    /// The HMAC over `id.timestamp.body`, not yet finalized.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` header: one signature per live secret (two while one rotates).
pub fn signature_header(
    secrets: &[&WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Signs many deliveries with the same secrets, as a sender's run does: each secret's HMAC
/// key schedule is computed once, not per delivery. Its headers are [`signature_header`]'s.
#[derive(Clone)]
pub struct Signer {
    keyed: Vec<Hmac<Sha256>>,
}

impl Signer {
    pub fn new(secrets: &[WebhookSecret]) -> Self {
        let keyed = secrets
            .iter()
            .map(|secret| {
                Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length")
            })
            .collect();
        Self { keyed }
    }

    /// Whether there is no secret to sign with.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
    }

    /// The `webhook-signature` header of one delivery.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut header = String::with_capacity(self.keyed.len() * 48);
        let timestamp = timestamp.to_string();
        for keyed in &self.keyed {
            if !header.is_empty() {
                header.push(' ');
            }
            let mut mac = keyed.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            header.push_str("v1,");
            STANDARD.encode_string(mac.finalize().into_bytes(), &mut header);
        }
        header
    }
}

/// Checks a delivery as a receiver does: the timestamp within [`TOLERANCE_SECONDS`] of `now`
/// and some `v1` signature of `header` made with `secret` (compared in constant time).
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<(), SignatureError> {
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    // The body is hashed once, however many signatures the header lists.
    let computed = secret.mac(id, timestamp, body);
    let matches = header
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|claimed| computed.clone().verify_slice(&claimed).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_specifications_example_signs_as_published() {
        let secret = WebhookSecret::parse(SPEC_SECRET).expect("secret");
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        assert_eq!(secret.expose(), SPEC_SECRET);
    }

    #[test]
    fn a_signer_writes_the_same_header_as_each_secret_signing_alone() {
        let spec = WebhookSecret::parse(SPEC_SECRET).expect("secret");
        assert_eq!(
            Signer::new(std::slice::from_ref(&spec)).header(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let signer = Signer::new(&[old.clone(), new.clone()]);
        for timestamp in [0, 7, SPEC_TIMESTAMP, -42, i64::MAX, i64::MIN] {
            for body in [&b""[..], SPEC_BODY] {
                assert_eq!(
                    signer.header(SPEC_ID, timestamp, body),
                    signature_header(&[&old, &new], SPEC_ID, timestamp, body),
                    "{timestamp}"
                );
            }
        }
        assert!(Signer::new(&[]).is_empty());
    }

    #[test]
    fn a_rotation_header_verifies_with_either_secret_and_nothing_else() {
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&old, &new], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(header.split(' ').count(), 2);
        for secret in [&old, &new] {
            assert_eq!(
                verify(
                    secret,
                    SPEC_ID,
                    SPEC_TIMESTAMP,
                    SPEC_BODY,
                    &header,
                    SPEC_TIMESTAMP
                ),
                Ok(())
            );
        }
        let stranger = WebhookSecret::generate();
        assert_eq!(
            verify(
                &stranger,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &header,
                SPEC_TIMESTAMP
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &old,
                SPEC_ID,
                SPEC_TIMESTAMP,
                b"{}",
                &header,
                SPEC_TIMESTAMP
            ),
            Err(SignatureError::Mismatch),
            "another body"
        );
        assert_eq!(
            verify(
                &old,
                "msg_other",
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &header,
                SPEC_TIMESTAMP
            ),
            Err(SignatureError::Mismatch),
            "another id"
        );
        assert_eq!(
            verify(
                &old,
                SPEC_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &header,
                SPEC_TIMESTAMP + TOLERANCE_SECONDS + 1
            ),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn secrets_are_checked_and_never_shown_by_debug() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
        ] {
            assert_eq!(
                WebhookSecret::parse(bad),
                Err(SignatureError::InvalidSecret),
                "{bad}"
            );
        }
        let secret = WebhookSecret::generate();
        let shown = secret.expose();
        assert_eq!(WebhookSecret::parse(&shown), Ok(secret.clone()));
        assert!(!format!("{secret:?}").contains(&shown[SECRET_PREFIX.len()..]));
    }
}

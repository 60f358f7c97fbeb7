//! Stripe's webhook signatures (`Stripe-Signature`), as Stripe documents them under
//! "Verify webhook signatures with your own solution".
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`: each `v1` is the
//! lowercase hex HMAC-SHA256 of `<t>.<raw body>` keyed with the endpoint's signing secret
//! exactly as written (`whsec_...`, not decoded: Stripe's scheme is not Standard Webhooks'),
//! and there are several while a secret is being rolled. An event is accepted when any `v1`
//! matches (compared in constant time) and `t` is within [`TOLERANCE_SECONDS`] of now, which
//! bounds how long a captured request can be replayed. `v0` and unknown schemes are ignored.
//! `api/tests/it/billing_signature.rs` checks this against the official `stripe` library.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far the signed timestamp may be from now (Stripe's libraries default to 300 s).
pub const TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or is not t=...,v1=...")]
    Malformed,
    #[error("no v1 signature of the Stripe-Signature header matches the body")]
    Mismatch,
    #[error("the Stripe-Signature timestamp is more than {TOLERANCE_SECONDS} s from now")]
    Stale,
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The `v1` signature of `payload` at `timestamp`: lowercase hex.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, payload).finalize().into_bytes())
}

/// A `Stripe-Signature` header as Stripe sends it, signed with each of `secrets`.
pub fn header(secrets: &[&str], timestamp: i64, payload: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&sign(secret, timestamp, payload));
    }
    header
}

/// The most `v1` signatures of one header that are looked at (Stripe sends one per live
/// secret: two while a secret is rolled).
const MAX_SIGNATURES: usize = 8;

/// A `v1` signature: the hex of an HMAC-SHA256.
const SIGNATURE_HEX_LEN: usize = 64;

/// The timestamp and `v1` signatures of a header; `None` when it has no timestamp or no
/// `v1`.
fn parse(header: &str) -> Option<(i64, Vec<&str>)> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item.trim().split_once('=')?;
        match key {
            "t" => timestamp = Some(value.parse::<i64>().ok()?),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp?;
    (!signatures.is_empty()).then_some((timestamp, signatures))
}

/// Checks `payload` (the raw body, byte for byte) against `header` as Stripe's libraries do,
/// at `now` (unix seconds).
pub fn verify(secret: &str, payload: &[u8], header: &str, now: i64) -> Result<(), SignatureError> {
    let (timestamp, signatures) = parse(header).ok_or(SignatureError::Malformed)?;
    // The body is hashed once, however many signatures the header names: an anonymous
    // request must not buy one HMAC of its body per `v1=` it lists.
    let computed = mac(secret, timestamp, payload);
    let matches = signatures
        .iter()
        .take(MAX_SIGNATURES)
        .filter(|signature| signature.len() == SIGNATURE_HEX_LEN)
        .filter_map(|signature| hex::decode(signature).ok())
        .any(|claimed| computed.clone().verify_slice(&claimed).is_ok());
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if now.abs_diff(timestamp) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
    const NOW: i64 = 1_767_225_600;

    #[test]
    fn a_signed_body_verifies() {
        let header = header(&[SECRET], NOW, BODY);
        assert_eq!(verify(SECRET, BODY, &header, NOW + 10), Ok(()));
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(sign(SECRET, NOW, BODY).len(), 64, "hex of 32 bytes");
    }

    #[test]
    fn any_of_several_v1_signatures_may_match_and_v0_is_ignored() {
        let rolling = header(&["whsec_old", SECRET], NOW, BODY);
        assert_eq!(verify(SECRET, BODY, &rolling, NOW), Ok(()));
        assert_eq!(verify("whsec_old", BODY, &rolling, NOW), Ok(()));
        let with_v0 = format!("t={NOW},v0=00ff,v1={}", sign(SECRET, NOW, BODY));
        assert_eq!(verify(SECRET, BODY, &with_v0, NOW), Ok(()));
    }

    #[test]
    fn a_changed_body_a_wrong_secret_or_a_moved_timestamp_does_not_verify() {
        let header = header(&[SECRET], NOW, BODY);
        let changed = br#"{"id":"evt_1","type":"charge.refunded"}"#;
        assert_eq!(
            verify(SECRET, changed, &header, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", BODY, &header, NOW),
            Err(SignatureError::Mismatch)
        );
        let moved = header.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(
            verify(SECRET, BODY, &moved, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_stale_either_way() {
        let header = header(&[SECRET], NOW, BODY);
        assert_eq!(verify(SECRET, BODY, &header, NOW + 300), Ok(()));
        assert_eq!(
            verify(SECRET, BODY, &header, NOW + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, BODY, &header, NOW - 301),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v1 = sign(SECRET, NOW, BODY);
        for bad in [
            String::new(),
            format!("v1={v1}"),
            format!("t={NOW}"),
            format!("t=soon,v1={v1}"),
            format!("t={NOW};v1={v1}"),
        ] {
            assert_eq!(
                verify(SECRET, BODY, &bad, NOW),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        let not_hex = format!("t={NOW},v1=zz");
        assert_eq!(
            verify(SECRET, BODY, &not_hex, NOW),
            Err(SignatureError::Mismatch)
        );
    }
}

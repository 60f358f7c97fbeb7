//! Our `Stripe-Signature` handling against the official `stripe` Python library (pinned in
//! scripts/services.sh, found through FRAMEGATE_TEST_CLIENTS_PYTHON): the library verifies
//! headers we sign, we verify headers it signs, and both refuse the same tampering and the
//! same stale timestamps.

use std::process::Command;

use framegate_api::billing::signature::{self, SignatureError};

const SECRET: &str = "whsec_7f3c1e0b9a8d4c2e6f5a1b3c9d8e7f60";
const BODY: &str = r#"{"id":"evt_1Qx","object":"event","type":"checkout.session.completed","data":{"object":{"id":"cs_test_a1","metadata":{"credits":"1000"}}}}"#;

fn python() -> String {
    std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `script` with the official library, `args` as `sys.argv[1:]`; its printed line.
fn official(script: &str, args: &[&str]) -> String {
    let python = python();
    let output = Command::new(&python)
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {python} (FRAMEGATE_TEST_CLIENTS_PYTHON): {e}"));
    assert!(
        output.status.success(),
        "{python}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// What `stripe.WebhookSignature.verify_header` says of a delivery: `ok` or the exception.
fn official_verdict(body: &str, header: &str, secret: &str) -> String {
    let script = r#"
import sys, stripe
body, header, secret = sys.argv[1:4]
try:
    stripe.WebhookSignature.verify_header(body, header, secret, 300)
    print("ok")
except Exception as error:
    print(type(error).__name__ + ": " + str(error))
"#;
    official(script, &[body, header, secret])
}

/// The header the official library makes for `body` at `timestamp`.
fn official_header(body: &str, timestamp: i64) -> String {
    let script = r#"
import sys, stripe
body, secret, timestamp = sys.argv[1:4]
print(stripe.WebhookSignature.generate_signature_header(body, secret, int(timestamp)))
"#;
    official(script, &[body, SECRET, &timestamp.to_string()])
}

#[test]
fn the_official_library_verifies_our_headers_and_refuses_tampering() {
    let now = chrono::Utc::now().timestamp();
    let ours = signature::header(&[SECRET], now, BODY.as_bytes());
    assert_eq!(official_verdict(BODY, &ours, SECRET), "ok");

    // While a secret is rolled both signatures are sent; either secret verifies.
    let rolling = signature::header(&["whsec_previous", SECRET], now, BODY.as_bytes());
    assert_eq!(official_verdict(BODY, &rolling, SECRET), "ok");
    assert_eq!(official_verdict(BODY, &rolling, "whsec_previous"), "ok");

    let tampered = BODY.replace("1000", "9000");
    assert!(official_verdict(&tampered, &ours, SECRET).starts_with("SignatureVerificationError"));
    assert!(official_verdict(BODY, &ours, "whsec_other").starts_with("SignatureVerificationError"));
    let old = signature::header(&[SECRET], now - 301, BODY.as_bytes());
    let verdict = official_verdict(BODY, &old, SECRET);
    assert!(verdict.contains("tolerance"), "{verdict}");
}

#[test]
fn we_verify_the_official_librarys_headers_and_refuse_what_it_refuses() {
    let now = chrono::Utc::now().timestamp();
    let theirs = official_header(BODY, now);
    assert_eq!(
        theirs,
        signature::header(&[SECRET], now, BODY.as_bytes()),
        "byte for byte"
    );
    assert_eq!(
        signature::verify(SECRET, BODY.as_bytes(), &theirs, now),
        Ok(())
    );
    let tampered = BODY.replace("1000", "9000");
    assert_eq!(
        signature::verify(SECRET, tampered.as_bytes(), &theirs, now),
        Err(SignatureError::Mismatch)
    );
    let stale = official_header(BODY, now - 301);
    assert_eq!(
        signature::verify(SECRET, BODY.as_bytes(), &stale, now),
        Err(SignatureError::Stale)
    );
}

#[test]
fn a_header_stuffed_with_signatures_is_looked_at_only_up_to_eight() {
    let now = 1_767_225_600;
    let valid = signature::header(&[SECRET], now, BODY.as_bytes());
    let valid_v1 = valid.split_once(",v1=").expect("a v1").1;
    let junk = |_: usize| format!(",v1={}", "0".repeat(64));
    // Seven wrong ones and the right one: accepted, as a header during a secret roll would be.
    let seven: String = (0..7).map(junk).collect();
    let within = format!("t={now}{seven},v1={valid_v1}");
    assert_eq!(
        signature::verify(SECRET, BODY.as_bytes(), &within, now),
        Ok(())
    );
    // Past the eighth, nothing more is hashed or compared: an anonymous caller cannot make
    // us work per entry, so the right signature at the ten-thousandth place is not seen.
    let stuffed: String = (0..10_000).map(junk).collect();
    let beyond = format!("t={now}{stuffed},v1={valid_v1}");
    assert_eq!(
        signature::verify(SECRET, BODY.as_bytes(), &beyond, now),
        Err(SignatureError::Mismatch)
    );
    // Empty and odd-length entries are skipped without decoding.
    let odd = format!("t={now},v1=,v1=abc,v1={valid_v1}");
    assert_eq!(
        signature::verify(SECRET, BODY.as_bytes(), &odd, now),
        Ok(())
    );
}

//! Our Standard Webhooks signatures, checked by the official `standardwebhooks` library from
//! PyPI (pinned in scripts/services.sh), as a receiver would: a delivery signed with the
//! current secret, one signed during a rotation, and a tampered one.

use std::process::Command;

use framegate_commands::webhook_signature::{signature_header, WebhookSecret};

/// What the official library says of a delivery: `ok`, or the name of the exception.
fn official_verdict(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    body: &str,
    header: &str,
) -> String {
    let python =
        std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys
from standardwebhooks.webhooks import Webhook
secret, msg_id, timestamp, body, signature = sys.argv[1:6]
try:
    Webhook(secret).verify(body, {"webhook-id": msg_id, "webhook-timestamp": timestamp,
                                  "webhook-signature": signature})
    print("ok")
except Exception as error:
    print(type(error).__name__)
"#;
    let output = Command::new(&python)
        .args(["-c", script])
        .args([&secret.expose(), id, &timestamp.to_string(), body, header])
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

#[test]
fn the_official_library_verifies_our_signatures_and_refuses_tampering() {
    let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
    let id = "msg_2yq8ZBZ0dQm4nL0VxS3Qb7wJk1a";
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"type":"video.completed","data":{"id":"0193a6f2","status":"completed"}}"#;

    let single = signature_header(&[&new], id, now, body.as_bytes());
    assert_eq!(official_verdict(&new, id, now, body, &single), "ok");

    // During a rotation both signatures go out; a receiver holding either secret accepts.
    let rotating = signature_header(&[&old, &new], id, now, body.as_bytes());
    assert_eq!(official_verdict(&old, id, now, body, &rotating), "ok");
    assert_eq!(official_verdict(&new, id, now, body, &rotating), "ok");

    let tampered = body.replace("completed", "failed");
    assert_eq!(
        official_verdict(&new, id, now, &tampered, &single),
        "WebhookVerificationError"
    );
    let stranger = WebhookSecret::generate();
    assert_eq!(
        official_verdict(&stranger, id, now, body, &single),
        "WebhookVerificationError"
    );
}

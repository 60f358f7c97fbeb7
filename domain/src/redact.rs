//! Which event fields are secret, and how to blank them in anything leaving the store.
//!
//! Events must keep password and token hashes because aggregates are rebuilt from them,
//! but projections, admin event browsers, exports and logs have no use for them and would
//! widen the blast radius of a leak. Everything that publishes stored events passes the
//! payload through [`redact_payload`] first. It works on raw JSON so that readers need not
//! deserialize into the domain types (and keeps working for event versions they don't know).

use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;

use crate::user::User;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

const USER: &str = User::TYPE;

/// The fields of an event's payload that hold secrets.
pub fn sensitive_fields(aggregate_type: &str, event_type: &str) -> &'static [&'static str] {
    match (aggregate_type, event_type) {
        (USER, "UserRegistered") => &["password_hash", "verification_token_hash"],
        (USER, "PasswordChanged" | "PasswordResetCompleted") => &["password_hash"],
        (USER, "EmailVerificationIssued" | "PasswordResetRequested") => &["token_hash"],
        (USER, "ApiKeyIssued") => &["key_hash"],
        _ => &[],
    }
}

/// A copy of a stored payload with every secret replaced by [`REDACTED`].
///
/// Accepts the stored externally tagged form (`{"UserRegistered": {...}}`) as well as a bare
/// event body. Besides the listed fields, any field whose name ends in `_hash` is blanked
/// wherever it appears, so that a secret added to a future event without updating
/// [`sensitive_fields`] still does not escape. Absent and `null` fields stay as they are.
pub fn redact_payload(aggregate_type: &str, event_type: &str, payload: &Value) -> Value {
    let mut redacted = payload.clone();
    let fields = sensitive_fields(aggregate_type, event_type);
    match redacted.get_mut(event_type) {
        Some(body) => blank_fields(body, fields),
        None => blank_fields(&mut redacted, fields),
    }
    blank_hash_fields(&mut redacted);
    redacted
}

/// Serializes a domain event in its stored form and redacts it.
pub fn redact_event<A: Aggregate>(event: &A::Event) -> Result<Value, serde_json::Error> {
    let payload = serde_json::to_value(event)?;
    Ok(redact_payload(A::TYPE, &event.event_type(), &payload))
}

fn blank_fields(body: &mut Value, fields: &[&str]) {
    let Value::Object(map) = body else {
        return;
    };
    for field in fields {
        if let Some(value) = map.get_mut(*field) {
            blank(value);
        }
    }
}

fn blank_hash_fields(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key.ends_with("_hash") {
                    blank(value);
                } else {
                    blank_hash_fields(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_hash_fields),
        _ => {}
    }
}

fn blank(value: &mut Value) {
    if !value.is_null() {
        *value = Value::String(REDACTED.to_string());
    }
}

//! Which event fields are personal data, whose they are, and the stored envelope that holds
//! them encrypted (crypto-shredding, docs/adr/0043-crypto-shredding.md).
//!
//! The domain types keep their plaintext fields; the envelope exists only in the stored row.
//! Below the domain types, the write side takes the personal fields of an event out of its
//! body (and `client_ip`/`user_agent` out of its metadata), encrypts them together under the
//! data key of the user they belong to, and stores one string in their place:
//! `{"UserRegistered": {"user_id": ..., "$pii": "v1:<user>:<fields>:<ciphertext>"}}`. Every
//! reader opens the envelope before decoding (`framegate_commands::pii`); when the user's key
//! was destroyed, the fields read as [`ERASED`]. This module is pure: it knows the fields and
//! the envelope's JSON, not the cryptography.
//!
//! To add a personal field: list its path in [`personal_fields`] and, if its event belongs to
//! no user by its aggregate, say whose it is in [`subject`].

use serde_json::{Map, Value};

/// What an erased personal field reads as.
pub const ERASED: &str = "[erased]";

/// The key of the sealed envelope, in an event body and in metadata.
pub const ENVELOPE: &str = "$pii";

/// The personal entries of an event's metadata (written by the API from the request).
pub const METADATA_FIELDS: &[&str] = &["client_ip", "user_agent"];

/// Every event type whose body holds personal data, with the fields (dotted paths inside the
/// body): the one list [`personal_fields`] reads, and the one a maintenance pass over stored
/// rows walks (`framegate events seal`).
pub const PERSONAL: &[(&str, &[&str])] = &[
    ("UserRegistered", &["email"]),
    ("VideoRequested", &["spec.prompt", "spec.negative_prompt"]),
];

/// The personal fields of an event type's body, as dotted paths inside the body.
pub fn personal_fields(event_type: &str) -> &'static [&'static str] {
    PERSONAL
        .iter()
        .find(|(name, _)| *name == event_type)
        .map_or(&[], |(_, fields)| fields)
}

/// The user an event's personal data belongs to: the user of a `User` stream or of a credit
/// account (which shares the user's id), the owner of a requested video or an uploaded image.
/// `None` for events that belong to nobody in particular. Borrowed from the event: readers ask
/// for every event of a batch.
pub fn subject<'v>(
    aggregate_type: &str,
    aggregate_id: &'v str,
    event_type: &str,
    payload: &'v Value,
) -> Option<&'v str> {
    if aggregate_type == "User" || aggregate_type == "CreditAccount" {
        return Some(aggregate_id);
    }
    let body = payload.get(event_type)?;
    match event_type {
        "VideoRequested" => body.get("spec")?.get("owner")?.as_str(),
        "ImageUploaded" | "ImageRejected" => body.get("owner").and_then(Value::as_str),
        _ => None,
    }
}

/// The user whose request an event's metadata describes: the acting user (`user:<id>`), else
/// the event's [`subject`] (a registration, a password reset asked for without signing in).
pub fn metadata_subject<'v>(
    metadata: &'v Value,
    event_subject: Option<&'v str>,
) -> Option<&'v str> {
    metadata
        .get("actor")
        .and_then(Value::as_str)
        .and_then(|actor| actor.strip_prefix("user:"))
        .or(event_subject)
}

/// The value at a dotted `path` inside `body`, without allocating.
pub fn lookup<'v>(body: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(body, |node, part| node.get(part))
}

/// The object holding the last part of a dotted `path`, and that part.
fn get_path<'v, 'p>(
    body: &'v mut Value,
    path: &'p str,
) -> Option<(&'v mut Map<String, Value>, &'p str)> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, path),
    };
    let mut node = body;
    for part in parents.into_iter().flat_map(|parents| parents.split('.')) {
        node = node.get_mut(part)?;
    }
    node.as_object_mut().map(|object| (object, last))
}

/// Takes the present, non-null `fields` out of `body`, by path. `None` when there were none.
pub fn take(body: &mut Value, fields: &[&str]) -> Option<Map<String, Value>> {
    let mut taken = Map::new();
    for path in fields {
        if let Some((object, key)) = get_path(body, path) {
            match object.remove(key) {
                Some(Value::Null) => {
                    object.insert(key.to_owned(), Value::Null);
                }
                Some(value) => {
                    taken.insert((*path).to_owned(), value);
                }
                None => {}
            }
        }
    }
    (!taken.is_empty()).then_some(taken)
}

/// Puts fields taken by [`take`] back into `body`.
pub fn put(body: &mut Value, fields: Map<String, Value>) {
    for (path, value) in fields {
        if !path.contains('.') {
            // A top-level field: its path is its key, already owned.
            if let Some(object) = body.as_object_mut() {
                object.insert(path, value);
            }
        } else if let Some((object, key)) = get_path(body, &path) {
            object.insert(key.to_owned(), value);
        }
    }
}

/// Sets `fields` of `body` to [`ERASED`] (each that has a place to go).
pub fn erase<'f>(body: &mut Value, fields: impl IntoIterator<Item = &'f str>) {
    for path in fields {
        if let Some((object, key)) = get_path(body, path) {
            object.insert(key.to_owned(), Value::String(ERASED.to_owned()));
        }
    }
}

/// Whether `body` holds plaintext personal data of `fields` (a row written before encryption).
pub fn has_plaintext(body: &Value, fields: &[&str]) -> bool {
    fields.iter().any(|path| {
        lookup(body, path).is_some_and(|value| !value.is_null() && value.as_str() != Some(ERASED))
    })
}

/// A parsed envelope: `v1:<user>:<field,field>:<base64url ciphertext>` (none of the parts can
/// hold a `:`; field paths hold dots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed<'s> {
    pub subject: &'s str,
    /// The field paths, comma-separated: see [`Sealed::fields`].
    pub field_list: &'s str,
    pub ciphertext: &'s str,
}

impl<'s> Sealed<'s> {
    pub fn parse(text: &'s str) -> Option<Self> {
        let mut parts = text.splitn(4, ':');
        if parts.next()? != "v1" {
            return None;
        }
        let subject = parts.next()?;
        let field_list = parts.next()?;
        let ciphertext = parts.next()?;
        Some(Self {
            subject,
            field_list,
            ciphertext,
        })
    }

    /// The paths of the fields sealed inside.
    pub fn fields(&self) -> std::str::Split<'s, char> {
        self.field_list.split(',')
    }

    pub fn format(subject: &str, fields: &[&str], ciphertext: &str) -> String {
        format!("v1:{subject}:{}:{ciphertext}", fields.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_are_taken_and_put_back() {
        let original = json!({"spec": {"owner": "u", "prompt": "a cat", "negative_prompt": null}});
        let mut body = original.clone();
        let taken = take(&mut body, personal_fields("VideoRequested")).expect("a prompt");
        assert_eq!(
            body,
            json!({"spec": {"owner": "u", "negative_prompt": null}})
        );
        assert_eq!(
            taken,
            json!({"spec.prompt": "a cat"})
                .as_object()
                .expect("map")
                .clone()
        );
        put(&mut body, taken);
        assert_eq!(body, original);
    }

    #[test]
    fn erased_fields_read_as_erased() {
        let mut body = json!({"spec": {"owner": "u"}});
        erase(&mut body, ["spec.prompt"]);
        assert_eq!(body, json!({"spec": {"owner": "u", "prompt": ERASED}}));
        assert!(!has_plaintext(&body, &["spec.prompt"]));
        assert!(has_plaintext(&json!({"email": "a@b.c"}), &["email"]));
    }

    #[test]
    fn envelopes_round_trip() {
        let text = Sealed::format("0193", &["spec.prompt", "spec.negative_prompt"], "AbC-_");
        let sealed = Sealed::parse(&text).expect("parses");
        assert_eq!(sealed.subject, "0193");
        assert_eq!(
            sealed.fields().collect::<Vec<_>>(),
            ["spec.prompt", "spec.negative_prompt"]
        );
        assert_eq!(sealed.ciphertext, "AbC-_");
        assert_eq!(Sealed::parse("v2:x:y:z"), None);
        assert_eq!(Sealed::parse("v1:x:y"), None);
    }
}

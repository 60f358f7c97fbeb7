//! Opening a batch of read rows (the CPU side of [`super::Pii::open`], after its one key
//! query): every reader of the log runs this for every event it reads, so it allocates per
//! user and per sealed field, not per event. The users are gathered borrowed, the AAD is
//! written into one buffer, the ciphertext decrypted in place in another, and each user's
//! key schedule is the one their cached `SecretKey` expanded once.

use std::collections::{HashMap, HashSet};

use framegate_domain::pii::{self as fields, Sealed, ENVELOPE, METADATA_FIELDS};
use serde_json::{Map, Value};

use super::{EventParts, KeyState, Opening};

/// The users whose keys opening `events` as `opening` says needs, each once.
pub(super) fn batch_users(events: &[EventParts<'_>], opening: Opening) -> Vec<String> {
    let mut users: HashSet<&str> = HashSet::new();
    for event in events {
        let subject = event.subject();
        let body = event.payload.get(event.event_type);
        let personal = fields::personal_fields(event.event_type);
        if let Some(user) = body.and_then(sealed_owner) {
            users.insert(user);
        } else if body.is_some_and(|body| fields::has_plaintext(body, personal)) {
            users.extend(subject);
        }
        if opening == Opening::Bodies {
            continue;
        }
        if let Some(user) = sealed_owner(event.metadata) {
            users.insert(user);
        } else if fields::has_plaintext(event.metadata, METADATA_FIELDS) {
            users.extend(fields::metadata_subject(event.metadata, subject));
        }
    }
    users.into_iter().map(str::to_owned).collect()
}

/// The user a part's envelope names, if it holds one.
fn sealed_owner(part: &Value) -> Option<&str> {
    let sealed = Sealed::parse(part.get(ENVELOPE)?.as_str()?)?;
    Some(sealed.subject)
}

/// Opens every event of a batch in place under `keys` (the states of [`batch_users`]), as
/// `opening` says.
pub(super) fn open_batch(
    keys: &HashMap<String, KeyState>,
    events: &mut [EventParts<'_>],
    opening: Opening,
) {
    let mut opener = Opener {
        keys,
        opening,
        any_erased: keys.values().any(|state| matches!(state, KeyState::Erased)),
        aad: String::new(),
        plain: Vec::new(),
    };
    for event in events.iter_mut() {
        opener.open_event(event);
    }
}

/// The keys of a batch and the buffers reused across its events.
struct Opener<'k> {
    keys: &'k HashMap<String, KeyState>,
    opening: Opening,
    /// Whether any user of the batch was erased (else plaintext needs no look-up).
    any_erased: bool,
    aad: String,
    plain: Vec<u8>,
}

impl Opener<'_> {
    fn erased(&self, user: Option<&str>) -> bool {
        self.any_erased
            && user.is_some_and(|user| matches!(self.keys.get(user), Some(KeyState::Erased)))
    }

    fn open_event(&mut self, event: &mut EventParts<'_>) {
        let event_type = event.event_type;
        let personal = fields::personal_fields(event_type);
        // Whether the users of each part's plaintext, if any (rows written before
        // encryption), were erased: read now, before the parts are edited.
        let (body_erased, metadata_erased) = {
            let subject = event.subject();
            (
                self.erased(subject),
                self.erased(fields::metadata_subject(event.metadata, subject)),
            )
        };
        match take_envelope(event.payload.get_mut(event_type)) {
            Some(Envelope::Text(text)) => {
                event.write_aad(&mut self.aad, "payload");
                let body = event
                    .payload
                    .get_mut(event_type)
                    .expect("the body held the envelope");
                self.open_sealed(body, personal, &text);
            }
            // No envelope (or no string in its place): plaintext.
            None | Some(Envelope::Other) => {
                if let Some(body) = event.payload.get_mut(event_type).filter(|_| body_erased) {
                    erase_plaintext(body, personal);
                }
            }
        }
        if self.opening == Opening::Bodies {
            withhold(event.metadata);
            return;
        }
        match take_envelope(Some(&mut *event.metadata)) {
            Some(Envelope::Text(text)) => {
                event.write_aad(&mut self.aad, "metadata");
                self.open_sealed(event.metadata, METADATA_FIELDS, &text);
            }
            None | Some(Envelope::Other) => {
                if metadata_erased {
                    erase_plaintext(event.metadata, METADATA_FIELDS);
                }
            }
        }
    }

    /// Puts the fields of the envelope `text` (taken out of `part`) back, opened under its user's key
    /// and `self.aad`; `[erased]` when the key is gone or the envelope does not open.
    fn open_sealed(&mut self, part: &mut Value, personal: &[&str], text: &str) {
        let Some(sealed) = Sealed::parse(text) else {
            tracing::warn!("an unreadable personal data envelope reads as erased");
            fields::erase(part, personal.iter().copied());
            return;
        };
        let key = match self.keys.get(sealed.subject) {
            Some(KeyState::Live(key)) => Some(key),
            _ => None,
        };
        let opened = key.and_then(|key| {
            key.open_text_into(sealed.ciphertext, self.aad.as_bytes(), &mut self.plain)
                .then(|| serde_json::from_slice::<Map<String, Value>>(&self.plain).ok())
                .flatten()
        });
        match opened {
            Some(plain) => fields::put(part, plain),
            None => {
                if key.is_some() {
                    tracing::warn!(
                        user = sealed.subject,
                        "a personal data envelope does not open under its user's key"
                    );
                }
                fields::erase(part, sealed.fields());
            }
        }
    }
}

/// What a part held under [`ENVELOPE`].
enum Envelope {
    Text(String),
    /// Something else than a string: dropped, and the part read as written before encryption.
    Other,
}

/// Takes the envelope out of `part`, if it holds one.
fn take_envelope(part: Option<&mut Value>) -> Option<Envelope> {
    match part?.as_object_mut()?.remove(ENVELOPE)? {
        Value::String(text) => Some(Envelope::Text(text)),
        _ => Some(Envelope::Other),
    }
}

/// Removes the personal entries of `metadata` unread, sealed or in plaintext: the reader
/// asked for bodies only ([`Opening::Bodies`]).
fn withhold(metadata: &mut Value) {
    if let Some(entries) = metadata.as_object_mut() {
        for name in std::iter::once(ENVELOPE).chain(METADATA_FIELDS.iter().copied()) {
            entries.remove(name);
        }
    }
}

/// Sets the present personal fields of a plaintext `part` to `[erased]` (its user was erased).
fn erase_plaintext(part: &mut Value, personal: &[&str]) {
    if !fields::has_plaintext(part, personal) {
        return;
    }
    let present: Vec<&str> = personal
        .iter()
        .copied()
        .filter(|path| fields::lookup(part, path).is_some_and(|v| !v.is_null()))
        .collect();
    fields::erase(part, present);
}

#[cfg(test)]
mod tests;

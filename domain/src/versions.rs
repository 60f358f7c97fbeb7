//! Event versions and the upcaster chain: the one place a stored event is decoded.
//!
//! Events are a contract (docs/events/): a payload already in the log is never edited. When an
//! event type's JSON changes, its version goes up and a row in [`UPCASTERS`] turns the previous
//! version's JSON into the new one. Whoever reads the log (aggregate loading, projections,
//! replay, process managers, the audit view, the Kafka relay) goes through [`upcast`] or
//! [`decode`], so every reader sees the current version of every event, whatever was stored.
//!
//! To add a version: add a row to [`UPCASTERS`] (its `to` becomes the version new events are
//! written with, through `DomainEvent::event_version` → [`current_version`]), generate the new
//! schema in docs/events/ and keep a fixture of the old payload in the tests.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The version of every event type that has never changed.
pub const FIRST_VERSION: &str = crate::EVENT_VERSION;

/// One step of an event type's chain: turns the payload of version `from` into version `to`.
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    /// Edits the externally tagged payload (`{"<event_type>": {...}}`) in place.
    pub up: fn(&mut Value) -> Result<(), &'static str>,
}

/// Every upcaster, in chain order per event type. Event type names are unique across
/// aggregates (checked by a test), so the chain is keyed by event type alone, which is also
/// what cqrs-es's `EventUpcaster` is given.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "VideoRequested",
    from: "1.0",
    to: "2.0",
    up: video_requested_v2,
}];

/// `VideoRequested` 2.0: the spec says whether the video has a soundtrack. Every video asked
/// for before 2.0 was asked for without one.
fn video_requested_v2(payload: &mut Value) -> Result<(), &'static str> {
    let spec = payload
        .get_mut("VideoRequested")
        .and_then(|body| body.get_mut("spec"))
        .and_then(Value::as_object_mut)
        .ok_or("VideoRequested 1.0 has no spec object")?;
    spec.insert("generate_audio".to_owned(), Value::Bool(false));
    Ok(())
}

/// The version events of `event_type` are written with today.
pub fn current_version(event_type: &str) -> &'static str {
    UPCASTERS
        .iter()
        .rev()
        .find(|step| step.event_type == event_type)
        .map_or(FIRST_VERSION, |step| step.to)
}

/// Whether a stored `(event_type, event_version)` is older than the current version.
pub fn is_outdated(event_type: &str, event_version: &str) -> bool {
    event_version != current_version(event_type)
}

/// Why a stored event could not be read as a current one.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the payload is tagged {tag:?} but the event type is {event_type}")]
    TagMismatch { tag: String, event_type: String },
    #[error("{event_type} has no version {version} (current: {current})")]
    UnknownVersion {
        event_type: String,
        version: String,
        current: &'static str,
    },
    #[error("{event_type} {version} cannot be upcast: {reason}")]
    Upcast {
        event_type: String,
        version: String,
        reason: &'static str,
    },
    #[error("the {event_type} payload does not match its type: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The payload of a stored event as the current version of its type, and that version.
///
/// Borrowed when the event is current (a replay reads millions of them); copied once and
/// edited by each step of the chain otherwise. A version the chain does not know (a newer
/// deployment's, or a typo) is an error, never guessed at.
pub fn upcast<'p>(
    event_type: &str,
    event_version: &str,
    payload: &'p Value,
) -> Result<(Cow<'p, Value>, &'static str), DecodeError> {
    let current = current_version(event_type);
    if event_version == current {
        return Ok((Cow::Borrowed(payload), current));
    }
    let mut version = event_version;
    let mut value = payload.clone();
    loop {
        let Some(step) = UPCASTERS
            .iter()
            .find(|step| step.event_type == event_type && step.from == version)
        else {
            return Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                version: event_version.to_owned(),
                current,
            });
        };
        (step.up)(&mut value).map_err(|reason| DecodeError::Upcast {
            event_type: event_type.to_owned(),
            version: version.to_owned(),
            reason,
        })?;
        version = step.to;
        if version == current {
            return Ok((Cow::Owned(value), current));
        }
    }
}

/// Decodes a stored event into the current typed event.
///
/// Events are stored externally tagged (`{"UserRegistered": {...}}`); the tag must match the
/// `event_type` column, so a row whose columns disagree is refused rather than read as
/// whatever its payload happens to say.
pub fn decode<E: DeserializeOwned>(
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<E, DecodeError> {
    let tag = payload
        .as_object()
        .filter(|object| object.len() == 1)
        .and_then(|object| object.keys().next());
    match tag {
        Some(tag) if tag == event_type => {}
        other => {
            return Err(DecodeError::TagMismatch {
                tag: other.cloned().unwrap_or_default(),
                event_type: event_type.to_owned(),
            })
        }
    }
    let (payload, _) = upcast(event_type, event_version, payload)?;
    // From a reference: cloning each current payload first would cost a replay dearly.
    E::deserialize(payload.as_ref()).map_err(|source| DecodeError::Payload {
        event_type: event_type.to_owned(),
        source,
    })
}

//! cqrs-es's side of the upcaster chain: aggregates load through the same chain as every other
//! reader of the log (`framegate_domain::versions`), so a command on a video requested in an
//! old version sees the current event.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use framegate_domain::versions;

/// The domain's upcaster table as one cqrs-es `EventUpcaster`.
pub struct DomainUpcasters;

impl DomainUpcasters {
    /// What `PersistedEventStore::with_upcasters` takes.
    pub fn boxed() -> Vec<Box<dyn EventUpcaster>> {
        vec![Box::new(DomainUpcasters)]
    }
}

impl EventUpcaster for DomainUpcasters {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        versions::is_outdated(event_type, event_version)
    }

    /// cqrs-es leaves no room for an error here: a row the chain cannot upcast is passed on as
    /// stored and fails to deserialize, which names it.
    fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        upcast(event)
    }
}

/// `event` as the current version of its type (unchanged if it cannot be upcast).
pub fn upcast(mut event: SerializedEvent) -> SerializedEvent {
    match versions::upcast(&event.event_type, &event.event_version, &event.payload) {
        Ok((payload, version)) => {
            event.payload = payload.into_owned();
            event.event_version = version.to_owned();
            event
        }
        Err(_) => event,
    }
}

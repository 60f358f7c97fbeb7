//! What the aggregates may ask of the outside world while deciding a command: only the time.
//!
//! Keeping the clock behind a trait is what makes expiry rules testable and keeps `handle`
//! free of hidden IO. `apply` never consults it, so replaying history is clock-independent.

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub trait DomainServices: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The `Services` type of every aggregate; shared because one framework instance serves
/// all commands of its aggregate type.
pub type Services = Arc<dyn DomainServices>;

/// A clock stopped at one instant, for tests and deterministic replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub DateTime<Utc>);

impl FixedClock {
    pub fn shared(self) -> Services {
        Arc::new(self)
    }
}

impl DomainServices for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> Services {
        Arc::new(SystemClock)
    }
}

impl DomainServices for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

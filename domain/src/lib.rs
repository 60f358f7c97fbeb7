//! The pure domain of Framegate: aggregates, their commands, events and errors, and the
//! value types they are made of.
//!
//! Everything here is deterministic and free of IO so that the same code can decide
//! commands in production, replay the event store, and run in tests with a fixed clock.
//! Storage, hashing of passwords, provider calls and delivery live in the other crates and
//! reach the domain only through command fields and the [`DomainServices`] clock.

pub mod catalog;
pub mod credit_account;
pub mod credits;
pub mod ids;
pub mod image;
pub mod pii;
pub mod provider;
pub mod redact;
pub mod retry;
pub mod routing;
pub mod secrets;
pub mod services;
pub mod user;
pub mod versions;
pub mod video;
pub mod webhook;

pub use credit_account::*;
pub use credits::Credits;
pub use ids::*;
pub use image::*;
pub use redact::{redact_event, redact_payload, sensitive_fields, REDACTED};
pub use secrets::*;
pub use services::{DomainServices, FixedClock, Services, SystemClock};
pub use user::*;
pub use video::*;
pub use webhook::{WebhookCommand, WebhookEndpoint, WebhookError, WebhookEvent};

/// The first schema version of every event type. A type whose JSON changed is written with
/// the version its last upcaster produces (`versions::current_version`).
pub const EVENT_VERSION: &str = "1.0";

//! The write side of Framegate.
//!
//! Commands are executed by one cqrs-es `CqrsFramework` per aggregate over postgres-es in
//! event-store mode (never snapshot or aggregate-store mode: see docs/architecture.md). This
//! crate adds what the framework leaves to us: the schema (migrations), the metadata every
//! event carries, bounded retries of optimistic-concurrency conflicts, the uniqueness of
//! emails, and the services the domain receives from outside (clock, password hashing).

pub mod blobs;
pub mod cache;
pub mod db;
pub mod deployment;
pub mod erasure;
pub mod error;
pub mod idempotency;
pub mod inline;
pub mod metadata;
pub mod metrics;
pub mod passwords;
pub mod pii;
pub mod position;
pub mod repository;
pub mod retry;
pub mod sessions;
pub mod snapshots;
pub mod store;
pub mod stored;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace_context;
pub mod unit;
pub mod upcasting;
pub mod users;
pub mod verification;
pub mod videos;
pub mod webhook_deliveries;
pub mod webhook_signature;
pub mod webhooks;

pub use error::CommandError;
pub use metadata::{Actor, CommandMetadata};
pub use position::LogPosition;
pub use store::EventStore;
pub use stored::StoredEvent;
pub use trace_context::TraceContext;
pub use unit::{AppendError, UnitOfWork};

//! The read side of Framegate.
//!
//! Everything downstream of the event store (read models, workers, the Kafka relay) consumes
//! one ordered log through named subscriptions with checkpoints. This crate owns that log
//! reader and the subscription runner, and the read models of accounts and credits with the
//! projectors that build them from the log, and the inline read models the write side keeps
//! current in its own transactions.

pub mod audit;
pub mod credits_low;
pub mod failure;
pub mod inline;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod parking;
pub mod preferences;
pub mod read_models;
pub mod replay;
pub mod status;
pub mod subscription;
pub mod video_object;

pub use log::{LogPosition, StoredEvent};
pub use subscription::{
    EventHandler, HandlerError, OnPoison, Subscription, SubscriptionError, Transient,
};

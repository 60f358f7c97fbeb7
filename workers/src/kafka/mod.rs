//! Kafka: the relay that publishes the event log, and the consumer group that hands
//! `VideoRequested` to provider workers.
//!
//! Kafka is optional. Without `FRAMEGATE_KAFKA_BROKERS` nothing here runs: integrations read
//! nothing, and workers follow the Postgres log directly. With it, the relay (`relay`) is one
//! more subscription on the ordered log whose effect is outside the database, so it publishes
//! at least once and moves its checkpoint only after the broker acknowledged; workers (`jobs`)
//! take their jobs from the video topic through a consumer group so several processes share
//! them. `config` reads the settings, `message` turns a stored event into a Kafka message in
//! the documented contract (docs/events/README.md).

pub mod config;
pub mod jobs;
pub mod message;
pub mod relay;

pub use config::KafkaConfig;
pub use jobs::JobConsumer;
pub use relay::{KafkaRelay, RelayHealth, SUBSCRIPTION};

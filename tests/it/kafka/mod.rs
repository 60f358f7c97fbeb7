//! The Kafka feed and Kafka-distributed workers against a real Kafka-protocol broker (tansu,
//! started by scripts/services.sh; the outage test starts one of its own).

mod relay;
mod support;
mod workers;

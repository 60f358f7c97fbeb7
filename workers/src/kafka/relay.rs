//! The Kafka relay: a subscription on the ordered log that publishes every event.
//!
//! Each batch of the log is sent in order with an idempotent producer (`acks=all`), and the
//! handler returns only when the broker has acknowledged every message of it; the
//! subscription then moves its checkpoint in the batch's transaction. A crash in between sends
//! the batch again (at least once; consumers deduplicate by `ce_id`). While the broker is
//! unreachable the handler fails with a `Transient` error: the subscription rolls back, waits
//! with growing backoff and tries the same batch again, and `RelayHealth` says why it is not
//! ready. Nothing is skipped. Topics are created on first use with the configured partition
//! count; an existing topic is left as it is.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_domain::{CreditAccount, Image, User, Video};
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientContext;
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};

use framegate_commands::metrics;
use framegate_projections::notify::Notifications;
use framegate_projections::subscription::BoxError;
use framegate_projections::{
    EventHandler, HandlerError, OnPoison, StoredEvent, Subscription, SubscriptionError, Transient,
};

use super::config::KafkaConfig;
use super::message::{to_message, OutgoingMessage};

/// The relay's subscription name (its checkpoint row).
pub const SUBSCRIPTION: &str = "relay.kafka";

/// How long a batch may wait for acknowledgements before the relay reports itself unhealthy.
const SLOW_ACK: Duration = Duration::from_secs(5);

/// Whether the relay is publishing, and if not, why: shared with health endpoints.
#[derive(Debug, Clone, Default)]
pub struct RelayHealth(Arc<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    /// Set after the first batch (or topic check) the broker accepted.
    healthy: AtomicBool,
    problem: Mutex<Option<String>>,
    published: AtomicU64,
}

/// A point-in-time view of [`RelayHealth`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayStatus {
    pub healthy: bool,
    /// Why it is unhealthy (the last broker error), if it is.
    pub problem: Option<String>,
    /// Messages the broker acknowledged since start.
    pub published: u64,
}

impl RelayHealth {
    pub fn status(&self) -> RelayStatus {
        RelayStatus {
            healthy: self.0.healthy.load(Ordering::Relaxed),
            problem: self.0.problem.lock().map(|p| p.clone()).unwrap_or_default(),
            published: self.0.published.load(Ordering::Relaxed),
        }
    }

    fn ok(&self, published: usize) {
        metrics::kafka_relay_healthy(true);
        self.0
            .published
            .fetch_add(published as u64, Ordering::Relaxed);
        if !self.0.healthy.swap(true, Ordering::Relaxed) {
            info!("Kafka relay is publishing");
        }
        if let Ok(mut problem) = self.0.problem.lock() {
            *problem = None;
        }
    }

    fn failing(&self, problem: String) {
        metrics::kafka_relay_healthy(false);
        if self.0.healthy.swap(false, Ordering::Relaxed) {
            warn!(%problem, "Kafka relay is not publishing");
        }
        if let Ok(mut slot) = self.0.problem.lock() {
            *slot = Some(problem);
        }
    }
}

/// Hears librdkafka's client-level errors (all brokers down, authentication) as they happen,
/// before any delivery times out.
pub struct RelayContext {
    health: RelayHealth,
}

impl ClientContext for RelayContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if matches!(
            code,
            Some(
                RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
            )
        ) {
            self.health.failing(format!("{error}: {reason}"));
        }
        warn!(%error, reason, "Kafka client error");
    }
}

pub struct KafkaRelay {
    config: KafkaConfig,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer cannot go on).
    producer: Mutex<Arc<FutureProducer<RelayContext>>>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist.
    topics: Mutex<HashSet<String>>,
    health: RelayHealth,
}

impl KafkaRelay {
    pub fn new(config: KafkaConfig, health: RelayHealth) -> Result<Self, KafkaError> {
        let producer = Arc::new(producer(&config, &health)?);
        let admin = config.client().create()?;
        Ok(Self {
            config,
            producer: Mutex::new(producer),
            admin,
            topics: Mutex::new(HashSet::new()),
            health,
        })
    }

    pub fn health(&self) -> RelayHealth {
        self.health.clone()
    }

    /// Creates the topics of `aggregate_types` that do not exist yet.
    pub async fn ensure_topics(&self, aggregate_types: &[&str]) -> Result<(), KafkaError> {
        let missing: Vec<String> = {
            let known = self.topics.lock().map(|t| t.clone()).unwrap_or_default();
            let mut missing: Vec<String> = aggregate_types
                .iter()
                .map(|aggregate| self.config.topic(aggregate))
                .filter(|topic| !known.contains(topic))
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        create_topics(&self.admin, &self.config, &missing).await?;
        if let Ok(mut known) = self.topics.lock() {
            known.extend(missing);
        }
        Ok(())
    }

    fn current_producer(&self) -> Arc<FutureProducer<RelayContext>> {
        match self.producer.lock() {
            Ok(producer) => producer.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a failed batch the producer is replaced by a fresh one. One in a fatal state
    /// refuses every message after it, and one whose messages timed out during an outage may
    /// stay stuck re-establishing its idempotent session (observed against tansu). The batch is
    /// sent again from the checkpoint, so a fresh producer repeats at most messages consumers
    /// already deduplicate by `ce_id`.
    fn recover(&self) {
        let current = self.current_producer();
        match current.client().fatal_error() {
            Some((code, reason)) => warn!(
                ?code,
                reason, "Kafka producer hit a fatal error; creating a new one"
            ),
            None => info!("Kafka batch failed; retrying it with a new producer"),
        }
        match producer(&self.config, &self.health) {
            Ok(fresh) => {
                let old = self
                    .producer
                    .lock()
                    .map(|mut slot| std::mem::replace(&mut *slot, Arc::new(fresh)))
                    .ok();
                // Dropping a producer purges and flushes it (up to half a second): not on
                // the runtime's threads.
                tokio::task::spawn_blocking(move || drop((current, old)));
            }
            Err(error) => warn!(%error, "could not create a new Kafka producer"),
        }
    }

    /// Sends `events` in order and waits until the broker acknowledged all of them. On
    /// failure, names the first event that was not acknowledged.
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), (usize, KafkaError)> {
        let mut types: Vec<&str> = events.iter().map(|e| e.aggregate_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        self.ensure_topics(&types).await.map_err(|e| (0, e))?;

        let producer = self.current_producer();
        let messages: Vec<OutgoingMessage> = events
            .iter()
            .map(|event| {
                to_message(
                    event,
                    self.config.topic(&event.aggregate_type),
                    &self.config.source,
                )
            })
            .collect();
        let mut deliveries = Vec::with_capacity(messages.len());
        for (index, (message, event)) in messages.iter().zip(events).enumerate() {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&message.topic)
                .key(message.key.as_bytes())
                .payload(message.value.as_slice())
                .headers(headers)
                .timestamp(event.recorded_at.timestamp_millis());
            // A full local queue empties as acknowledgements arrive: wait and enqueue again.
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => return Err((index, error)),
                }
            };
            metrics::kafka_produced(&event.aggregate_type);
            deliveries.push(delivery);
        }

        let acknowledged = join_all(deliveries);
        tokio::pin!(acknowledged);
        let results = tokio::select! {
            results = &mut acknowledged => results,
            () = tokio::time::sleep(SLOW_ACK) => {
                self.health.failing(format!(
                    "waiting more than {} s for the broker to acknowledge a batch",
                    SLOW_ACK.as_secs()
                ));
                acknowledged.await
            }
        };
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err((index, error)),
                Err(_cancelled) => return Err((index, KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// Waits until messages still queued in the producer are delivered, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.current_producer().flush(timeout) {
            warn!(%error, "Kafka producer did not flush before shutdown");
        }
    }
}

#[async_trait]
impl EventHandler for KafkaRelay {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        self.handle_batch(conn, std::slice::from_ref(event))
            .await
            .map_err(|error| error.source)
    }

    async fn handle_batch(
        &self,
        _conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        let started = std::time::Instant::now();
        let published = self.publish(events).await;
        let acked = published
            .as_ref()
            .map(|_| events.iter().map(|e| e.aggregate_type.as_str()));
        metrics::kafka_batch(acked.map_err(|_| ()), started.elapsed());
        match published {
            Ok(()) => {
                self.health.ok(events.len());
                Ok(())
            }
            Err((index, error)) => {
                let event = &events[index.min(events.len().saturating_sub(1))];
                self.health.failing(format!(
                    "event #{} ({}): {error}",
                    event.global_position, event.event_type
                ));
                self.recover();
                Err(HandlerError::at(event, Transient(Box::new(error))))
            }
        }
    }
}

/// An idempotent producer: `acks=all`, ordered retries, set after the pass-through properties
/// so configuration cannot weaken them. `message.timeout.ms` bounds how long a batch waits for
/// an unreachable broker before the relay backs off and reports it (30 s unless configured).
fn producer(
    config: &KafkaConfig,
    health: &RelayHealth,
) -> Result<FutureProducer<RelayContext>, KafkaError> {
    let mut client = config.client();
    if !config.properties.contains_key("message.timeout.ms") {
        client.set("message.timeout.ms", "30000");
    }
    if !config.properties.contains_key("linger.ms") {
        client.set("linger.ms", "5");
    }
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .create_with_context(RelayContext {
            health: health.clone(),
        })
}

/// Creates `topics` with the configured partitions and replication; one that exists already
/// counts as created.
pub async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
    topics: &[String],
) -> Result<(), KafkaError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(topic) => info!(%topic, partitions = config.partitions, "Kafka topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                warn!(%topic, ?code, "could not create a Kafka topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot create the Kafka client (check FRAMEGATE_KAFKA_* settings): {0}")]
    Client(#[from] KafkaError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
}

/// Runs the relay until `shutdown` flips, woken by the process's shared listener if given
/// (else by one of its own). Only a bad client configuration returns an error; outages are
/// waited out, and an event that can never be published is parked and the relay stops
/// before it (order per aggregate is the feed's contract) until it is retried.
pub async fn run(
    pool: PgPool,
    config: KafkaConfig,
    health: RelayHealth,
    notifications: Option<Notifications>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), RelayError> {
    let mut subscription = Subscription::new(SUBSCRIPTION, pool)
        .with_batch_size(config.batch_size)
        .with_max_backoff(config.max_backoff)
        .on_poison(OnPoison::Stop);
    if let Some(notifications) = notifications {
        subscription = subscription.with_notifications(notifications);
    }
    let relay = KafkaRelay::new(config, health)?;
    // Topics exist before the first event, so consumers can subscribe at once.
    if let Err(error) = relay.ensure_topics(&KNOWN_AGGREGATES).await {
        warn!(%error, "could not check the Kafka topics yet; will retry with the first batch");
    }
    info!(brokers = %relay.config.brokers, "Kafka relay started");
    let result = subscription
        .run(&relay, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    relay.flush(Duration::from_secs(5));
    Ok(result?)
}

/// The aggregate types whose topics the relay creates up front.
pub const KNOWN_AGGREGATES: [&str; 4] = [User::TYPE, CreditAccount::TYPE, Video::TYPE, Image::TYPE];

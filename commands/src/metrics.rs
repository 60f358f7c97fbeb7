//! Prometheus metrics: every metric's name, help and labels, the process's one registry, and
//! the text exposition served at `GET /metrics` (docs/adr/0035-metrics.md).
//!
//! One place on purpose: adding a metric means adding a family to [`Metrics`] and a recording
//! function beside it; the crates above (projections, workers, api, the binary) call those
//! functions and never name a metric themselves. Every label is a bounded set: route
//! templates, methods, statuses, aggregate and event types, subscription and provider names,
//! stable codes. Never a user, video, key or request id, and nothing a caller can invent
//! (unknown methods and codes become `other`).
//!
//! The registry is process-wide, like the `metrics` crate's global recorder: recording needs
//! no handle threaded through every constructor. The tests of one binary share it, so they
//! assert on what moved, not on absolute values.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

use crate::stored::StoredEvent;

/// The `Content-Type` of [`encode`]'s text (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Label = Cow<'static, str>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request and command latencies: 1 ms to 10 s.
const FAST: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Calls to providers and webhook receivers: 10 ms to 1 min.
const UPSTREAM: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Jobs and their queue waits: 100 ms to 1 h.
const JOBS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn fast() -> Histogram {
    Histogram::new(FAST)
}

fn upstream() -> Histogram {
    Histogram::new(UPSTREAM)
}

fn jobs() -> Histogram {
    Histogram::new(JOBS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    route: Label,
    method: Label,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateLabels {
    aggregate: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    aggregate: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    aggregate: Label,
    event_type: Label,
}

/// A single `key="value"` label, for the families with one.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct OneLabel(&'static str, Label);

impl EncodeLabelSet for OneLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        [(self.0, self.1.as_ref())].encode(encoder)
    }
}

fn one(key: &'static str, value: impl Into<Label>) -> OneLabel {
    OneLabel(key, value.into())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    subscription: Label,
    reason: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    provider: Label,
    operation: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    provider: Label,
    operation: Label,
}

/// Every metric of the process. Fields are public for tests; record through the functions.
pub struct Metrics {
    registry: Registry,
    /// The series names the families can have, for [`names`].
    names: Vec<String>,
    pub http_requests: Histograms<HttpLabels>,
    pub http_in_flight: Gauge,
    pub commands: Family<CommandLabels, Counter>,
    pub command_duration: Histograms<AggregateLabels>,
    pub command_conflicts: Family<AggregateLabels, Counter>,
    pub command_retries: Family<AggregateLabels, Counter>,
    pub events_appended: Family<EventLabels, Counter>,
    pub credits: Family<OneLabel, Counter>,
    pub jobs_finished: Family<OneLabel, Counter>,
    pub subscription_handled: Family<OneLabel, Counter>,
    pub subscription_parked: Family<OneLabel, Counter>,
    pub subscription_retries: Family<RetryLabels, Counter>,
    pub subscription_batch: Histograms<OneLabel>,
    pub subscription_position: Family<OneLabel, Gauge>,
    pub subscription_lag_events: Family<OneLabel, Gauge>,
    pub subscription_lag_seconds: Family<OneLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub subscription_parked_now: Family<OneLabel, Gauge>,
    pub subscription_stopped: Family<OneLabel, Gauge>,
    pub store_scrape_ok: Gauge,
    pub provider_calls: Family<CallLabels, Counter>,
    pub provider_call_duration: Histograms<OperationLabels>,
    pub provider_circuit_open: Family<OneLabel, Gauge>,
    pub jobs_in_flight: Family<OneLabel, Gauge>,
    pub job_duration: Histograms<OneLabel>,
    pub job_queue_wait: Histograms<OneLabel>,
    pub kafka_produced: Family<OneLabel, Counter>,
    pub kafka_acked: Family<OneLabel, Counter>,
    pub kafka_batch_failures: Counter,
    pub kafka_ack_duration: Histogram,
    pub kafka_healthy: Gauge,
    pub webhook_attempts: Family<OneLabel, Counter>,
    pub webhook_duration: Histograms<OneLabel>,
    pub image_processing: Histograms<OneLabel>,
    pub image_rejections: Family<OneLabel, Counter>,
    pub build_info: Family<OneLabel, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            registry: Registry::with_prefix("framegate"),
            names: Vec::new(),
            http_requests: Family::new_with_constructor(fast as fn() -> Histogram),
            http_in_flight: Gauge::default(),
            commands: Family::default(),
            command_duration: Family::new_with_constructor(fast as fn() -> Histogram),
            command_conflicts: Family::default(),
            command_retries: Family::default(),
            events_appended: Family::default(),
            credits: Family::default(),
            jobs_finished: Family::default(),
            subscription_handled: Family::default(),
            subscription_parked: Family::default(),
            subscription_retries: Family::default(),
            subscription_batch: Family::new_with_constructor(fast as fn() -> Histogram),
            subscription_position: Family::default(),
            subscription_lag_events: Family::default(),
            subscription_lag_seconds: Family::default(),
            subscription_parked_now: Family::default(),
            subscription_stopped: Family::default(),
            store_scrape_ok: Gauge::default(),
            provider_calls: Family::default(),
            provider_call_duration: Family::new_with_constructor(upstream as fn() -> Histogram),
            provider_circuit_open: Family::default(),
            jobs_in_flight: Family::default(),
            job_duration: Family::new_with_constructor(jobs as fn() -> Histogram),
            job_queue_wait: Family::new_with_constructor(jobs as fn() -> Histogram),
            kafka_produced: Family::default(),
            kafka_acked: Family::default(),
            kafka_batch_failures: Counter::default(),
            kafka_ack_duration: fast(),
            kafka_healthy: Gauge::default(),
            webhook_attempts: Family::default(),
            webhook_duration: Family::new_with_constructor(upstream as fn() -> Histogram),
            image_processing: Family::new_with_constructor(fast as fn() -> Histogram),
            image_rejections: Family::default(),
            build_info: Family::default(),
        };
        m.register()
    }

    /// Names and helps, in the order of the README's list. The prefix `framegate_` and the
    /// `_total` of counters are added by the encoder.
    fn register(mut self) -> Self {
        let (r, n) = (&mut self.registry, &mut self.names);
        add(
            r,
            n,
            "build_info",
            "Always 1; the running version in its label",
            self.build_info.clone(),
        );
        add(
            r,
            n,
            "http_request_duration_seconds",
            "HTTP requests by route template, method and status, until the response head",
            self.http_requests.clone(),
        );
        add(
            r,
            n,
            "http_requests_in_flight",
            "HTTP requests being handled",
            self.http_in_flight.clone(),
        );
        add(
            r,
            n,
            "commands",
            "Commands executed, by aggregate type and outcome (ok, rejected, conflict, error)",
            self.commands.clone(),
        );
        add(
            r,
            n,
            "command_duration_seconds",
            "Time to decide and store a command, conflict retries included",
            self.command_duration.clone(),
        );
        add(
            r,
            n,
            "command_conflicts",
            "Optimistic-concurrency conflicts met by commands, by aggregate type",
            self.command_conflicts.clone(),
        );
        add(
            r,
            n,
            "command_retries",
            "Commands decided again after a conflict, by aggregate type",
            self.command_retries.clone(),
        );
        add(
            r,
            n,
            "events_appended",
            "Events committed by this process, by aggregate and event type",
            self.events_appended.clone(),
        );
        add(
            r,
            n,
            "credits",
            "Credits moved by events this process committed, by movement",
            self.credits.clone(),
        );
        add(
            r,
            n,
            "jobs_finished",
            "Videos that reached a final status in events this process committed",
            self.jobs_finished.clone(),
        );
        add(
            r,
            n,
            "jobs_in_flight",
            "Videos not yet final, by status (from the videos read model at scrape time)",
            self.jobs_in_flight.clone(),
        );
        add(
            r,
            n,
            "job_duration_seconds",
            "From request to final status, by status, for final events this process committed",
            self.job_duration.clone(),
        );
        add(
            r,
            n,
            "job_queue_wait_seconds",
            "From request to the first submission to a provider, by provider",
            self.job_queue_wait.clone(),
        );
        add(
            r,
            n,
            "subscription_events_handled",
            "Events handled by this process's subscriptions",
            self.subscription_handled.clone(),
        );
        add(
            r,
            n,
            "subscription_events_parked",
            "Events this process's subscriptions parked as never handleable",
            self.subscription_parked.clone(),
        );
        add(
            r,
            n,
            "subscription_retries",
            "Batches tried again, by subscription and reason (transient, failing)",
            self.subscription_retries.clone(),
        );
        add(
            r,
            n,
            "subscription_batch_duration_seconds",
            "Time to handle one batch and move the checkpoint",
            self.subscription_batch.clone(),
        );
        add(
            r,
            n,
            "subscription_position",
            "Global position of each subscription's checkpoint (store-wide, at scrape time)",
            self.subscription_position.clone(),
        );
        add(
            r,
            n,
            "subscription_lag_events",
            "Committed events after each subscription's checkpoint (store-wide, at scrape time)",
            self.subscription_lag_events.clone(),
        );
        add(
            r,
            n,
            "subscription_lag_seconds",
            "Age of the oldest event a subscription has not handled yet, 0 when caught up",
            self.subscription_lag_seconds.clone(),
        );
        add(
            r,
            n,
            "subscription_parked",
            "Events parked and not yet resolved, by subscription (store-wide, at scrape time)",
            self.subscription_parked_now.clone(),
        );
        add(
            r,
            n,
            "subscription_stopped",
            "1 while a subscription is stopped at a parked event",
            self.subscription_stopped.clone(),
        );
        add(
            r,
            n,
            "store_scrape_ok",
            "1 if the store-wide figures of this scrape could be read from Postgres",
            self.store_scrape_ok.clone(),
        );
        add(
            r,
            n,
            "provider_calls",
            "Calls to video providers by provider, operation and outcome (ok or failure code)",
            self.provider_calls.clone(),
        );
        add(
            r,
            n,
            "provider_call_duration_seconds",
            "Latency of calls to video providers",
            self.provider_call_duration.clone(),
        );
        add(
            r,
            n,
            "provider_circuit_open",
            "1 while a provider's circuit breaker is open (store-wide, at scrape time)",
            self.provider_circuit_open.clone(),
        );
        add(
            r,
            n,
            "kafka_messages_produced",
            "Events handed to the Kafka producer, by aggregate type",
            self.kafka_produced.clone(),
        );
        add(
            r,
            n,
            "kafka_messages_acked",
            "Events the Kafka broker acknowledged, by aggregate type",
            self.kafka_acked.clone(),
        );
        add(
            r,
            n,
            "kafka_batch_failures",
            "Relay batches the broker did not acknowledge (sent again)",
            self.kafka_batch_failures.clone(),
        );
        add(
            r,
            n,
            "kafka_ack_duration_seconds",
            "From sending a relay batch to the broker's last acknowledgement",
            self.kafka_ack_duration.clone(),
        );
        add(
            r,
            n,
            "kafka_relay_healthy",
            "1 while the relay publishes (its readiness), 0 while the broker is away or refusing",
            self.kafka_healthy.clone(),
        );
        add(
            r,
            n,
            "webhook_attempts",
            "Webhook delivery attempts by outcome",
            self.webhook_attempts.clone(),
        );
        add(
            r,
            n,
            "webhook_attempt_duration_seconds",
            "Latency of webhook delivery attempts, by outcome",
            self.webhook_duration.clone(),
        );
        add(
            r,
            n,
            "image_processing_seconds",
            "Time to check, decode and thumbnail an upload, by outcome",
            self.image_processing.clone(),
        );
        add(
            r,
            n,
            "image_rejections",
            "Uploads refused, by problem code",
            self.image_rejections.clone(),
        );
        self.build_info
            .get_or_create(&one("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        self
    }
}

/// Registers `metric` as `framegate_<name>` and notes the series names it can have.
fn add<M: Metric + TypedMetric>(
    registry: &mut Registry,
    names: &mut Vec<String>,
    name: &str,
    help: &str,
    metric: M,
) {
    let full = format!("framegate_{name}");
    match M::TYPE {
        MetricType::Counter => names.push(format!("{full}_total")),
        MetricType::Histogram => {
            for part in ["_bucket", "_sum", "_count"] {
                names.push(format!("{full}{part}"));
            }
        }
        _ => names.push(full),
    }
    registry.register(name, help, metric);
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Every series name the exposition can have (a family shows only once it has a series):
/// counters with `_total`, histograms as their `_bucket`, `_sum` and `_count`.
pub fn names() -> &'static [String] {
    &METRICS.names
}

/// Everything registered, in the Prometheus text format ([`CONTENT_TYPE`]).
pub fn encode() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail; a metric's own encoder refusing would leave a partial
    // text, which is still better than none for a scrape.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &METRICS.registry);
    text
}

/// `value` if it is one of `known`, else `other`: label values from outside stay bounded.
fn bounded(value: &str, known: &[&'static str]) -> Label {
    Cow::Borrowed(
        known
            .iter()
            .find(|k| **k == value)
            .copied()
            .unwrap_or("other"),
    )
}

// --- HTTP (api) ---

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// One request answered: `route` is the route template (`/v1/videos/{id}`), never the path.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    METRICS
        .http_requests
        .get_or_create(&HttpLabels {
            route: Cow::Owned(route.to_owned()),
            method: bounded(method, &METHODS),
            status,
        })
        .observe(elapsed.as_secs_f64());
}

/// Counts a request in flight until the guard drops.
pub fn http_in_flight() -> InFlight {
    METRICS.http_in_flight.inc();
    InFlight(())
}

/// See [`http_in_flight`].
#[must_use]
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.http_in_flight.dec();
    }
}

// --- Commands (this crate) ---

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    Ok,
    /// The aggregate refused it (a domain rule).
    Rejected,
    /// Conflicts not retried, or retried until the limit.
    Conflict,
    Error,
}

pub fn command(aggregate: &'static str, outcome: CommandOutcome, elapsed: Duration) {
    let outcome = match outcome {
        CommandOutcome::Ok => "ok",
        CommandOutcome::Rejected => "rejected",
        CommandOutcome::Conflict => "conflict",
        CommandOutcome::Error => "error",
    };
    METRICS
        .commands
        .get_or_create(&CommandLabels {
            aggregate: aggregate.into(),
            outcome: outcome.into(),
        })
        .inc();
    METRICS
        .command_duration
        .get_or_create(&AggregateLabels {
            aggregate: aggregate.into(),
        })
        .observe(elapsed.as_secs_f64());
}

/// An optimistic-concurrency conflict on `aggregate`, and whether it is decided again.
pub fn command_conflict(aggregate: Label, retried: bool) {
    let labels = AggregateLabels { aggregate };
    METRICS.command_conflicts.get_or_create(&labels).inc();
    if retried {
        METRICS.command_retries.get_or_create(&labels).inc();
    }
}

/// What committed `events` say: counts per event type, credit movements, final statuses.
pub(crate) fn committed(events: &[StoredEvent]) {
    for event in events {
        METRICS
            .events_appended
            .get_or_create(&EventLabels {
                aggregate: event.aggregate_type.clone().into(),
                event_type: event.event_type.clone().into(),
            })
            .inc();
        let payload = &event.payload[&event.event_type];
        let amount = |field: &str| payload[field].as_u64().unwrap_or(0);
        let credits = |movement: &'static str, amount: u64| {
            if amount > 0 {
                METRICS
                    .credits
                    .get_or_create(&one("movement", movement))
                    .inc_by(amount);
            }
        };
        match event.event_type.as_str() {
            "CreditsGranted" => credits("granted", amount("amount")),
            "CreditsPurchased" => credits("purchased", amount("amount")),
            "CreditsRevoked" => credits("revoked", amount("revoked")),
            "CreditsReserved" => credits("reserved", amount("amount")),
            "ReservationCaptured" => {
                credits("captured", amount("captured"));
                credits("released", amount("released"));
            }
            "ReservationReleased" => credits("released", amount("amount")),
            "VideoCompleted" => job_finished(event, "completed"),
            "VideoFailed" => job_finished(event, "failed"),
            "VideoCancelled" => job_finished(event, "cancelled"),
            "SubmissionStarted" if payload["attempt"].as_u64() == Some(1) => {
                let provider = payload["provider"]
                    .as_str()
                    .and_then(|p| p.parse::<framegate_domain::ProviderKind>().ok());
                if let (Some(provider), Some(waited)) = (provider, since_request(event)) {
                    METRICS
                        .job_queue_wait
                        .get_or_create(&one("provider", provider.as_str()))
                        .observe(waited);
                }
            }
            _ => {}
        }
    }
}

fn job_finished(event: &StoredEvent, status: &'static str) {
    let labels = one("status", status);
    METRICS.jobs_finished.get_or_create(&labels).inc();
    if let Some(took) = since_request(event) {
        METRICS.job_duration.get_or_create(&labels).observe(took);
    }
}

/// Seconds from a video's request to `event`: video ids are UUIDv7s made when the request
/// is, so the id carries its request time and no lookup is needed. `None` for other ids.
fn since_request(event: &StoredEvent) -> Option<f64> {
    let id = uuid::Uuid::parse_str(&event.aggregate_id).ok()?;
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    let requested = chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)?;
    let took = (event.recorded_at - requested).to_std().ok()?;
    Some(took.as_secs_f64())
}

// --- Subscriptions (projections) ---

/// A batch of `handled` events committed with its checkpoint after `elapsed`.
pub fn subscription_batch(subscription: &str, handled: usize, elapsed: Duration) {
    subscription_handled(subscription, handled);
    METRICS
        .subscription_batch
        .get_or_create(&one("subscription", subscription.to_owned()))
        .observe(elapsed.as_secs_f64());
}

/// Events handled outside a batch (a parked event retried by an operator).
pub fn subscription_handled(subscription: &str, handled: usize) {
    METRICS
        .subscription_handled
        .get_or_create(&one("subscription", subscription.to_owned()))
        .inc_by(handled as u64);
}

pub fn subscription_parked(subscription: &str) {
    METRICS
        .subscription_parked
        .get_or_create(&one("subscription", subscription.to_owned()))
        .inc();
}

/// A batch failed and is tried again: `transient` (outage) or a failing event not yet parked.
pub fn subscription_retry(subscription: &str, transient: bool) {
    METRICS
        .subscription_retries
        .get_or_create(&RetryLabels {
            subscription: subscription.to_owned().into(),
            reason: if transient { "transient" } else { "failing" }.into(),
        })
        .inc();
}

/// Where one subscription stands, as the store says at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionGauge {
    pub name: String,
    pub position: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub parked: i64,
    pub stopped: bool,
}

/// Replaces the store-wide figures (subscriptions, circuits, jobs in flight) with `store`'s,
/// or marks the scrape's store figures missing.
pub fn set_store(store: Option<&StoreGauges>) {
    let m = &*METRICS;
    m.store_scrape_ok.set(i64::from(store.is_some()));
    let Some(store) = store else {
        return;
    };
    for family in [
        &m.subscription_position,
        &m.subscription_lag_events,
        &m.subscription_parked_now,
        &m.subscription_stopped,
    ] {
        family.clear();
    }
    m.subscription_lag_seconds.clear();
    for s in &store.subscriptions {
        let labels = one("subscription", s.name.clone());
        m.subscription_position
            .get_or_create(&labels)
            .set(s.position);
        m.subscription_lag_events
            .get_or_create(&labels)
            .set(s.lag_events);
        m.subscription_lag_seconds
            .get_or_create(&labels)
            .set(s.lag_seconds);
        m.subscription_parked_now
            .get_or_create(&labels)
            .set(s.parked);
        m.subscription_stopped
            .get_or_create(&labels)
            .set(i64::from(s.stopped));
    }
    m.provider_circuit_open.clear();
    for (provider, open) in &store.circuits {
        m.provider_circuit_open
            .get_or_create(&one("provider", provider.clone()))
            .set(i64::from(*open));
    }
    m.jobs_in_flight.clear();
    for (status, count) in &store.jobs_in_flight {
        m.jobs_in_flight
            .get_or_create(&one("status", status.clone()))
            .set(*count);
    }
}

/// The store-wide figures read at scrape time (`framegate_projections::metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    pub subscriptions: Vec<SubscriptionGauge>,
    /// Provider name and whether its circuit is open now.
    pub circuits: Vec<(String, bool)>,
    /// Status and how many videos have it, for the statuses that are not final.
    pub jobs_in_flight: Vec<(String, i64)>,
}

// --- Providers and jobs (workers) ---

/// The failure codes providers answer with (`framegate_domain::retry::codes` and the few the
/// pipeline adds).
const PROVIDER_CODES: [&str; 14] = {
    use framegate_domain::retry::codes::*;
    [
        MODERATED,
        INVALID_REQUEST,
        AUTH_FAILED,
        QUOTA_EXHAUSTED,
        RATE_LIMITED,
        UPSTREAM_UNAVAILABLE,
        UPSTREAM_TIMEOUT,
        RESULT_EXPIRED,
        GENERATION_FAILED,
        NOT_FOUND,
        SUBMISSION_UNKNOWN,
        INVALID_OUTPUT,
        "invalid_image",
        "deadline_exceeded",
    ]
};

/// A call to a provider: `outcome` is `ok` or the failure's stable code.
pub fn provider_call(
    provider: &'static str,
    operation: &'static str,
    outcome: &str,
    took: Duration,
) {
    METRICS
        .provider_calls
        .get_or_create(&CallLabels {
            provider: provider.into(),
            operation: operation.into(),
            outcome: if outcome == "ok" {
                "ok".into()
            } else {
                bounded(outcome, &PROVIDER_CODES)
            },
        })
        .inc();
    METRICS
        .provider_call_duration
        .get_or_create(&OperationLabels {
            provider: provider.into(),
            operation: operation.into(),
        })
        .observe(took.as_secs_f64());
}

// --- Kafka relay (workers) ---

pub fn kafka_produced(aggregate: &str) {
    METRICS
        .kafka_produced
        .get_or_create(&one("aggregate", aggregate.to_owned()))
        .inc();
}

/// A batch acknowledged (`Ok`, with its aggregate types) or refused.
pub fn kafka_batch<'a>(acked: Result<impl Iterator<Item = &'a str>, ()>, took: Duration) {
    match acked {
        Ok(aggregates) => {
            for aggregate in aggregates {
                METRICS
                    .kafka_acked
                    .get_or_create(&one("aggregate", aggregate.to_owned()))
                    .inc();
            }
            METRICS.kafka_ack_duration.observe(took.as_secs_f64());
        }
        Err(()) => {
            METRICS.kafka_batch_failures.inc();
        }
    }
}

/// Whether the relay publishes (its `/health/ready`): set with every change of it.
pub fn kafka_relay_healthy(healthy: bool) {
    METRICS.kafka_healthy.set(i64::from(healthy));
}

// --- Webhooks (workers) ---

/// One delivery attempt: the receiver's status if it answered, whether it counted as
/// delivered, and how long it took.
pub fn webhook_attempt(status: Option<u16>, delivered: bool, took: Duration) {
    let outcome = match (status, delivered) {
        (_, true) => "delivered",
        (Some(410), _) => "gone",
        (Some(400..=499), _) => "http_4xx",
        (Some(500..=599), _) => "http_5xx",
        (Some(_), _) => "http_other",
        (None, _) => "error",
    };
    let labels = one("outcome", outcome);
    METRICS.webhook_attempts.get_or_create(&labels).inc();
    METRICS
        .webhook_duration
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
}

/// A delivery dropped without an attempt (its endpoint deleted or disabled).
pub fn webhook_skipped() {
    METRICS
        .webhook_attempts
        .get_or_create(&one("outcome", "skipped"))
        .inc();
}

// --- Images (api) ---

/// An upload processed: `rejection` is the problem code when it was refused.
pub fn image_processed(rejection: Option<&'static str>, took: Duration) {
    METRICS
        .image_processing
        .get_or_create(&one(
            "outcome",
            if rejection.is_some() {
                "rejected"
            } else {
                "accepted"
            },
        ))
        .observe(took.as_secs_f64());
    if let Some(code) = rejection {
        image_rejected(code);
    }
}

/// An upload refused after processing (moderation), by code.
pub fn image_rejected(code: &'static str) {
    METRICS
        .image_rejections
        .get_or_create(&one("code", code))
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_with_their_total_suffix_and_labels() {
        command("Video", CommandOutcome::Conflict, Duration::from_millis(3));
        let text = encode();
        assert!(
            text.contains("framegate_commands_total{aggregate=\"Video\",outcome=\"conflict\"}"),
            "{text}"
        );
        assert!(text.contains("# TYPE framegate_command_duration_seconds histogram"));
    }

    #[test]
    fn unknown_methods_and_codes_become_other() {
        http_request("/v1/x", "BREW", 418, Duration::from_millis(1));
        provider_call("veo", "poll", "made-up", Duration::from_millis(1));
        let text = encode();
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(!text.contains("BREW"));
        assert!(!text.contains("made-up"));
        assert!(text.contains("outcome=\"other\""));
    }

    #[test]
    fn a_capture_counts_its_captured_and_released_parts() {
        let before = |movement: &'static str| {
            METRICS
                .credits
                .get_or_create(&one("movement", movement))
                .get()
        };
        let (captured, released) = (before("captured"), before("released"));
        let event = StoredEvent {
            global_position: 1,
            tx_id: 1,
            event_id: uuid::Uuid::nil(),
            recorded_at: chrono::Utc::now(),
            aggregate_type: "CreditAccount".into(),
            aggregate_id: "a".into(),
            sequence: 1,
            event_type: "ReservationCaptured".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"ReservationCaptured": {
                "video_id": "v", "reserved": 80, "captured": 60, "released": 20}}),
            metadata: serde_json::json!({}),
        };
        committed(&[event]);
        assert_eq!(before("captured") - captured, 60);
        assert_eq!(before("released") - released, 20);
    }
}

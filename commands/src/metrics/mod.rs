//! Prometheus metrics: every metric's name, help and labels, the process's one registry, and
//! the text exposition served at `GET /metrics` (docs/adr/0035-metrics.md).
//!
//! One place on purpose: adding a metric means adding a family to [`Metrics`], a line to its
//! `register`, and a recording function in `record`; the crates above (projections, workers, api, the binary) call those
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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

mod record;
pub use record::*;

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

    /// Names and helps, in the order of the README's list. The encoder adds the prefix
    /// `framegate_` and the `_total` of counters.
    fn register(mut self) -> Self {
        // One line per metric: field, name, help.
        macro_rules! register {
            ($this:ident; $($field:ident: $name:literal, $help:literal;)*) => {$(
                add(&mut $this.registry, &mut $this.names, $name, $help, $this.$field.clone());
            )*};
        }
        register! { self;
            build_info: "build_info", "Always 1; the running version in its label";
            http_requests: "http_request_duration_seconds", "HTTP requests by route template, method and status, until the response head";
            http_in_flight: "http_requests_in_flight", "HTTP requests being handled";
            commands: "commands", "Commands executed, by aggregate type and outcome (ok, rejected, conflict, error)";
            command_duration: "command_duration_seconds", "Time to decide and store a command, conflict retries included";
            command_conflicts: "command_conflicts", "Optimistic-concurrency conflicts met by commands, by aggregate type";
            command_retries: "command_retries", "Commands decided again after a conflict, by aggregate type";
            events_appended: "events_appended", "Events committed by this process, by aggregate and event type";
            credits: "credits", "Credits moved by events this process committed, by movement";
            jobs_finished: "jobs_finished", "Videos that reached a final status in events this process committed";
            jobs_in_flight: "jobs_in_flight", "Videos not yet final, by status (from the videos read model at scrape time)";
            job_duration: "job_duration_seconds", "From request to final status, by status, for final events this process committed";
            job_queue_wait: "job_queue_wait_seconds", "From request to the first submission to a provider, by provider";
            subscription_handled: "subscription_events_handled", "Events handled by this process's subscriptions";
            subscription_parked: "subscription_events_parked", "Events this process's subscriptions parked as never handleable";
            subscription_retries: "subscription_retries", "Batches tried again, by subscription and reason (transient, failing)";
            subscription_batch: "subscription_batch_duration_seconds", "Time to handle one batch and move the checkpoint";
            subscription_position: "subscription_position", "Global position of each subscription's checkpoint (store-wide, at scrape time)";
            subscription_lag_events: "subscription_lag_events", "Committed events after each subscription's checkpoint (store-wide, at scrape time)";
            subscription_lag_seconds: "subscription_lag_seconds", "Age of the oldest event a subscription has not handled yet, 0 when caught up";
            subscription_parked_now: "subscription_parked", "Events parked and not yet resolved, by subscription (store-wide, at scrape time)";
            subscription_stopped: "subscription_stopped", "1 while a subscription is stopped at a parked event";
            store_scrape_ok: "store_scrape_ok", "1 if the store-wide figures of this scrape could be read from Postgres";
            provider_calls: "provider_calls", "Calls to video providers by provider, operation and outcome (ok or failure code)";
            provider_call_duration: "provider_call_duration_seconds", "Latency of calls to video providers";
            provider_circuit_open: "provider_circuit_open", "1 while a provider's circuit breaker is open (store-wide, at scrape time)";
            kafka_produced: "kafka_messages_produced", "Events handed to the Kafka producer, by aggregate type";
            kafka_acked: "kafka_messages_acked", "Events the Kafka broker acknowledged, by aggregate type";
            kafka_batch_failures: "kafka_batch_failures", "Relay batches the broker did not acknowledge (sent again)";
            kafka_ack_duration: "kafka_ack_duration_seconds", "From sending a relay batch to the broker's last acknowledgement";
            kafka_healthy: "kafka_relay_healthy", "1 while the relay publishes (its readiness), 0 while the broker is away or refusing";
            webhook_attempts: "webhook_attempts", "Webhook delivery attempts by outcome";
            webhook_duration: "webhook_attempt_duration_seconds", "Latency of webhook delivery attempts, by outcome";
            image_processing: "image_processing_seconds", "Time to check, decode and thumbnail an upload, by outcome";
            image_rejections: "image_rejections", "Uploads refused, by problem code";
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stored::StoredEvent;

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

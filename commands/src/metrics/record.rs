//! The recording functions, one per thing measured, grouped by the crate that calls them.
//! Each turns what happened into bounded labels (see the parent module) and moves its series.

use std::borrow::Cow;
use std::time::Duration;

use super::{
    bounded, one, AggregateLabels, CallLabels, CommandLabels, EventLabels, HttpLabels, Label,
    OperationLabels, RetryLabels, METRICS,
};
use crate::stored::StoredEvent;

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

/// Deliveries dropped without an attempt (their endpoint deleted or disabled).
pub fn webhook_skipped(deliveries: u64) {
    METRICS
        .webhook_attempts
        .get_or_create(&one("outcome", "skipped"))
        .inc_by(deliveries);
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

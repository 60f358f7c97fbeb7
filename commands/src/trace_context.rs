//! The W3C trace context (`traceparent`, `tracestate`) that ties everything one request sets
//! in motion into one OpenTelemetry trace (docs/adr/0037-traces.md).
//!
//! A command's metadata takes the context of the span it is issued in ([`TraceContext::current`]),
//! so each event row keeps it in `events.metadata`; whoever later acts on the event (a
//! projector, a process manager, the Kafka relay and its consumers, the webhook sender) makes
//! its own span a child of that stored context ([`TraceContext::adopt`]) and passes it on in a
//! `traceparent` header where it calls out. This module only reads and writes contexts: the
//! spans become OpenTelemetry spans, and are exported, only when the binary installed the
//! OpenTelemetry layer (`src/telemetry`); without it every function here finds no context and
//! events carry none, exactly as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C header (and metadata key) naming the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header (and metadata key) carrying vendor state along with it.
pub const TRACESTATE: &str = "tracestate";

/// Set once the process exports spans; see [`exporting`].
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Records that this process exports spans (the binary's telemetry set-up calls it once).
pub fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether this process exports spans. Work done only to place a span in its trace (reading a
/// stored context back from the database) is skipped when it does not.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// One span's context in its W3C text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`, checked well-formed.
    pub traceparent: String,
    /// Vendor state, when there is some.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of the current span, if it belongs to a trace: `None` without the
    /// OpenTelemetry layer, and outside any span.
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current())
    }

    /// The context of `span`, if it belongs to a trace. Starts `span`'s OpenTelemetry span:
    /// give it its parent ([`Self::adopt`]) first.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        Self::from_carrier(carrier)
    }

    /// A context received as text (headers, metadata), if its `traceparent` is well-formed;
    /// a malformed `tracestate` is dropped, as the W3C specification asks.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
        if let Some(state) = tracestate {
            carrier.insert(TRACESTATE.to_owned(), state.to_owned());
        }
        let context = TraceContextPropagator::new().extract(&carrier);
        if !context.span().span_context().is_valid() {
            return None;
        }
        // Written back in canonical form: what is stored or sent on is what was checked.
        let mut canonical = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut canonical);
        Self::from_carrier(canonical)
    }

    /// The context stored in an event's metadata, if the event has one (events recorded
    /// before traces, or without tracing on, have none).
    pub fn from_metadata(metadata: &serde_json::Value) -> Option<Self> {
        let traceparent = metadata.get(TRACEPARENT)?.as_str()?;
        let tracestate = metadata.get(TRACESTATE).and_then(serde_json::Value::as_str);
        Self::parse(traceparent, tracestate)
    }

    fn from_carrier(mut carrier: HashMap<String, String>) -> Option<Self> {
        let traceparent = carrier.remove(TRACEPARENT)?;
        let tracestate = carrier.remove(TRACESTATE).filter(|state| !state.is_empty());
        Some(Self {
            traceparent,
            tracestate,
        })
    }

    /// The trace id: 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        self.traceparent.split('-').nth(1).unwrap_or_default()
    }

    /// The id of the span this context names: 16 lowercase hex digits.
    pub fn span_id(&self) -> &str {
        self.traceparent.split('-').nth(2).unwrap_or_default()
    }

    fn otel_context(&self) -> opentelemetry::Context {
        let mut carrier = HashMap::from([(TRACEPARENT.to_owned(), self.traceparent.clone())]);
        if let Some(state) = &self.tracestate {
            carrier.insert(TRACESTATE.to_owned(), state.clone());
        }
        TraceContextPropagator::new().extract(&carrier)
    }

    /// Makes `span` a child of this context, continuing its trace. Call it right after
    /// creating `span`, before it is entered; without the OpenTelemetry layer it does nothing.
    pub fn adopt(&self, span: &tracing::Span) {
        // Fails only without the layer or once the span started: nothing to do then.
        let _ = span.set_parent(self.otel_context());
    }

    /// Links `span` to this context: for a span that handles many events of many traces
    /// at once (a batch), which can be the child of none of them.
    pub fn link(&self, span: &tracing::Span) {
        span.add_link(self.otel_context().span().span_context().clone());
    }

    /// The headers that pass this context on: `traceparent`, and `tracestate` if any.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|state| (TRACESTATE, state)))
    }

    /// Adds this context to an event metadata map.
    pub fn insert_into(&self, map: &mut HashMap<String, String>) {
        for (name, value) in self.headers() {
            map.insert(name.to_owned(), value.to_owned());
        }
    }
}

/// Gives `span` the stored context as its parent when there is one, and records the trace id
/// in its `trace_id` field (if it declares one) so log lines inside it name their trace.
/// Returns `span` for chaining.
pub fn continued(span: tracing::Span, parent: Option<&TraceContext>) -> tracing::Span {
    if let Some(parent) = parent {
        parent.adopt(&span);
    }
    record_trace_id(&span);
    span
}

/// Records `span`'s trace id in its `trace_id` field, when the span belongs to a trace and
/// declares the field (`trace_id = tracing::field::Empty`). Starts the span's OpenTelemetry
/// span: give it its parent first.
pub fn record_trace_id(span: &tracing::Span) {
    if span.is_disabled() || !exporting() {
        return;
    }
    if let Some(context) = TraceContext::of(span) {
        span.record("trace_id", context.trace_id());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::metadata::{Actor, CommandMetadata};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_is_kept_with_its_state() {
        let context = TraceContext::parse(PARENT, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(context.traceparent, PARENT);
        assert_eq!(context.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id(), "00f067aa0ba902b7");
        let headers: Vec<_> = context.headers().collect();
        assert_eq!(
            headers,
            [(TRACEPARENT, PARENT), (TRACESTATE, "congo=t61rcWkgMzE")]
        );
    }

    #[test]
    fn malformed_or_empty_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn metadata_without_a_context_has_none() {
        assert_eq!(
            TraceContext::from_metadata(&serde_json::json!({"actor": "system"})),
            None
        );
        let stored = serde_json::json!({"actor": "system", "traceparent": PARENT});
        let context = TraceContext::from_metadata(&stored).expect("stored context");
        assert_eq!(context.traceparent, PARENT);
        assert_eq!(context.tracestate, None);
    }

    /// A subscriber with logs only, as the binary installs without an OTLP endpoint.
    fn logs_only() -> tracing::Dispatch {
        tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink)),
        )
    }

    /// A subscriber with the OpenTelemetry layer over a provider that exports nowhere.
    fn traced() -> (tracing::Dispatch, SdkTracerProvider) {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        (
            tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
            provider,
        )
    }

    /// Log output kept for a test to read.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut kept = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            kept.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_inside_a_continued_span_name_its_trace() {
        // What the binary's set-up records once it installed the exporter.
        set_exporting();
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(move || writer.clone()),
                ),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            let parent = TraceContext::parse(PARENT, None).expect("valid");
            let span = continued(
                tracing::info_span!("request", trace_id = tracing::field::Empty),
                Some(&parent),
            );
            span.in_scope(|| tracing::info!("inside the request"));
        });
        let lines = captured
            .0
            .lock()
            .map(|kept| kept.clone())
            .unwrap_or_default();
        let text = String::from_utf8(lines).expect("utf-8");
        let line = text
            .lines()
            .find(|line| line.contains("inside the request"))
            .unwrap_or_else(|| panic!("no log line in {text}"));
        assert!(
            line.contains(r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#),
            "{line}"
        );
    }

    #[test]
    fn without_the_opentelemetry_layer_commands_carry_no_context() {
        tracing::dispatcher::with_default(&logs_only(), || {
            let parent = TraceContext::parse(PARENT, None).expect("valid");
            let span = continued(
                tracing::info_span!("request", trace_id = tracing::field::Empty),
                Some(&parent),
            );
            let meta = span.in_scope(|| CommandMetadata::new_request(Actor::System));
            assert_eq!(meta.trace, None);
            assert!(!meta.to_map().contains_key(TRACEPARENT));
            assert_eq!(span.in_scope(TraceContext::current), None);
        });
    }

    #[test]
    fn a_command_issued_in_a_continued_span_carries_that_spans_context() {
        let (dispatch, _provider) = traced();
        tracing::dispatcher::with_default(&dispatch, || {
            let parent = TraceContext::parse(PARENT, Some("vendor=x")).expect("valid");
            let span = continued(tracing::info_span!("handling"), Some(&parent));
            let meta = span.in_scope(|| {
                CommandMetadata::caused_by_event(
                    Actor::System,
                    uuid::Uuid::nil(),
                    uuid::Uuid::nil(),
                )
            });
            let trace = meta.trace.clone().expect("a traced span");
            // Same trace, the handling span's own id, the caller's vendor state kept.
            assert_eq!(trace.trace_id(), parent.trace_id());
            assert_ne!(trace.span_id(), parent.span_id());
            assert_eq!(trace.tracestate.as_deref(), Some("vendor=x"));
            assert_eq!(meta.to_map()[TRACEPARENT], trace.traceparent);
            // A span with no stored context to continue starts a trace of its own.
            let fresh = continued(tracing::info_span!("fresh"), None);
            let own = fresh.in_scope(TraceContext::current).expect("traced");
            assert_ne!(own.trace_id(), parent.trace_id());
        });
    }
}

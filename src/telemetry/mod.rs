//! Logs and traces: the process's `tracing` subscriber (docs/adr/0037-traces.md).
//!
//! Logs go to stderr as text or JSON (`FRAMEGATE_LOG`, `FRAMEGATE_LOG_FORMAT`), as always.
//! Traces are off unless an OTLP endpoint is configured the standard way
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); then the spans of
//! our crates also go, through `tracing-opentelemetry`, to a batch span processor that
//! exports them over OTLP/HTTP with protobuf bodies (`http`). The other standard variables
//! are honoured: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the resource),
//! `OTEL_TRACES_SAMPLER`/`_ARG` (the sampler), `OTEL_EXPORTER_OTLP_HEADERS` (and `_TRACES_`
//! variants), `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*` (batching) and `OTEL_SDK_DISABLED`.
//! Settings this build cannot honour (gRPC, JSON bodies, another exporter, an unknown
//! sampler) stop start-up with a message instead of being ignored. The batch is flushed when
//! the process stops ([`Telemetry::shutdown`]), so the spans of its last moments are sent.

mod http;

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// Where and how spans are exported; `None` from [`TraceSettings::from_lookup`] means traces
/// are off.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The full URL spans are posted to (`.../v1/traces`).
    pub endpoint: String,
    /// How long one export may take.
    pub timeout: Duration,
    /// `service.name`, unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one
    /// (the SDK reads those itself).
    pub default_service_name: Option<&'static str>,
}

/// The only protocol built in (compile time: no gRPC stack, no serde over the OTLP types).
const PROTOCOL: &str = "http/protobuf";

/// The sampler names of the OpenTelemetry specification the SDK implements.
const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

impl TraceSettings {
    /// Reads the standard `OTEL_*` variables through `get`. `Ok(None)`: traces are off (no
    /// endpoint, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        // Empty counts as unset, as the specification asks.
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                anyhow::bail!("OTEL_TRACES_EXPORTER={other}: only `otlp` (or `none`) is built in")
            }
        }
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            // The signal's own endpoint is used as given; the general one is a base.
            (Some(endpoint), _) => endpoint,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let url = reqwest::Url::parse(&endpoint)
            // Never the value: an endpoint may carry credentials (`user:token@`).
            .context(
                "the OTLP traces endpoint (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT) is not a URL",
            )?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "the OTLP traces endpoint (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT) is not an http(s) URL"
        );
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = get(name) {
                anyhow::ensure!(
                    protocol == PROTOCOL,
                    "{name}={protocol}: only {PROTOCOL} is built in (point it at the \
                     collector's OTLP/HTTP port, usually 4318)"
                );
            }
        }
        if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
            anyhow::ensure!(
                SAMPLERS.contains(&sampler.as_str()),
                "OTEL_TRACES_SAMPLER={sampler}: one of {}",
                SAMPLERS.join(", ")
            );
        }
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", v))
            .or_else(|| {
                get("OTEL_EXPORTER_OTLP_TIMEOUT").map(|v| ("OTEL_EXPORTER_OTLP_TIMEOUT", v))
            }) {
            Some((name, millis)) => Duration::from_millis(
                millis
                    .parse()
                    .with_context(|| format!("{name}={millis}: milliseconds"))?,
            ),
            None => Duration::from_secs(10),
        };
        let named = get("OTEL_SERVICE_NAME").is_some()
            || get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
                attributes
                    .split(',')
                    .any(|pair| pair.trim_start().starts_with("service.name="))
            });
        Ok(Some(Self {
            endpoint,
            timeout,
            default_service_name: (!named).then_some("framegate"),
        }))
    }

    fn provider(&self) -> anyhow::Result<SdkTracerProvider> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http::RuntimeClient::new(self.timeout)?)
            .with_endpoint(self.endpoint.clone())
            .with_timeout(self.timeout)
            .build()
            .context("cannot build the OTLP span exporter")?;
        let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ));
        if let Some(name) = self.default_service_name {
            resource = resource.with_service_name(name);
        }
        // No sampler given: the SDK's default reads OTEL_TRACES_SAMPLER (checked above).
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    }
}

/// Which spans and events go into traces: our crates' spans at `info` and above, except the
/// subscription loop's own (`LOOP_SPANS`: one lasts as long as the process, the other starts
/// every second with nothing to do); warnings and errors logged inside them become span
/// events. `FRAMEGATE_LOG` filters the logs only.
fn exported(metadata: &Metadata<'_>) -> bool {
    if metadata.is_span() {
        *metadata.level() <= Level::INFO
            && metadata.target().starts_with("framegate")
            && !framegate_projections::subscription::LOOP_SPANS.contains(&metadata.name())
    } else {
        *metadata.level() <= Level::WARN
    }
}

/// The installed subscriber's exporting half, to flush on the way out.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the process's subscriber: logs on stderr (JSON if `json_logs`) filtered by
    /// `FRAMEGATE_LOG`, and spans exported per `traces` (none when `None`). Call it inside
    /// the tokio runtime, once.
    pub fn init(json_logs: bool, traces: Option<&TraceSettings>) -> anyhow::Result<Self> {
        let filter =
            EnvFilter::try_from_env("FRAMEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let provider = traces.map(TraceSettings::provider).transpose()?;
        let spans = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("framegate"))
                .with_filter(filter_fn(exported))
        });
        // Logs on stderr: stdout carries command output (ids) for scripts. Span fields
        // (`trace_id` among them when traces are on) are part of every line.
        let logs = if json_logs {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .boxed()
        };
        tracing_subscriber::registry()
            .with(spans)
            .with(logs.with_filter(filter))
            .try_init()
            .context("cannot install the tracing subscriber")?;
        if provider.is_some() {
            framegate_commands::trace_context::set_exporting();
        }
        Ok(Self { provider })
    }

    /// Exports what the batch still holds and stops the exporter. The export runs on this
    /// runtime (see `http`), so the blocking wait for it runs beside it.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            // The subscriber is still installed: this is logged like anything else.
            Ok(Err(error)) => tracing::warn!(%error, "could not flush the last spans"),
            Err(error) => tracing::warn!(%error, "could not flush the last spans"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<TraceSettings>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        TraceSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn without_an_otlp_endpoint_traces_are_off() {
        assert_eq!(settings(&[]).expect("valid"), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).expect("valid"),
            None
        );
        assert_eq!(
            settings(&[
                ("OTEL_SERVICE_NAME", "api"),
                ("OTEL_TRACES_SAMPLER", "always_on")
            ])
            .expect("valid"),
            None
        );
    }

    #[test]
    fn disabling_the_sdk_or_the_exporter_turns_traces_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).expect("valid"),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).expect("valid"),
            None
        );
    }

    #[test]
    fn the_general_endpoint_is_a_base_and_the_traces_endpoint_is_used_as_given() {
        let general = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .expect("valid")
            .expect("on");
        assert_eq!(general.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(general.timeout, Duration::from_secs(10));
        assert_eq!(general.default_service_name, Some("framegate"));
        let specific = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://traces.example/in",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "framegate-api"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(specific.endpoint, "https://traces.example/in");
        assert_eq!(specific.timeout, Duration::from_millis(2500));
        assert_eq!(specific.default_service_name, None);
        let named_by_attributes = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=fg",
            ),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(named_by_attributes.default_service_name, None);
    }

    #[test]
    fn settings_this_build_cannot_honour_stop_start_up() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (name, value, says) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "http/json",
                "http/protobuf",
            ),
            ("OTEL_TRACES_EXPORTER", "zipkin", "otlp"),
            ("OTEL_TRACES_SAMPLER", "sometimes", "parentbased_always_on"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
        ] {
            let error = settings(&[endpoint, (name, value)]).expect_err(name);
            let message = format!("{error:#}");
            assert!(
                message.contains(name) && message.contains(says),
                "{message}"
            );
        }
        let error =
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).expect_err("not http");
        assert!(format!("{error:#}").contains("http(s)"), "{error:#}");
        assert!(
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
                .expect("valid")
                .is_some()
        );
    }

    #[test]
    fn only_our_spans_outside_the_subscription_loop_are_exported() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;

        struct Site;
        impl tracing::callsite::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static SITE: Site = Site;
        let span = |target: &'static str, name: &'static str, level: Level| {
            Metadata::new(
                name,
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::SPAN,
            )
        };
        let event = |level: Level| {
            Metadata::new(
                "event",
                "framegate_workers::pipeline",
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                Kind::EVENT,
            )
        };
        let batch = span(
            "framegate_projections::subscription",
            "subscription.batch",
            Level::INFO,
        );
        assert!(exported(&batch));
        assert!(exported(&span("framegate_api", "request", Level::INFO)));
        for name in ["subscription.run", "subscription.poll"] {
            assert!(!exported(&span(
                "framegate_projections::subscription",
                name,
                Level::INFO
            )));
        }
        assert!(!exported(&span("framegate_api", "detail", Level::DEBUG)));
        assert!(!exported(&span("hyper::client", "connect", Level::INFO)));
        assert!(exported(&event(Level::WARN)));
        assert!(!exported(&event(Level::INFO)));
    }
}

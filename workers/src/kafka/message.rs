//! A stored event as a Kafka message: the contract of docs/events/README.md.
//!
//! Key = aggregate id, value = the redacted event JSON in its stored (externally tagged) form,
//! CloudEvents 1.0 binary-mode headers plus Framegate's extensions and the W3C `traceparent`
//! (and `tracestate`) of events recorded with traces on. Building the message is
//! pure, so the contract is tested without a broker, and a redelivery carries exactly the
//! same bytes as the first delivery.

use chrono::SecondsFormat;
use std::borrow::Cow;

use framegate_domain::{redact_payload, versions};
use framegate_projections::StoredEvent;

use super::config::snake_case;

/// What the relay sends for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl OutgoingMessage {
    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The `ce_type` of an event: `framegate.video.VideoRequested`.
pub fn ce_type(aggregate_type: &str, event_type: &str) -> String {
    format!("framegate.{}.{event_type}", snake_case(aggregate_type))
}

/// The `ce_dataschema` of an event version: its JSON Schema's path in the repository's
/// docs/events/ folder (`video/VideoRequested.v2.0.schema.json`), relative so that a mirror of
/// the docs serves the same names.
pub fn dataschema(aggregate_type: &str, event_type: &str, version: &str) -> String {
    format!(
        "docs/events/{}/{event_type}.v{version}.schema.json",
        snake_case(aggregate_type)
    )
}

/// Builds the message for `event`, to go to `topic` with `ce_source` = `source`.
pub fn to_message(event: &StoredEvent, topic: String, source: &str) -> OutgoingMessage {
    // Consumers get the current version of every event (`ce_schemaversion`, `ce_dataschema`),
    // whatever version the row was written in. A row the chain cannot upcast (a version this
    // build does not know) goes out as stored, under its stored version, so the headers never
    // claim a schema the value does not follow; the projectors stop on the same row.
    let (payload, version) =
        match versions::upcast(&event.event_type, &event.event_version, &event.payload) {
            Ok((payload, version)) => (payload, version.to_owned()),
            Err(error) => {
                tracing::warn!(%error, event_id = %event.event_id, "relaying an event as stored");
                (Cow::Borrowed(&event.payload), event.event_version.clone())
            }
        };
    let payload = redact_payload(&event.aggregate_type, &event.event_type, &payload);
    let dataschema = dataschema(&event.aggregate_type, &event.event_type, &version);
    // Serializing a `Value` cannot fail: its map keys are strings.
    let value = serde_json::to_vec(&payload).unwrap_or_default();
    let mut headers = vec![
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", event.event_id.to_string()),
        ("ce_type", ce_type(&event.aggregate_type, &event.event_type)),
        ("ce_source", source.to_owned()),
        ("ce_subject", event.aggregate_id.clone()),
        (
            "ce_time",
            event
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
        ("content-type", "application/json".to_owned()),
        ("ce_aggregatetype", event.aggregate_type.clone()),
        ("ce_sequence", event.sequence.to_string()),
        ("ce_globalposition", event.global_position.to_string()),
        ("ce_dataschema", dataschema),
        ("ce_schemaversion", version),
    ];
    if let Some(correlation) = event.meta("correlation_id") {
        headers.push(("ce_correlationid", correlation.to_owned()));
    }
    if let Some(causation) = event.meta("causation_id") {
        headers.push(("ce_causationid", causation.to_owned()));
    }
    // The trace of the command that recorded it (W3C Trace Context over Kafka, as
    // OpenTelemetry's messaging instrumentations carry it): consumers continue it.
    if let Some(trace) = event.trace_context() {
        for (name, value) in trace.headers() {
            headers.push((name, value.to_owned()));
        }
    }
    OutgoingMessage {
        topic,
        key: event.aggregate_id.clone(),
        value,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn registered() -> StoredEvent {
        StoredEvent {
            global_position: 42,
            tx_id: 900,
            event_id: Uuid::parse_str("0193a3f0-0000-7000-8000-000000000001").expect("uuid"),
            recorded_at: Utc
                .with_ymd_and_hms(2026, 11, 25, 9, 30, 0)
                .single()
                .expect("time"),
            aggregate_type: "User".into(),
            aggregate_id: "0193a3f0-0000-7000-8000-0000000000aa".into(),
            sequence: 1,
            event_type: "UserRegistered".into(),
            event_version: "1.0".into(),
            payload: json!({"UserRegistered": {
                "email": "ada@example.com",
                "password_hash": "$argon2id$v=19$secret",
                "verification_token_hash": "abcdef",
            }}),
            metadata: json!({
                "actor": "system",
                "correlation_id": "0193a3f0-0000-7000-8000-0000000000cc",
                "causation_id": "request:0193a3f0-0000-7000-8000-0000000000cc",
            }),
        }
    }

    #[test]
    fn the_message_carries_the_cloudevents_and_framegate_headers() {
        let event = registered();
        let message = to_message(&event, "framegate.user.events".into(), "urn:framegate");
        assert_eq!(message.key, event.aggregate_id);
        assert_eq!(message.header("ce_specversion"), Some("1.0"));
        assert_eq!(
            message.header("ce_id"),
            Some(event.event_id.to_string().as_str())
        );
        assert_eq!(
            message.header("ce_type"),
            Some("framegate.user.UserRegistered")
        );
        assert_eq!(
            message.header("ce_subject"),
            Some(event.aggregate_id.as_str())
        );
        assert_eq!(
            message.header("ce_time"),
            Some("2026-11-25T09:30:00.000000Z")
        );
        assert_eq!(message.header("content-type"), Some("application/json"));
        assert_eq!(message.header("ce_sequence"), Some("1"));
        assert_eq!(message.header("ce_globalposition"), Some("42"));
        assert_eq!(message.header("ce_schemaversion"), Some("1.0"));
        assert_eq!(
            message.header("ce_dataschema"),
            Some("docs/events/user/UserRegistered.v1.0.schema.json")
        );
        assert_eq!(
            message.header("ce_causationid"),
            Some("request:0193a3f0-0000-7000-8000-0000000000cc")
        );
    }

    #[test]
    fn an_event_stored_in_an_old_version_goes_out_in_the_current_one() {
        let mut event = registered();
        event.aggregate_type = "Video".into();
        event.event_type = "VideoRequested".into();
        // `VideoRequested` 1.0 as stored before 2.0: no `generate_audio`.
        event.payload = json!({"VideoRequested": {
            "video_id": "0193a3f0-0000-7000-8000-0000000000bb",
            "spec": {"owner": "0193a3f0-0000-7000-8000-0000000000aa", "prompt": "a kite",
                     "negative_prompt": null, "provider": "auto", "model": "simulator-v1",
                     "duration_seconds": 4, "aspect_ratio": "16:9", "resolution": "480p",
                     "image_id": null, "seed": null, "estimated_cost": 4, "external_id": null}}});
        let message = to_message(&event, "framegate.video.events".into(), "urn:framegate");
        assert_eq!(message.header("ce_schemaversion"), Some("2.0"));
        let schema = message.header("ce_dataschema").expect("ce_dataschema");
        assert_eq!(schema, "docs/events/video/VideoRequested.v2.0.schema.json");
        let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(repository.join(schema).is_file(), "{schema} is published");
        let value: serde_json::Value = serde_json::from_slice(&message.value).expect("json");
        assert_eq!(value["VideoRequested"]["spec"]["generate_audio"], false);
        assert_eq!(value["VideoRequested"]["spec"]["prompt"], "a kite");
    }

    #[test]
    fn a_version_this_build_does_not_know_goes_out_as_stored_under_its_own_version() {
        let mut event = registered();
        event.event_version = "9.0".into();
        let message = to_message(&event, "t".into(), "s");
        assert_eq!(message.header("ce_schemaversion"), Some("9.0"));
        assert_eq!(
            message.header("ce_dataschema"),
            Some("docs/events/user/UserRegistered.v9.0.schema.json")
        );
    }

    #[test]
    fn secrets_are_redacted_from_the_value() {
        let message = to_message(&registered(), "t".into(), "s");
        let value: serde_json::Value = serde_json::from_slice(&message.value).expect("json");
        let body = &value["UserRegistered"];
        assert_eq!(body["email"], "ada@example.com");
        assert_eq!(body["password_hash"], framegate_domain::REDACTED);
        assert_eq!(body["verification_token_hash"], framegate_domain::REDACTED);
        let text = String::from_utf8(message.value).expect("utf-8");
        assert!(!text.contains("argon2id"), "{text}");
    }

    #[test]
    fn missing_correlation_and_causation_leave_their_headers_out() {
        let mut event = registered();
        event.metadata = json!({});
        let message = to_message(&event, "t".into(), "s");
        assert_eq!(message.header("ce_correlationid"), None);
        assert_eq!(message.header("ce_causationid"), None);
    }

    #[test]
    fn the_stored_trace_context_goes_out_as_w3c_headers() {
        let mut event = registered();
        event.metadata["traceparent"] =
            json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        event.metadata["tracestate"] = json!("vendor=x");
        let message = to_message(&event, "t".into(), "s");
        assert_eq!(
            message.header("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(message.header("tracestate"), Some("vendor=x"));
    }

    #[test]
    fn events_without_a_usable_trace_context_send_no_trace_headers() {
        let message = to_message(&registered(), "t".into(), "s");
        assert_eq!(message.header("traceparent"), None);
        let mut event = registered();
        event.metadata["traceparent"] = json!("not a traceparent");
        let message = to_message(&event, "t".into(), "s");
        assert_eq!(message.header("traceparent"), None);
        assert_eq!(message.header("tracestate"), None);
    }
}

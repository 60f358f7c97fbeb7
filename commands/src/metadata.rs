//! The metadata stored beside every event: who asked, on which request, and why.
//!
//! cqrs-es stores a `HashMap<String, String>` per command; we give it a typed shape so the
//! audit log, the Kafka headers and causation chains can rely on the same keys everywhere.
//! With traces on, it also carries the W3C trace context of the span the command was issued
//! in (`traceparent`, `tracestate`), so whoever acts on its events continues that trace
//! (`trace_context`).

use std::collections::HashMap;
use std::fmt;

use framegate_domain::UserId;
use uuid::Uuid;

use crate::trace_context::TraceContext;

/// Who caused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in user (or an API key of that user).
    User(UserId),
    /// The platform itself: workers, process managers, the command line.
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// The metadata of one command. `correlation_id` ties together everything one request set in
/// motion; `causation_id` names the request or event that directly caused this command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadata {
    pub actor: Actor,
    pub request_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The trace the command belongs to: the span it was issued in, taken when the metadata
    /// is made. `None` without traces (and then nothing is stored).
    pub trace: Option<TraceContext>,
}

impl CommandMetadata {
    /// Metadata for a command that starts a new chain (an HTTP request, a CLI call): the
    /// request is its own correlation and cause. In the trace of the current span, if any.
    pub fn new_request(actor: Actor) -> Self {
        let request_id = Uuid::now_v7();
        Self {
            actor,
            request_id,
            correlation_id: request_id,
            causation_id: format!("request:{request_id}"),
            client_ip: None,
            user_agent: None,
            trace: TraceContext::current(),
        }
    }

    /// Metadata for a command issued in reaction to a stored event: same correlation, caused
    /// by that event. In the trace of the current span, if any: the span handling the event,
    /// itself a child of the event's stored context.
    pub fn caused_by_event(actor: Actor, correlation_id: Uuid, event_id: Uuid) -> Self {
        Self {
            actor,
            request_id: Uuid::now_v7(),
            correlation_id,
            causation_id: format!("event:{event_id}"),
            client_ip: None,
            user_agent: None,
            trace: TraceContext::current(),
        }
    }

    pub fn with_client(mut self, client_ip: Option<String>, user_agent: Option<String>) -> Self {
        self.client_ip = client_ip;
        self.user_agent = user_agent;
        self
    }

    /// The map cqrs-es stores as the events' `metadata` column.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor".to_owned(), self.actor.to_string()),
            ("request_id".to_owned(), self.request_id.to_string()),
            ("correlation_id".to_owned(), self.correlation_id.to_string()),
            ("causation_id".to_owned(), self.causation_id.clone()),
        ]);
        if let Some(ip) = &self.client_ip {
            map.insert("client_ip".to_owned(), ip.clone());
        }
        if let Some(agent) = &self.user_agent {
            map.insert("user_agent".to_owned(), agent.clone());
        }
        if let Some(trace) = &self.trace {
            trace.insert_into(&mut map);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_request_is_its_own_correlation_and_cause() {
        let meta = CommandMetadata::new_request(Actor::System);
        let map = meta.to_map();
        assert_eq!(map["actor"], "system");
        assert_eq!(map["correlation_id"], meta.request_id.to_string());
        assert_eq!(map["causation_id"], format!("request:{}", meta.request_id));
        assert!(!map.contains_key("client_ip"));
        // No OpenTelemetry layer here (traces off): the metadata is what it always was.
        assert_eq!(meta.trace, None);
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["actor", "causation_id", "correlation_id", "request_id"]
        );
    }

    #[test]
    fn a_trace_context_is_stored_as_traceparent_and_tracestate() {
        let mut meta = CommandMetadata::new_request(Actor::System);
        meta.trace = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("vendor=x"),
        );
        let map = meta.to_map();
        assert_eq!(
            map["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(map["tracestate"], "vendor=x");
    }

    #[test]
    fn an_event_caused_command_keeps_the_correlation_and_names_the_event() {
        let correlation = Uuid::now_v7();
        let event = Uuid::now_v7();
        let user = UserId::from_uuid(Uuid::nil());
        let meta = CommandMetadata::caused_by_event(Actor::User(user), correlation, event)
            .with_client(Some("10.0.0.1".into()), None);
        let map = meta.to_map();
        assert_eq!(map["actor"], format!("user:{}", Uuid::nil()));
        assert_eq!(map["correlation_id"], correlation.to_string());
        assert_eq!(map["causation_id"], format!("event:{event}"));
        assert_eq!(map["client_ip"], "10.0.0.1");
        assert_ne!(meta.request_id, correlation);
    }
}

//! The `WebhookEndpoint` aggregate: one URL a user asked us to push events to, from its
//! creation through updates, secret rotations, disabling (by its owner, by a 410 Gone, by
//! days of failures) to deletion (issue 13, docs/adr/0030-webhook-endpoints.md).
//!
//! The signing secret itself never enters an event: the signer needs it in the clear, and
//! the log is kept forever and published to Kafka. Events record a fingerprint of each
//! secret (enough to tell which one signed what); the secrets live in their own table,
//! written in the transaction that records the event, and deleted with the endpoint.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{UserId, WebhookEndpointId};
use crate::services::Services;

/// URLs longer than this are refused (Stripe allows 2,048 characters).
pub const MAX_URL_CHARS: usize = 2048;
/// Descriptions longer than this are refused.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// The event types an endpoint can subscribe to, as they appear in a delivery's `type`.
pub const EVENT_TYPES: [&str; 8] = [
    "video.queued",
    "video.started",
    "video.progress",
    "video.completed",
    "video.failed",
    "video.cancelled",
    "credits.purchased",
    "credits.low",
];

/// What an endpoint created without `events` receives: every video event but progress,
/// which is chatty and opt-in.
pub const DEFAULT_EVENT_TYPES: [&str; 5] = [
    "video.queued",
    "video.started",
    "video.completed",
    "video.failed",
    "video.cancelled",
];

/// Why an endpoint stopped receiving deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// Its owner turned it off.
    Owner,
    /// It answered 410 Gone.
    Gone,
    /// Every delivery failed for days.
    Failing,
}

impl DisabledReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Owner => "owner",
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookCommand {
    Create {
        endpoint_id: WebhookEndpointId,
        owner: UserId,
        url: String,
        /// `None`: [`DEFAULT_EVENT_TYPES`].
        events: Option<Vec<String>>,
        description: Option<String>,
        secret_fingerprint: String,
    },
    /// Changes what is given; `None` leaves a field alone (`description: Some(None)` clears it).
    Update {
        by: UserId,
        url: Option<String>,
        events: Option<Vec<String>>,
        description: Option<Option<String>>,
        enabled: Option<bool>,
    },
    RotateSecret {
        by: UserId,
        secret_fingerprint: String,
        /// Until when the previous secret keeps signing (Unix seconds).
        previous_expires_at: i64,
    },
    /// The delivery side turns an endpoint off (410 Gone, or failing for days).
    Disable {
        reason: DisabledReason,
        detail: String,
    },
    Delete {
        by: UserId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WebhookEvent {
    WebhookEndpointCreated {
        endpoint_id: WebhookEndpointId,
        owner: UserId,
        url: String,
        events: Vec<String>,
        description: Option<String>,
        /// The first 16 hex digits of the SHA-256 of the secret (never the secret).
        secret_fingerprint: String,
    },
    /// The endpoint's settings after the change, in full.
    WebhookEndpointUpdated {
        url: String,
        events: Vec<String>,
        description: Option<String>,
    },
    WebhookEndpointSecretRotated {
        secret_fingerprint: String,
        previous_expires_at: i64,
    },
    WebhookEndpointDisabled {
        reason: DisabledReason,
        detail: String,
    },
    WebhookEndpointEnabled {},
    WebhookEndpointDeleted {},
}

impl DomainEvent for WebhookEvent {
    fn event_type(&self) -> String {
        let name = match self {
            WebhookEvent::WebhookEndpointCreated { .. } => "WebhookEndpointCreated",
            WebhookEvent::WebhookEndpointUpdated { .. } => "WebhookEndpointUpdated",
            WebhookEvent::WebhookEndpointSecretRotated { .. } => "WebhookEndpointSecretRotated",
            WebhookEvent::WebhookEndpointDisabled { .. } => "WebhookEndpointDisabled",
            WebhookEvent::WebhookEndpointEnabled {} => "WebhookEndpointEnabled",
            WebhookEvent::WebhookEndpointDeleted {} => "WebhookEndpointDeleted",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::versions::current_version(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the URL must be an absolute http or https URL of at most {MAX_URL_CHARS} characters, without credentials or a fragment")]
    InvalidUrl,
    #[error("unknown event type {0:?}; known: {types}", types = EVENT_TYPES.join(", "))]
    UnknownEventType(String),
    #[error("an endpoint must subscribe to at least one event type")]
    NoEventTypes,
    #[error("the description must be at most {MAX_DESCRIPTION_CHARS} characters of plain text")]
    InvalidDescription,
    #[error("a secret fingerprint is 16 lowercase hex digits")]
    InvalidFingerprint,
    #[error("this webhook endpoint exists already")]
    AlreadyCreated,
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("the detail must be at most {MAX_DESCRIPTION_CHARS} characters of plain text")]
    InvalidDetail,
}

impl WebhookError {
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::InvalidUrl => "invalid_url",
            WebhookError::UnknownEventType(_) => "unknown_event_type",
            WebhookError::NoEventTypes => "no_event_types",
            WebhookError::InvalidDescription => "invalid_description",
            WebhookError::InvalidFingerprint => "invalid_fingerprint",
            WebhookError::AlreadyCreated => "already_exists",
            WebhookError::NotFound => "not_found",
            WebhookError::InvalidDetail => "invalid_detail",
        }
    }
}

/// An endpoint as its events left it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    endpoint_id: Option<WebhookEndpointId>,
    owner: Option<UserId>,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    disabled: Option<DisabledReason>,
    deleted: bool,
}

impl WebhookEndpoint {
    pub fn owner(&self) -> Option<UserId> {
        self.owner
    }

    /// Whether it exists and was not deleted.
    pub fn exists(&self) -> bool {
        self.owner.is_some() && !self.deleted
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn events(&self) -> &[String] {
        &self.events
    }

    pub fn disabled(&self) -> Option<DisabledReason> {
        self.disabled
    }

    /// The endpoint of `by`, or `NotFound` (someone else's endpoint does not exist for them).
    fn owned_by(&self, by: UserId) -> Result<(), WebhookError> {
        if self.exists() && self.owner == Some(by) {
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    fn decide(&self, command: WebhookCommand) -> Result<Vec<WebhookEvent>, WebhookError> {
        match command {
            WebhookCommand::Create {
                endpoint_id,
                owner,
                url,
                events,
                description,
                secret_fingerprint,
            } => {
                if self.owner.is_some() {
                    return Err(WebhookError::AlreadyCreated);
                }
                let events = match events {
                    Some(events) => normalize_event_types(events)?,
                    None => DEFAULT_EVENT_TYPES.map(str::to_owned).to_vec(),
                };
                Ok(vec![WebhookEvent::WebhookEndpointCreated {
                    endpoint_id,
                    owner,
                    url: validate_url(url)?,
                    events,
                    description: validate_description(description)?,
                    secret_fingerprint: validate_fingerprint(secret_fingerprint)?,
                }])
            }
            WebhookCommand::Update {
                by,
                url,
                events,
                description,
                enabled,
            } => {
                self.owned_by(by)?;
                let url = url.map(validate_url).transpose()?;
                let events = events.map(normalize_event_types).transpose()?;
                let description = description.map(validate_description).transpose()?;
                let mut changes = Vec::new();
                let settings = (
                    url.unwrap_or_else(|| self.url.clone()),
                    events.unwrap_or_else(|| self.events.clone()),
                    description.unwrap_or_else(|| self.description.clone()),
                );
                if (&settings.0, &settings.1, &settings.2)
                    != (&self.url, &self.events, &self.description)
                {
                    changes.push(WebhookEvent::WebhookEndpointUpdated {
                        url: settings.0,
                        events: settings.1,
                        description: settings.2,
                    });
                }
                match (enabled, self.disabled) {
                    (Some(true), Some(_)) => changes.push(WebhookEvent::WebhookEndpointEnabled {}),
                    (Some(false), None) => changes.push(WebhookEvent::WebhookEndpointDisabled {
                        reason: DisabledReason::Owner,
                        detail: "disabled by its owner".to_owned(),
                    }),
                    _ => {}
                }
                Ok(changes)
            }
            WebhookCommand::RotateSecret {
                by,
                secret_fingerprint,
                previous_expires_at,
            } => {
                self.owned_by(by)?;
                Ok(vec![WebhookEvent::WebhookEndpointSecretRotated {
                    secret_fingerprint: validate_fingerprint(secret_fingerprint)?,
                    previous_expires_at,
                }])
            }
            WebhookCommand::Disable { reason, detail } => {
                if !self.exists() {
                    return Err(WebhookError::NotFound);
                }
                if !is_plain_text(&detail, MAX_DESCRIPTION_CHARS) {
                    return Err(WebhookError::InvalidDetail);
                }
                // Disabling a disabled endpoint keeps the first reason.
                if self.disabled.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![WebhookEvent::WebhookEndpointDisabled {
                    reason,
                    detail,
                }])
            }
            WebhookCommand::Delete { by } => {
                self.owned_by(by)?;
                Ok(vec![WebhookEvent::WebhookEndpointDeleted {}])
            }
        }
    }
}

impl Aggregate for WebhookEndpoint {
    const TYPE: &'static str = "WebhookEndpoint";
    type Command = WebhookCommand;
    type Event = WebhookEvent;
    type Error = WebhookError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WebhookEvent::WebhookEndpointCreated {
                endpoint_id,
                owner,
                url,
                events,
                description,
                ..
            } => {
                self.endpoint_id = Some(endpoint_id);
                self.owner = Some(owner);
                self.url = url;
                self.events = events;
                self.description = description;
            }
            WebhookEvent::WebhookEndpointUpdated {
                url,
                events,
                description,
            } => {
                self.url = url;
                self.events = events;
                self.description = description;
            }
            WebhookEvent::WebhookEndpointSecretRotated { .. } => {}
            WebhookEvent::WebhookEndpointDisabled { reason, .. } => self.disabled = Some(reason),
            WebhookEvent::WebhookEndpointEnabled {} => self.disabled = None,
            WebhookEvent::WebhookEndpointDeleted {} => self.deleted = true,
        }
    }
}

/// Known, distinct, in the order of [`EVENT_TYPES`].
pub fn normalize_event_types(events: Vec<String>) -> Result<Vec<String>, WebhookError> {
    if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(WebhookError::UnknownEventType(unknown.clone()));
    }
    let normalized: Vec<String> = EVENT_TYPES
        .iter()
        .filter(|known| events.iter().any(|e| e == *known))
        .map(|known| (*known).to_owned())
        .collect();
    if normalized.is_empty() {
        return Err(WebhookError::NoEventTypes);
    }
    Ok(normalized)
}

/// An absolute http(s) URL with a host, no user info, no fragment, plain text. Whether its
/// address may be called is decided where it is resolved, at delivery.
pub fn validate_url(url: String) -> Result<String, WebhookError> {
    let url = url.trim().to_owned();
    if !is_plain_text(&url, MAX_URL_CHARS) || url.chars().any(char::is_whitespace) {
        return Err(WebhookError::InvalidUrl);
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(WebhookError::InvalidUrl)?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || url.contains('#') {
        return Err(WebhookError::InvalidUrl);
    }
    Ok(url)
}

fn validate_description(description: Option<String>) -> Result<Option<String>, WebhookError> {
    match description.map(|d| d.trim().to_owned()) {
        Some(d) if d.is_empty() => Ok(None),
        Some(d) if is_plain_text(&d, MAX_DESCRIPTION_CHARS) => Ok(Some(d)),
        Some(_) => Err(WebhookError::InvalidDescription),
        None => Ok(None),
    }
}

fn validate_fingerprint(fingerprint: String) -> Result<String, WebhookError> {
    let ok = fingerprint.len() == 16
        && fingerprint
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(fingerprint)
    } else {
        Err(WebhookError::InvalidFingerprint)
    }
}

fn is_plain_text(text: &str, max_chars: usize) -> bool {
    text.chars().count() <= max_chars && !text.chars().any(char::is_control)
}

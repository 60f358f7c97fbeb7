//! A request's own webhook (`webhook_url`, `webhook_events_filter`), as Replicate, fal and
//! Kling offer: checked like an endpoint's URL and event types, recorded in the request, and
//! signed with the owner's default secret (`GET /v1/webhooks/default/secret`).

use framegate_domain::webhook::{normalize_event_types, validate_url, DEFAULT_EVENT_TYPES};
use framegate_domain::VideoWebhook;

use super::VideoRequestBody;
use crate::error::FieldError;

/// The request's webhook, or why it is refused. Without a URL a filter is refused too.
pub fn parse(body: &VideoRequestBody) -> Result<Option<VideoWebhook>, Vec<FieldError>> {
    let Some(url) = body.webhook_url.clone() else {
        return match body.webhook_events_filter {
            Some(_) => Err(vec![FieldError::new(
                "webhook_events_filter",
                "requires_webhook_url",
                "a filter needs a webhook_url",
            )]),
            None => Ok(None),
        };
    };
    let mut errors = Vec::new();
    let url = validate_url(url)
        .map_err(|error| {
            errors.push(FieldError::new(
                "webhook_url",
                error.code(),
                error.to_string(),
            ))
        })
        .ok();
    let events = match body.webhook_events_filter.clone() {
        None => Some(DEFAULT_EVENT_TYPES.map(str::to_owned).to_vec()),
        Some(events) => match normalize_event_types(events) {
            Ok(events) if events.iter().all(|e| e.starts_with("video.")) => Some(events),
            Ok(_) => {
                errors.push(FieldError::new(
                    "webhook_events_filter",
                    "unknown_event_type",
                    "a video's webhook takes video.* event types only",
                ));
                None
            }
            Err(error) => {
                errors.push(FieldError::new(
                    "webhook_events_filter",
                    error.code(),
                    error.to_string(),
                ));
                None
            }
        },
    };
    match (url, events) {
        (Some(url), Some(events)) if errors.is_empty() => Ok(Some(VideoWebhook { url, events })),
        _ => Err(errors),
    }
}

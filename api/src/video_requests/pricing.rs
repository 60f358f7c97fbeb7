//! What a video request may ask for: the body, its validation against the chosen provider's
//! capabilities in the catalog (422 naming the allowed values), the price it is reserved at,
//! and whether its start image is the caller's.

use framegate_domain::catalog::{Quote, QuoteError, QuoteRequest};
use framegate_domain::routing;
use framegate_domain::{ImageId, ProviderKind, ProviderPreference};
use framegate_projections::read_models::images;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;

pub const MAX_PROMPT: usize = 4000;
/// The largest seed: the range every provider that takes one accepts (Veo's is 32 bits).
const MAX_SEED: u64 = u32::MAX as u64;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoRequestBody {
    pub prompt: String,
    pub negative_prompt: Option<String>,
    /// `auto`, `veo`, `sora`, `kling` or `simulator`.
    #[serde(default = "auto")]
    pub provider: String,
    pub model: Option<String>,
    pub duration_seconds: u32,
    /// `16:9`, `9:16` or `1:1` (per model).
    pub aspect_ratio: String,
    /// `480p`, `720p`, `1080p` or `4k` (per model).
    pub resolution: String,
    pub image_id: Option<Uuid>,
    /// 0 to 4294967295; Sora and Kling take none.
    pub seed: Option<u64>,
    /// Your own reference for this request.
    pub external_id: Option<String>,
    /// Where this video's webhook events also go (http or https), signed with your default
    /// secret (`GET /v1/webhooks/default/secret`).
    pub webhook_url: Option<String>,
    /// Which events go to `webhook_url` (`video.queued`, `video.started`, `video.progress`,
    /// `video.completed`, `video.failed`, `video.cancelled`); default: all but
    /// `video.progress`.
    pub webhook_events_filter: Option<Vec<String>>,
    /// Ask for a soundtrack (default false). Only providers that make audio take it (Veo,
    /// Sora); with `auto`, only they are considered. Otherwise 422 `audio_unsupported`.
    #[serde(default)]
    pub generate_audio: bool,
}

fn auto() -> String {
    "auto".to_owned()
}

fn quote_error(error: &QuoteError) -> ApiError {
    ApiError::Validation(vec![FieldError::new(
        error.field(),
        error.code(),
        error.to_string(),
    )])
}

/// Validates a request and prices it with the provider that will take it.
pub async fn price(
    state: &AppState,
    body: &VideoRequestBody,
) -> Result<(ProviderPreference, Quote), ApiError> {
    let mut errors = Vec::new();
    let prompt_length = body.prompt.chars().count();
    if body.prompt.trim().is_empty() {
        errors.push(FieldError::new("prompt", "required", "describe the video"));
    } else if prompt_length > MAX_PROMPT {
        errors.push(FieldError::new(
            "prompt",
            "too_long",
            format!("at most {MAX_PROMPT} characters"),
        ));
    }
    if body
        .negative_prompt
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_PROMPT)
    {
        errors.push(FieldError::new(
            "negative_prompt",
            "too_long",
            format!("at most {MAX_PROMPT} characters"),
        ));
    }
    if body.seed.is_some_and(|seed| seed > MAX_SEED) {
        errors.push(FieldError::new(
            "seed",
            "out_of_range",
            format!("seeds are 0 to {MAX_SEED}"),
        ));
    }
    if body
        .external_id
        .as_ref()
        .is_some_and(|e| e.is_empty() || e.len() > 255)
    {
        errors.push(FieldError::new(
            "external_id",
            "invalid_length",
            "1 to 255 characters",
        ));
    }
    if let Err(webhook_errors) = super::webhook::parse(body) {
        errors.extend(webhook_errors);
    }
    let preference: ProviderPreference = match body.provider.parse() {
        Ok(p) => p,
        Err(_) => {
            errors.push(FieldError::new(
                "provider",
                "unknown_provider",
                format!(
                    "unknown provider {:?}; allowed: auto, veo, sora, kling, simulator",
                    body.provider
                ),
            ));
            return Err(ApiError::Validation(errors));
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let request = QuoteRequest {
        provider: ProviderKind::Simulator,
        model: body.model.as_deref(),
        duration_seconds: body.duration_seconds,
        aspect_ratio: &body.aspect_ratio,
        resolution: &body.resolution,
        with_image: body.image_id.is_some(),
    };
    let catalog = &state.config.catalog;
    let enabled = &state.config.enabled_providers;
    let quote = match preference.pinned() {
        Some(provider) => {
            if !enabled.contains(&provider) {
                return Err(ApiError::field(
                    "provider",
                    "provider_not_configured",
                    format!(
                        "{provider} is not configured on this server; enabled: {}",
                        names(enabled)
                    ),
                ));
            }
            catalog
                .quote(&QuoteRequest {
                    provider,
                    ..request
                })
                .map_err(|e| quote_error(&e))?
        }
        None => {
            // Auto: the best healthy provider by the routing policy; if none is healthy,
            // the best of all (the dispatcher waits for it to recover).
            let mut ranked = routing::rank(catalog, &state.config.routing, enabled, &request)
                .map_err(|e| quote_error(&e))?;
            if body.generate_audio {
                ranked.retain(|quote| quote.provider.makes_audio());
                if ranked.is_empty() {
                    return Err(no_audio(enabled));
                }
            }
            let unhealthy = unhealthy_providers(state).await;
            let healthy = ranked
                .iter()
                .find(|q| !unhealthy.contains(&q.provider))
                .cloned();
            match healthy.or_else(|| ranked.into_iter().next()) {
                Some(quote) => quote,
                None => return Err(ApiError::Unavailable("every video provider".to_owned())),
            }
        }
    };
    if body.generate_audio && !quote.provider.makes_audio() {
        return Err(no_audio(&[quote.provider]));
    }
    Ok((preference, quote))
}

/// `generate_audio` asked of providers none of which makes audio.
fn no_audio(providers: &[ProviderKind]) -> ApiError {
    ApiError::field(
        "generate_audio",
        "audio_unsupported",
        format!(
            "{} cannot make audio; providers with audio: {}",
            names(providers),
            names(
                &ProviderKind::ALL
                    .into_iter()
                    .filter(|p| p.makes_audio())
                    .collect::<Vec<_>>()
            )
        ),
    )
}

/// Providers whose circuit breaker is open (see `framegate_workers::health`).
pub async fn unhealthy_providers(state: &AppState) -> Vec<ProviderKind> {
    let open: Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar("SELECT provider FROM provider_health WHERE open_until > now()")
            .fetch_all(&state.pool)
            .await;
    match open {
        Ok(names) => names.iter().filter_map(|n| n.parse().ok()).collect(),
        Err(error) => {
            tracing::warn!(%error, "could not read provider health");
            Vec::new()
        }
    }
}

fn names(providers: &[ProviderKind]) -> String {
    providers
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The caller's available image `id`; someone else's, a deleted or a rejected image is a 422
/// on `image_id` (indistinguishable from a missing one).
pub async fn usable_image(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<ImageId, ApiError> {
    match images::get(&state.pool, id).await? {
        Some(row) if row.owner_id == principal.user_id.as_uuid() && row.status == "available" => {
            Ok(ImageId::from_uuid(id))
        }
        _ => Err(ApiError::field(
            "image_id",
            "image_not_found",
            "no such image: upload it with POST /v1/images first",
        )),
    }
}

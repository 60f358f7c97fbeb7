//! Videos: request (reserving credits), estimate, read, list, cancel; and the provider list.
//!
//! A request is validated against the chosen provider's capabilities in the catalog (422
//! naming the allowed values), priced, and accepted only if the estimate can be reserved
//! (402 otherwise). Reads come from the `videos` read model and only show the caller's own.
//! What a request may ask for and what it costs is `crate::video_requests`; how a video is
//! shown is `response`; a video's event stream is `event_stream`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Json;
use framegate_commands::CommandError;
use framegate_domain::{
    ProviderKind, PublicStatus, VideoCommand, VideoError, VideoId, VideoSpec, VideoStatus,
};
use framegate_projections::read_models::{credits, videos, VideoRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{check_reason, metadata, page_limit, time_cursor, Page};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{from_json_slice, user_agent, ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::state::AppState;
use crate::video_requests::{self, price, unhealthy_providers, usable_image, webhook};

pub mod event_stream;
mod response;

pub use crate::video_requests::VideoRequestBody;
use response::{link, public_status, respond};
pub use response::{DownloadLink, Variant, VideoCancellation, VideoFailure, VideoResponse};

#[derive(Debug, Serialize, ToSchema)]
pub struct EstimateResponse {
    pub provider: String,
    pub model: String,
    pub duration_seconds: u32,
    pub credits_per_second: i64,
    pub cost: i64,
    /// Credits available to the caller now.
    pub available: i64,
}

/// Requests a video. Reserves the estimated cost; 402 when not enough credits are available.
#[utoipa::path(post, path = "/v1/videos", tag = "videos", request_body = VideoRequestBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first response for 24 h")),
    responses((status = 201, body = VideoResponse), (status = 402, description = "insufficient_credits"),
              (status = 422, description = "validation_failed (unsupported_duration, unknown_provider, ...)")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<VideoRequestBody>,
) -> Result<Response, ApiError> {
    let (preference, quote) = price(&state, &body).await?;
    let image_id = match body.image_id {
        None => None,
        Some(id) => Some(usable_image(&state, &principal, id).await?),
    };
    let webhook = webhook::parse(&body).map_err(ApiError::Validation)?;
    let video_id = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner: principal.user_id,
        prompt: body.prompt,
        negative_prompt: body.negative_prompt,
        provider: preference,
        model: Some(quote.model.clone()),
        duration_seconds: body.duration_seconds,
        aspect_ratio: body.aspect_ratio,
        resolution: body.resolution,
        image_id,
        seed: body.seed,
        estimated_cost: quote.cost,
        generate_audio: body.generate_audio,
        external_id: body.external_id,
        webhook,
    };
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    let render: video_requests::Render = |row| Ok(serde_json::to_vec(&VideoResponse::from(row))?);
    video_requests::submit(&state, video_id, spec, &meta, StatusCode::CREATED, render).await
}

/// Prices a request without creating anything.
#[utoipa::path(post, path = "/v1/videos/estimate", tag = "videos", request_body = VideoRequestBody,
    responses((status = 200, body = EstimateResponse), (status = 422, description = "validation_failed")),
    security(("bearer" = [])))]
pub async fn estimate(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<VideoRequestBody>,
) -> Result<Json<EstimateResponse>, ApiError> {
    let (_, quote) = price(&state, &body).await?;
    // The same answer as a request would get for the image.
    if let Some(id) = body.image_id {
        usable_image(&state, &principal, id).await?;
    }
    let account = credits::account(&state.pool, principal.user_id).await?;
    Ok(Json(EstimateResponse {
        provider: quote.provider.to_string(),
        model: quote.model,
        duration_seconds: body.duration_seconds,
        credits_per_second: quote.credits_per_second,
        cost: quote.cost.value(),
        available: account.available,
    }))
}

async fn own_video(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<VideoRow, ApiError> {
    match videos::get(&state.pool, VideoId::from_uuid(id)).await? {
        // Another user's video, or a deleted one, is indistinguishable from a missing one.
        Some(row) if row.owner_id == principal.user_id.as_uuid() && row.deleted_at.is_none() => {
            Ok(row)
        }
        _ => Err(ApiError::NotFound),
    }
}

/// One of the caller's videos.
#[utoipa::path(get, path = "/v1/videos/{id}", tag = "videos", params(("id" = Uuid, Path, description = "video id")),
    responses((status = 200, body = VideoResponse), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<VideoResponse>, ApiError> {
    let row = own_video(&state, &principal, id).await?;
    Ok(Json(respond(&state, row).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// `video` (default), `poster` or `thumbnail`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub variant: Variant,
}

/// Redirects (302) to a signed, expiring download link for a completed video's MP4, poster
/// or thumbnail.
#[utoipa::path(get, path = "/v1/videos/{id}/content", tag = "videos",
    params(("id" = Uuid, Path, description = "video id"), ContentQuery),
    responses((status = 302, description = "Location: the signed download link"),
              (status = 404, description = "not_found"),
              (status = 409, description = "video_not_ready: the video has not completed")),
    security(("bearer" = [])))]
pub async fn content(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ContentQuery>,
) -> Result<Response, ApiError> {
    let row = own_video(&state, &principal, id).await?;
    let Some(link) = link(&state, &row, query.variant).await? else {
        return Err(ApiError::Conflict {
            code: "video_not_ready",
            message: format!(
                "the video is {}; its content is available once it has completed",
                public_status(&row.status)
            ),
        });
    };
    let mut response = StatusCode::FOUND.into_response();
    let location = HeaderValue::from_str(&link.url).map_err(ApiError::internal)?;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// queued | submitted | running | completed | failed | cancelled
    pub status: Option<String>,
    pub provider: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

fn internal_statuses(status: &str) -> Result<Vec<&'static str>, ApiError> {
    let public = PublicStatus::parse(status).ok_or_else(|| {
        let allowed: Vec<&str> = PublicStatus::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::field(
            "status",
            "unknown_status",
            format!("unknown status {status:?}; allowed: {}", allowed.join(", ")),
        )
    })?;
    Ok(VideoStatus::names(&public.internal()))
}

/// The caller's videos, newest first.
#[utoipa::path(get, path = "/v1/videos", tag = "videos", params(ListQuery),
    responses((status = 200, body = Page<VideoResponse>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<VideoResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(provider) = &query.provider {
        provider.parse::<ProviderKind>().map_err(|_| {
            ApiError::field(
                "provider",
                "unknown_provider",
                "allowed: veo, sora, kling, simulator",
            )
        })?;
    }
    let before = query
        .cursor
        .as_deref()
        .map(super::decode_cursor)
        .transpose()?;
    // Public statuses map to one or more internal ones: fetch per internal status and merge.
    let statuses: Vec<Option<String>> = match &query.status {
        None => vec![None],
        Some(status) => internal_statuses(status)?
            .iter()
            .map(|s| Some((*s).to_owned()))
            .collect(),
    };
    let mut rows = Vec::new();
    for status in statuses {
        let filter = videos::VideoFilter {
            status,
            provider: query.provider.clone(),
            before,
        };
        rows.extend(videos::list(&state.pool, principal.user_id, &filter, limit + 1).await?);
    }
    rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    let page = Page::from_rows(rows, limit, |r| time_cursor(r.created_at, r.id), |r| r);
    let mut items = Vec::with_capacity(page.items.len());
    for row in page.items {
        items.push(respond(&state, row).await?);
    }
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: Option<String>,
}

/// Cancels a video that has not finished. A job not yet sent to a provider is cancelled at
/// once and its reservation released; one in flight is cancelled by the worker.
#[utoipa::path(post, path = "/v1/videos/{id}/cancel", tag = "videos", params(("id" = Uuid, Path, description = "video id")),
    request_body(content = CancelBody, description = "optional"),
    responses((status = 200, body = VideoResponse), (status = 404, description = "not_found"),
              (status = 409, description = "video_finished")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: an empty POST cancels without a reason.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        from_json_slice(&body)?
    };
    if let Some(reason) = &body.reason {
        check_reason("reason", reason)?;
    }
    // Ownership from the read model (the row appears with the request, inline); whether the
    // cancellation completes at once is the aggregate's decision, not the read model's.
    own_video(&state, &principal, id).await?;
    let reason = body
        .reason
        .unwrap_or_else(|| "cancelled by the owner".to_owned());
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    let aggregate = id.to_string();
    let finished = |e: CommandError<VideoError>| match e {
        CommandError::Domain(VideoError::AlreadyTerminal { .. }) => ApiError::Conflict {
            code: "video_finished",
            message: "this video has already finished".to_owned(),
        },
        CommandError::Domain(VideoError::AlreadyCancelRequested) => ApiError::Conflict {
            code: "cancel_already_requested",
            message: "cancellation is already under way".to_owned(),
        },
        other => other.into(),
    };
    state
        .store
        .videos()
        .execute(&aggregate, VideoCommand::RequestCancel { reason }, &meta)
        .await
        .map_err(finished)?;
    // The videos read model is written inline with the events: it shows the cancellation.
    let row = own_video(&state, &principal, id).await?;
    Ok(Json(respond(&state, row).await?).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    pub model: String,
    pub default: bool,
    pub durations: Vec<u32>,
    pub aspect_ratios: Vec<String>,
    pub resolutions: Vec<String>,
    pub image_input: bool,
    pub credits_per_second: i64,
    pub resolution_prices: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    pub provider: String,
    pub name: String,
    /// Whether this server can send jobs to it (configured).
    pub enabled: bool,
    /// healthy | unhealthy (circuit open after repeated upstream failures) | not_configured
    pub health: String,
    pub upstream_status: String,
    pub models: Vec<ModelInfo>,
}

/// Providers, their models, durations, sizes and per-second prices in credits.
#[utoipa::path(get, path = "/v1/providers", tag = "videos", responses((status = 200, body = [ProviderResponse])))]
pub async fn providers(State(state): State<AppState>) -> Json<Vec<ProviderResponse>> {
    let catalog = &state.config.catalog;
    let unhealthy = unhealthy_providers(&state).await;
    Json(
        catalog
            .providers
            .iter()
            .map(|info| {
                let enabled = state.config.enabled_providers.contains(&info.provider);
                ProviderResponse {
                    provider: info.provider.to_string(),
                    name: info.name.clone(),
                    enabled,
                    health: match (enabled, unhealthy.contains(&info.provider)) {
                        (false, _) => "not_configured",
                        (true, true) => "unhealthy",
                        (true, false) => "healthy",
                    }
                    .to_owned(),
                    upstream_status: info.upstream_status.clone(),
                    models: catalog
                        .models_of(info.provider)
                        .map(|m| ModelInfo {
                            model: m.model.clone(),
                            default: m.default,
                            durations: m.durations.clone(),
                            aspect_ratios: m.aspect_ratios.clone(),
                            resolutions: m.resolutions.clone(),
                            image_input: m.image_input,
                            credits_per_second: m.credits_per_second,
                            resolution_prices: m.resolution_prices.clone(),
                        })
                        .collect(),
                }
            })
            .collect(),
    )
}

//! `GET /videos/{id}`, `GET /videos` (cursor pages: `after`, `limit`, `order`) and
//! `DELETE /videos/{id}`: the caller's videos, from the `videos` read model, in OpenAI's
//! objects (their content is served by `content`). Someone else's video, a deleted one and an id
//! that is not ours all answer 404.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use framegate_commands::CommandError;
use framegate_domain::{VideoCommand, VideoError, VideoId};
use framegate_projections::read_models::{videos, VideoRow};
use serde::Deserialize;

use super::object::{parse_video_id, DeletedVideo, Video, VideoList};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{user_agent, ApiPath, ApiQuery, ClientIp};
use crate::handlers::metadata;
use crate::state::AppState;

/// The caller's live video `id` names.
pub(super) async fn own_video(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<VideoRow, ApiError> {
    let Some(id) = parse_video_id(id) else {
        return Err(ApiError::NotFound);
    };
    match videos::get(&state.pool, VideoId::from_uuid(id)).await? {
        Some(row) if row.owner_id == principal.user_id.as_uuid() && row.deleted_at.is_none() => {
            Ok(row)
        }
        _ => Err(ApiError::NotFound),
    }
}

pub async fn retrieve(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(video_id): ApiPath<String>,
) -> Result<Json<Video>, ApiError> {
    Ok(Json(own_video(&state, &principal, &video_id).await?.into()))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: Option<i64>,
    pub order: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<VideoList>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(0..=100).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            "out_of_range",
            "limit must be between 0 and 100",
        ));
    }
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::field(
                "order",
                "invalid_order",
                format!("unknown order {other:?}; allowed: asc, desc"),
            ))
        }
    };
    // The cursor is the last video of the previous page; it may have been deleted since.
    let after = match &query.after {
        None => None,
        Some(after) => {
            let invalid = || {
                ApiError::field(
                    "after",
                    "invalid_cursor",
                    "after must be the id of one of your videos",
                )
            };
            let id = parse_video_id(after).ok_or_else(invalid)?;
            match videos::get(&state.pool, VideoId::from_uuid(id)).await? {
                Some(row) if row.owner_id == principal.user_id.as_uuid() => {
                    Some((row.created_at, row.id))
                }
                _ => return Err(invalid()),
            }
        }
    };
    let mut rows =
        videos::page(&state.pool, principal.user_id, after, ascending, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Json(VideoList::new(
        rows.into_iter().map(Video::from).collect(),
        has_more,
    )))
}

/// Deletes a finished video: `VideoDeleted` hides it from every read at once and its files
/// are removed by the worker. A video still running is refused (409 `video_not_finished`):
/// its reservation is settled by its own end, never by a deletion.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(video_id): ApiPath<String>,
) -> Result<Json<DeletedVideo>, ApiError> {
    let row = own_video(&state, &principal, &video_id).await?;
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    state
        .store
        .videos()
        .execute(&row.id.to_string(), VideoCommand::Delete, &meta)
        .await
        .map_err(|error| match error {
            CommandError::Domain(VideoError::NotFinished { status }) => ApiError::Conflict {
                code: "video_not_finished",
                message: format!(
                    "the video is {}; only a completed or failed video can be deleted",
                    super::object::status(status.as_str())
                ),
            },
            // Deleted by a concurrent request.
            CommandError::Domain(VideoError::AlreadyDeleted) => ApiError::NotFound,
            other => other.into(),
        })?;
    Ok(Json(DeletedVideo::new(row.id)))
}

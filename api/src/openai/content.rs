//! `GET /videos/{id}/content`: the MP4 (`variant=video`, the default) or the JPEG thumbnail
//! of a completed video, streamed from the blob store with a 200, as OpenAI's spec answers
//! (our own `/v1/videos/{id}/content` redirects to a signed link instead). One `Range:
//! bytes=start-end` is honoured (206), so a browser's `<video>` can seek; other ranges are
//! ignored and the whole file is sent.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use framegate_commands::blobs::{video_keys, BlobError, ByteRange};
use framegate_domain::{VideoId, VideoStatus};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::routes::own_video;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ContentQuery {
    pub variant: Option<String>,
}

enum Variant {
    Video,
    Thumbnail,
}

fn variant(query: &ContentQuery) -> Result<Variant, ApiError> {
    match query.variant.as_deref() {
        None | Some("video") => Ok(Variant::Video),
        Some("thumbnail") => Ok(Variant::Thumbnail),
        // What OpenAI answers for an asset it does not have.
        Some("spritesheet") => Err(ApiError::BadRequest {
            status: StatusCode::NOT_FOUND,
            code: "variant_not_available",
            message: "no spritesheet is made for videos here; variants: video, thumbnail"
                .to_owned(),
        }),
        Some(other) => Err(ApiError::field(
            "variant",
            "invalid_variant",
            format!("unknown variant {other:?}; allowed: video, thumbnail, spritesheet"),
        )),
    }
}

/// Streams the MP4 or the thumbnail (200, or 206 for a `Range`); there is no spritesheet
/// (404 `variant_not_available`) and a video not yet completed has no content (409).
pub async fn content(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(video_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ContentQuery>,
) -> Result<Response, ApiError> {
    let variant = variant(&query)?;
    let row = own_video(&state, &principal, &video_id).await?;
    if row.status != VideoStatus::Completed.as_str() {
        return Err(ApiError::Conflict {
            code: "video_not_ready",
            message: format!(
                "the video is {}; its content is available once it has completed",
                super::object::status(&row.status)
            ),
        });
    }
    let keys = video_keys(VideoId::from_uuid(row.id)).map_err(ApiError::internal)?;
    let key = match variant {
        Variant::Video => keys.video,
        Variant::Thumbnail => keys.thumbnail,
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(ByteRange::parse_header);
    let read = match state.blobs.read(&key, range).await {
        Ok(read) => read,
        Err(BlobError::RangeNotSatisfiable { size }) => return Ok(unsatisfiable(size)),
        Err(BlobError::Unavailable(_)) => {
            return Err(ApiError::Unavailable("blob storage".to_owned()))
        }
        Err(other) => return Err(ApiError::internal(other)),
    };

    let length = read.len();
    let (status, content_range) = match read.range {
        Some((start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            Some(format!("bytes {start}-{end}/{}", read.size)),
        ),
        None => (StatusCode::OK, None),
    };
    let content_type = HeaderValue::from_str(&read.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = (status, Body::from_stream(ReaderStream::new(read.body))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(content_range) = content_range {
        let value = HeaderValue::from_str(&content_range).map_err(ApiError::internal)?;
        headers.insert(header::CONTENT_RANGE, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// 416 with the size the range missed, as HTTP asks (`Content-Range: bytes */size`).
fn unsatisfiable(size: Option<u64>) -> Response {
    let mut response = ApiError::BadRequest {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        code: "range_not_satisfiable",
        message: "the requested range starts past the end of the file".to_owned(),
    }
    .into_response();
    if let Some(size) = size {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    response
}

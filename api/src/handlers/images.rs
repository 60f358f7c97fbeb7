//! Images: upload (multipart), list, read with signed links, delete.
//!
//! An upload follows the order set out in [`crate::images`]: the bytes are checked and
//! thumbnailed off the runtime, the id is derived from the owner and the content, a duplicate
//! of an available image is answered with that image (200) without storing anything, and
//! only then is the upload moderated, stored (if allowed) and recorded. A rejection is
//! recorded too (`ImageRejected`) and answered 422 `image_rejected`, naming the rule.
//!
//! Reads come from the `images` read model. Someone else's image, a deleted one and an
//! unknown id all answer 404: image ids are derived from a user and a file, so anything else
//! would confirm that a given user uploaded a given file.

use axum::body::Bytes;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_commands::blobs::BlobKey;
use framegate_domain::{ImageCommand, ImageId, ModerationDecision};
use framegate_projections::read_models::images::{self, ImageRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::videos::DownloadLink;
use super::{metadata, page_limit, time_cursor, Page};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{user_agent, ApiPath, ApiQuery, ClientIp};
use crate::images::upload::{blob_error, command_error, record_upload, Recorded};
use crate::images::ImageLimits;
use crate::state::AppState;

/// The multipart part that carries the image.
pub const FILE_FIELD: &str = "file";

/// Room for the multipart framing (boundaries, part headers, small extra parts) around the
/// largest accepted file.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// The body limit of `POST /v1/images`: the largest accepted file plus its framing. The
/// router's default limit is far smaller; this one applies to that route alone.
pub fn upload_body_limit(limits: &ImageLimits) -> usize {
    limits.max_bytes.saturating_add(MULTIPART_OVERHEAD)
}

/// The body of `POST /v1/images`.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// A JPEG, PNG or WEBP (judged by its content, not its name or declared type), at most
    /// 10 MiB, each side 256 to 4096 pixels.
    #[schema(content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// The EXIF facts kept about an image, read from the upload. Location is never kept, so it
/// is never shown (nor stored: the stored original has no EXIF but its orientation).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExifResponse {
    pub camera_make: Option<String>,
    pub camera_model: Option<String>,
    /// As the camera recorded it, usually without a zone: `YYYY-MM-DDTHH:MM:SS`.
    pub taken_at: Option<String>,
}

/// What the moderation hook decided about the latest upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModerationResponse {
    pub allowed: bool,
    /// The rule that rejected the upload.
    pub rule: Option<String>,
    pub reason: Option<String>,
}

impl From<ModerationDecision> for ModerationResponse {
    fn from(decision: ModerationDecision) -> Self {
        ModerationResponse {
            allowed: decision.allowed,
            rule: decision.rule,
            reason: decision.reason,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageResponse {
    pub id: Uuid,
    /// `available`, or `rejected` when moderation refused the latest upload.
    pub status: String,
    /// `image/jpeg`, `image/png` or `image/webp`, from the file's content.
    pub content_type: String,
    /// Size of the file as uploaded. The stored original (`url`) lacks its metadata, so it
    /// is usually a little smaller.
    pub bytes: i64,
    /// As displayed: after the EXIF orientation is applied.
    pub width: i32,
    pub height: i32,
    /// The EXIF orientation (1-8) of the file as uploaded; absent for a rejected upload.
    pub orientation: Option<i16>,
    /// Lowercase hex SHA-256 of the file as uploaded: the same file always gives the same
    /// image. It is not the hash of the stored original when the upload carried metadata.
    pub sha256: String,
    /// Absent for a rejected upload.
    pub exif: Option<ExifResponse>,
    pub moderation: ModerationResponse,
    /// When the latest upload of this content was recorded.
    pub created_at: DateTime<Utc>,
    /// The original at full quality without its metadata: no GPS, camera or other EXIF
    /// (a JPEG keeps only its orientation tag), no XMP, IPTC, comments or trailing data; a
    /// PNG or WEBP that had to be turned is stored upright, re-encoded losslessly
    /// (available images only).
    pub url: Option<DownloadLink>,
    /// An upright JPEG of at most 512 pixels a side, without any metadata (available
    /// images only).
    pub thumbnail_url: Option<DownloadLink>,
}

/// The response for `row`, with signed links when the image is available.
async fn respond(state: &AppState, row: ImageRow) -> Result<ImageResponse, ApiError> {
    let (url, thumbnail_url) = if row.is_available() {
        (
            sign(state, row.blob_key.as_deref()).await?,
            sign(state, row.thumbnail_key.as_deref()).await?,
        )
    } else {
        (None, None)
    };
    Ok(ImageResponse {
        id: row.id,
        status: row.status,
        content_type: row.content_type,
        bytes: row.bytes,
        width: row.width,
        height: row.height,
        orientation: row.orientation,
        sha256: row.sha256,
        exif: row.exif.map(|exif| {
            let exif = exif.0;
            ExifResponse {
                camera_make: exif.camera_make,
                camera_model: exif.camera_model,
                taken_at: exif.taken_at,
            }
        }),
        moderation: row.moderation.0.into(),
        created_at: row.created_at,
        url,
        thumbnail_url,
    })
}

async fn sign(state: &AppState, key: Option<&str>) -> Result<Option<DownloadLink>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let key = BlobKey::new(key).map_err(ApiError::internal)?;
    let signed = state
        .blobs
        .signed_url(&key, state.config.download_ttl)
        .await
        .map_err(blob_error)?;
    Ok(Some(signed.into()))
}

/// The caller's image `id`, unless it is deleted.
async fn own_image(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<ImageRow, ApiError> {
    images::get(&state.pool, id)
        .await?
        .filter(|row| row.owner_id == principal.user_id.as_uuid() && row.status != images::DELETED)
        .ok_or(ApiError::NotFound)
}

/// Uploads an image. The same file from the same user is the same image: uploading it again
/// answers 200 with the existing image; a deleted image comes back under its old id.
///
/// What is stored is the image without its metadata (location, camera, XMP, IPTC, comments);
/// a JPEG keeps its orientation tag so that it still shows upright. A JPEG whose scan data
/// is shorter than its header says is refused as `corrupt_image`.
#[utoipa::path(post, path = "/v1/images", tag = "images",
    request_body(content = inline(UploadForm), content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "stored", body = ImageResponse),
        (status = 200, description = "the same file was already uploaded", body = ImageResponse),
        (status = 202, description = "recorded; not yet visible in reads (only while the images projector owes events written before inline projection)"),
        (status = 400, description = "malformed_multipart", body = crate::error::Problem),
        (status = 413, description = "file_too_large (the file) or payload_too_large (the whole body)", body = crate::error::Problem),
        (status = 415, description = "unsupported_image_type (not JPEG, PNG or WEBP by content) or unsupported_media_type (not multipart)", body = crate::error::Problem),
        (status = 422, description = "image_rejected (moderation, naming the rule), empty_file, corrupt_image, image_too_small, image_too_large, image_too_complex, validation_failed (no `file` part)", body = crate::error::Problem),
    ),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let max_bytes = state.images.limits().max_bytes;
    let multipart = multipart.map_err(|_| ApiError::BadRequest {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "unsupported_media_type",
        message: format!("send the image as multipart/form-data in a part named `{FILE_FIELD}`"),
    })?;
    let upload = read_file(multipart, max_bytes).await?;
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    let image_id = match record_upload(&state, &principal, &meta, upload).await? {
        Recorded::Existing(image_id) => return existing(&state, &principal, image_id).await,
        Recorded::New(image_id) => image_id,
    };
    match images::get(&state.pool, image_id.as_uuid()).await? {
        Some(row) if row.is_available() => {
            let body = respond(&state, row).await?;
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        _ => Ok(not_yet_visible(image_id)),
    }
}

/// The answer to an upload of an image that is already available (200).
async fn existing(
    state: &AppState,
    principal: &Principal,
    image_id: ImageId,
) -> Result<Response, ApiError> {
    match own_image(state, principal, image_id.as_uuid()).await {
        Ok(row) if row.is_available() => Ok(Json(respond(state, row).await?).into_response()),
        // Recorded by a concurrent request, with the projector still owing its image events.
        Ok(_) | Err(ApiError::NotFound) => Ok(not_yet_visible(image_id)),
        Err(other) => Err(other),
    }
}

/// 202 for an upload that is recorded but not yet in the read model: the inline projection
/// leaves an image to its projector only while that one still owes it events written before
/// images were projected inline.
fn not_yet_visible(image_id: ImageId) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"id": image_id.as_uuid(), "status": images::AVAILABLE})),
    )
        .into_response()
}

/// The bytes of the `file` part. Other parts are skipped; a second `file` part is refused
/// rather than one of them silently chosen.
async fn read_file(mut multipart: Multipart, max_bytes: usize) -> Result<Bytes, ApiError> {
    let mut file = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e, max_bytes))?
    {
        if field.name() != Some(FILE_FIELD) {
            continue;
        }
        if file.is_some() {
            return Err(ApiError::field(
                FILE_FIELD,
                "duplicate_part",
                "send one image per request",
            ));
        }
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(&e, max_bytes))?;
        file = Some(bytes);
    }
    file.ok_or_else(|| {
        ApiError::field(
            FILE_FIELD,
            "required",
            format!("send the image in a multipart part named `{FILE_FIELD}`"),
        )
    })
}

fn multipart_error(error: &MultipartError, max_bytes: usize) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BadRequest {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("the upload is larger than the {max_bytes} bytes an image may have"),
        }
    } else {
        ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_multipart",
            message: format!("the multipart body cannot be read: {}", error.body_text()),
        }
    }
}

/// One of the caller's images, with signed links to the original and the thumbnail.
#[utoipa::path(get, path = "/v1/images/{id}", tag = "images",
    params(("id" = Uuid, Path, description = "image id")),
    responses((status = 200, body = ImageResponse),
              (status = 404, description = "not_found", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ImageResponse>, ApiError> {
    let row = own_image(&state, &principal, id).await?;
    Ok(Json(respond(&state, row).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub cursor: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

/// The caller's images (available and rejected), newest upload first.
#[utoipa::path(get, path = "/v1/images", tag = "images", params(ListQuery),
    responses((status = 200, body = Page<ImageResponse>),
              (status = 422, description = "validation_failed (invalid_cursor, out_of_range)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<ImageResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = query
        .cursor
        .as_deref()
        .map(super::decode_cursor)
        .transpose()?;
    let rows = images::list(&state.pool, principal.user_id, before, limit + 1).await?;
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

/// Deletes one of the caller's images. Its files are removed shortly after, by the worker.
#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images",
    params(("id" = Uuid, Path, description = "image id")),
    responses((status = 204, description = "deleted"),
              (status = 404, description = "not_found", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    let command = ImageCommand::Delete {
        by: principal.user_id,
    };
    state
        .store
        .images()
        .execute(&ImageId::from_uuid(id).to_string(), command, &meta)
        .await
        .map_err(command_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

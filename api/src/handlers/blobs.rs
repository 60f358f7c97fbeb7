//! `GET /v1/blobs/{key}`: the download route behind the filesystem store's signed URLs.
//!
//! The link itself is the credential (HMAC of key and expiry, `FRAMEGATE_BLOB_SIGNING_KEY`),
//! so the route needs no bearer token and can be handed to a browser or `curl -O`. With the
//! S3 store, links are presigned S3 URLs and this route answers 404.

use crate::extract::{ApiPath, ApiQuery};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use framegate_commands::blobs::{BlobError, BlobKey};
use serde::Deserialize;
use tokio_util::io::ReaderStream;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// Unix seconds after which the link stops working.
    pub expires: i64,
    /// Hex HMAC-SHA256 of the key and `expires`.
    pub signature: String,
}

/// Streams one blob to whoever holds a valid signed link.
#[utoipa::path(
    get, path = "/v1/blobs/{key}", tag = "blobs",
    params(("key" = String, Path, description = "blob key, as in the signed URL"), DownloadQuery),
    responses(
        (status = 200, description = "the blob's bytes, with its content type"),
        (status = 403, description = "invalid_signature or link_expired", body = crate::error::Problem),
        (status = 404, description = "no such blob", body = crate::error::Problem),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    let store = state.blobs.as_filesystem().ok_or(ApiError::NotFound)?;
    let key = BlobKey::new(key).map_err(|_| ApiError::NotFound)?;
    store
        .verify(&key, query.expires, &query.signature)
        .map_err(link_error)?;
    let (file, length, content_type) = store.open(&key).await.map_err(link_error)?;
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    // Blobs never change under a key; the link's own expiry bounds caching.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

fn link_error(error: BlobError) -> ApiError {
    match error {
        BlobError::NotFound(_) | BlobError::InvalidKey(_) => ApiError::NotFound,
        BlobError::InvalidSignature | BlobError::Expired => ApiError::BadRequest {
            status: StatusCode::FORBIDDEN,
            code: error.code(),
            message: error.to_string(),
        },
        other => ApiError::internal(other),
    }
}

//! Recording an upload: the steps of [`crate::images`] after the bytes arrived, shared by
//! `POST /v1/images` and the OpenAI-compatible `POST /videos` (`input_reference`).
//!
//! The bytes are checked and thumbnailed off the runtime, the id is derived from the owner
//! and the content, a duplicate of an available image is that image (nothing stored), and
//! only then is the upload moderated, stored (if allowed) and recorded. A rejection is
//! recorded too (`ImageRejected`) and answered 422 `image_rejected`, naming the rule.

use axum::body::Bytes;
use framegate_commands::blobs::{BlobError, BlobKey};
use framegate_commands::{CommandError, CommandMetadata};
use framegate_domain::{ImageError as ImageRefusal, ImageId, ModerationDecision};
use uuid::Uuid;

use super::{image_id, upload_command, ImageError, ProcessedImage, StorageKeys};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// What became of an upload that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored and recorded now.
    New(ImageId),
    /// The caller already has this image available: nothing was stored.
    Existing(ImageId),
}

impl Recorded {
    pub fn image_id(self) -> ImageId {
        match self {
            Recorded::New(id) | Recorded::Existing(id) => id,
        }
    }
}

/// Checks, moderates, stores and records the uploaded `bytes` as `principal`'s image.
pub async fn record_upload(
    state: &AppState,
    principal: &Principal,
    meta: &CommandMetadata,
    bytes: Bytes,
) -> Result<Recorded, ApiError> {
    let image = state.images.process(bytes).await.map_err(refused)?;
    let owner = principal.user_id;
    let image_id = image_id(owner, &image);
    let aggregate = image_id.to_string();
    let current = state
        .store
        .images()
        .load(&aggregate)
        .await
        .map_err(command_error)?;
    if current.is_available() {
        return Ok(Recorded::Existing(image_id));
    }

    let decision = state.moderation.review(&image);
    if !decision.allowed {
        framegate_commands::metrics::image_rejected("image_rejected");
    }
    let keys = StorageKeys::new(owner, image_id, Uuid::now_v7(), image.format);
    if decision.allowed {
        store_blobs(state, &image, &keys).await?;
    }
    let command = upload_command(owner, &image, &keys, decision.clone());
    if let Err(error) = state
        .store
        .images()
        .execute(&aggregate, command, meta)
        .await
    {
        if decision.allowed {
            remove_blobs(state, &keys).await;
        }
        return match error {
            // A concurrent upload of the same file won: it is the answer.
            CommandError::Domain(ImageRefusal::AlreadyUploaded) => Ok(Recorded::Existing(image_id)),
            other => Err(command_error(other)),
        };
    }
    if !decision.allowed {
        return Err(rejection(image_id, &decision));
    }
    Ok(Recorded::New(image_id))
}

fn rejection(image_id: ImageId, decision: &ModerationDecision) -> ApiError {
    let rule = decision.rule.as_deref().unwrap_or("unnamed");
    let reason = decision.reason.as_deref().unwrap_or("not accepted");
    ApiError::Unprocessable {
        code: "image_rejected",
        message: format!("moderation rule `{rule}` rejected image {image_id}: {reason}"),
    }
}

/// A refused upload as the client's error, with the processing's own status and code.
fn refused(error: ImageError) -> ApiError {
    match error {
        ImageError::Internal(cause) => ApiError::internal(cause),
        other => ApiError::BadRequest {
            status: other.status(),
            code: other.code(),
            message: other.to_string(),
        },
    }
}

/// `CommandError<ImageError>` as the API's error. Refusals that concern an image the caller
/// cannot see (someone else's, never uploaded, rejected or already deleted) are 404.
pub fn command_error(error: CommandError<ImageRefusal>) -> ApiError {
    match error {
        CommandError::Domain(
            ImageRefusal::NotOwner | ImageRefusal::NotUploaded | ImageRefusal::AlreadyDeleted,
        ) => ApiError::NotFound,
        CommandError::Domain(refusal) => ApiError::Unprocessable {
            code: refusal.code(),
            message: refusal.to_string(),
        },
        CommandError::Conflict => ApiError::Conflict {
            code: "conflict",
            message: "the image was changed concurrently; retry the request".to_owned(),
        },
        CommandError::AccountErased => ApiError::account_erased(),
        CommandError::Unavailable(_) => ApiError::Unavailable("the event store".to_owned()),
        other @ (CommandError::EmailTaken | CommandError::Internal(_)) => ApiError::internal(other),
    }
}

/// A blob store failure as the API's error: 503 when the store is away.
pub fn blob_error(error: BlobError) -> ApiError {
    match error {
        BlobError::Unavailable(_) => ApiError::Unavailable("blob storage".to_owned()),
        other => ApiError::internal(other),
    }
}

/// Stores the original (without its metadata) and the thumbnail. On failure nothing of this
/// upload is left behind.
async fn store_blobs(
    state: &AppState,
    image: &ProcessedImage,
    keys: &StorageKeys,
) -> Result<(), ApiError> {
    let original_key = BlobKey::new(keys.original.as_str()).map_err(ApiError::internal)?;
    let thumbnail_key = BlobKey::new(keys.thumbnail.as_str()).map_err(ApiError::internal)?;
    let original = Bytes::copy_from_slice(&image.original);
    let thumbnail = Bytes::copy_from_slice(&image.thumbnail_jpeg);
    let stored = match state
        .blobs
        .put(&original_key, original, image.format.content_type())
        .await
    {
        Ok(()) => {
            state
                .blobs
                .put(&thumbnail_key, thumbnail, "image/jpeg")
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = stored {
        remove_blobs(state, keys).await;
        return Err(blob_error(error));
    }
    Ok(())
}

/// Removes the blobs of an upload that was not recorded. A failure leaves an orphan that no
/// event points to: logged with its key, as nothing else will ever find it.
async fn remove_blobs(state: &AppState, keys: &StorageKeys) {
    for key in [&keys.original, &keys.thumbnail] {
        let removed = match BlobKey::new(key.as_str()) {
            Ok(blob) => state.blobs.delete(&blob).await,
            Err(error) => Err(error),
        };
        if let Err(error) = removed {
            tracing::warn!(%error, key = %key, "could not remove the blob of an unrecorded upload");
        }
    }
}

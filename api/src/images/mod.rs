//! The core of image uploads (`POST /v1/images`): checking and thumbnailing the bytes
//! ([`processing`], with the JPEG walk in `jpeg`), the copy stored as the original, without
//! its metadata (`strip`), the moderation hook ([`moderation`]), and the glue that turns their
//! results into the `Image` aggregate's `Upload` command.
//!
//! The order a handler follows, and why (docs/adr/0006-images.md):
//! 1. read the multipart file with a body limit, then [`ImageProcessor::process`] it off the
//!    async runtime, a bounded number at a time (each decode may use up to `max_alloc`);
//! 2. derive the image id from the owner and the SHA-256 ([`image_id`]); if that image is
//!    already uploaded, answer with it (same bytes, same image) without storing anything;
//! 3. [`moderation::Moderation::review`] the image; store the original (private, without
//!    its metadata: [`ProcessedImage::original`]) and the thumbnail under fresh
//!    [`StorageKeys`] only if it is allowed;
//! 4. send [`upload_command`]. On `AlreadyUploaded` (a concurrent duplicate won the race),
//!    delete the blobs just written and answer with the winner.

mod jpeg;
pub mod moderation;
pub mod processing;
pub mod restrip;
mod strip;
#[cfg(test)]
mod test_images;
pub mod upload;

use std::sync::Arc;

use axum::http::StatusCode;
use framegate_domain::{ImageCommand, ImageId, ModerationDecision, UserId};
use tokio::sync::Semaphore;
use uuid::Uuid;

pub use moderation::{AllowAll, Moderation, Rule, RuleSet, RuleSetError, RULES_ENV};
pub use processing::{
    process, ExifSummary, ImageError, ImageFormat, ImageLimits, ProcessedImage, THUMBNAIL_MAX_SIDE,
};

impl ImageError {
    /// The HTTP status the API answers this refusal with.
    pub fn status(&self) -> StatusCode {
        match self {
            ImageError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ImageError::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImageError::Empty
            | ImageError::Corrupt(_)
            | ImageError::TooSmall { .. }
            | ImageError::DimensionsTooLarge { .. }
            | ImageError::TooComplex { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ImageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Runs [`process`] on the blocking pool, at most `permits` at a time, so that concurrent
/// uploads cannot add up to more decoder memory than `permits × max_alloc` nor starve the
/// async workers of CPU.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    limits: Arc<ImageLimits>,
    permits: Arc<Semaphore>,
}

impl ImageProcessor {
    pub fn new(limits: ImageLimits, concurrent: usize) -> Self {
        ImageProcessor {
            limits: Arc::new(limits),
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
        }
    }

    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// Accepts anything that derefs to bytes (`axum::body::Bytes`, `Vec<u8>`) so the upload
    /// is moved, not copied, onto the blocking thread.
    pub async fn process<B>(&self, bytes: B) -> Result<ProcessedImage, ImageError>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_closed| ImageError::Internal("the image processor is closed".into()))?;
        let limits = Arc::clone(&self.limits);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Timed on the blocking thread: the decode itself, not the wait for a permit.
            let started = std::time::Instant::now();
            let processed = process(bytes.as_ref(), &limits);
            let rejection = processed.as_ref().err().map(ImageError::code);
            framegate_commands::metrics::image_processed(rejection, started.elapsed());
            processed
        })
        .await
        .map_err(|error| ImageError::Internal(format!("image processing died: {error}")))?
    }
}

/// The id the upload of `image` by `owner` has: the same bytes from the same owner are
/// always the same image.
pub fn image_id(owner: UserId, image: &ProcessedImage) -> ImageId {
    ImageId::for_content(owner, &image.sha256)
}

/// Where one upload's blobs live. Keys are per upload (a fresh id each time), so that the
/// late cleanup of a deleted upload can never remove the blobs of a re-upload of the same
/// image, and the loser of a duplicate-upload race can delete exactly what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageKeys {
    /// The original without its metadata ([`ProcessedImage::original`]): private, served to
    /// the owner only by signed URL.
    pub original: String,
    /// The metadata-free JPEG thumbnail.
    pub thumbnail: String,
}

impl StorageKeys {
    pub fn new(owner: UserId, image_id: ImageId, upload_id: Uuid, format: ImageFormat) -> Self {
        let prefix = format!("images/{owner}/{image_id}/{upload_id}");
        StorageKeys {
            original: format!("{prefix}/original.{}", format.extension()),
            thumbnail: format!("{prefix}/thumbnail.jpg"),
        }
    }
}

/// The `Upload` command recording `image` for `owner` with the moderation `decision`.
pub fn upload_command(
    owner: UserId,
    image: &ProcessedImage,
    keys: &StorageKeys,
    decision: ModerationDecision,
) -> ImageCommand {
    ImageCommand::Upload {
        image_id: image_id(owner, image),
        owner,
        sha256: image.sha256.clone(),
        content_type: image.format.media_type(),
        bytes: u64::try_from(image.bytes).unwrap_or(u64::MAX),
        width: image.width,
        height: image.height,
        orientation: image.orientation,
        exif: image.exif.clone(),
        blob_key: keys.original.clone(),
        thumbnail_key: keys.thumbnail.clone(),
        moderation: decision,
    }
}

#[cfg(test)]
mod tests {
    use framegate_domain::{ImageContentType, ImageExif};

    use super::*;
    use crate::images::test_images;

    fn owner() -> UserId {
        UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
    }

    fn processed() -> ProcessedImage {
        ProcessedImage {
            format: ImageFormat::Png,
            width: 400,
            height: 300,
            orientation: 6,
            exif: ImageExif {
                camera_make: Some("Fujifilm".into()),
                camera_model: None,
                taken_at: None,
            },
            had_gps: true,
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            bytes: 12_345,
            original: vec![0x89, b'P', b'N', b'G'],
            thumbnail_jpeg: vec![0xFF, 0xD8, 0xFF, 0xD9],
        }
    }

    #[test]
    fn the_upload_command_carries_the_processed_facts_under_the_derived_id() {
        let image = processed();
        let id = image_id(owner(), &image);
        let upload = Uuid::from_u128(7);
        let keys = StorageKeys::new(owner(), id, upload, image.format);
        let command = upload_command(owner(), &image, &keys, ModerationDecision::allow());
        assert_eq!(
            command,
            ImageCommand::Upload {
                image_id: ImageId::for_content(owner(), &image.sha256),
                owner: owner(),
                sha256: image.sha256.clone(),
                content_type: ImageContentType::Png,
                bytes: 12_345,
                width: 400,
                height: 300,
                orientation: 6,
                exif: image.exif.clone(),
                blob_key: format!("images/{}/{id}/{upload}/original.png", owner()),
                thumbnail_key: format!("images/{}/{id}/{upload}/thumbnail.jpg", owner()),
                moderation: ModerationDecision::allow(),
            }
        );
    }

    #[test]
    fn each_upload_of_one_image_gets_its_own_storage_keys() {
        let id = image_id(owner(), &processed());
        let first = StorageKeys::new(owner(), id, Uuid::from_u128(1), ImageFormat::Jpeg);
        let second = StorageKeys::new(owner(), id, Uuid::from_u128(2), ImageFormat::Jpeg);
        assert_ne!(first.original, second.original);
        assert_ne!(first.thumbnail, second.thumbnail);
        assert!(first.original.ends_with("/original.jpg"));
    }

    #[test]
    fn refusals_map_to_client_statuses_and_only_internal_failures_to_500() {
        let cases = [
            (ImageError::Empty, StatusCode::UNPROCESSABLE_ENTITY),
            (
                ImageError::TooLarge { bytes: 2, max: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                ImageError::UnsupportedType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                ImageError::Corrupt("cut".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ImageError::TooSmall {
                    width: 1,
                    height: 1,
                    min: 2,
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ImageError::DimensionsTooLarge {
                    width: 9,
                    height: 9,
                    max: 8,
                },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ImageError::TooComplex { max_alloc: 1 },
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ImageError::Internal("boom".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error:?}");
        }
    }

    #[tokio::test]
    async fn the_processor_processes_an_image_off_the_runtime_even_with_zero_permits_asked() {
        let processor = ImageProcessor::new(ImageLimits::default(), 0);
        let bytes = test_images::png(300, 400);
        let processed = processor.process(bytes.clone()).await.expect("a valid PNG");
        assert_eq!(
            processed,
            process(&bytes, processor.limits()).expect("a PNG")
        );
        assert_eq!((processed.width, processed.height), (300, 400));
    }

    #[tokio::test]
    async fn the_processor_refuses_bad_bytes_off_the_runtime() {
        let processor = ImageProcessor::new(ImageLimits::default(), 1);
        assert_eq!(
            processor.process(b"plain text".to_vec()).await,
            Err(ImageError::UnsupportedType)
        );
        assert_eq!(processor.process(Vec::new()).await, Err(ImageError::Empty));
    }
}

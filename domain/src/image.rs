//! The `Image` aggregate: one piece of reference content (an owner's exact bytes) from its
//! first upload, through moderation, to deletion and any later re-upload.
//!
//! Images are their own aggregate rather than events of the `User` so that a user's stream
//! does not grow with every upload, uploads do not contend with logins and key changes for
//! the user's sequence numbers, and deletion and moderation stay per image
//! (docs/adr/0006-images.md). The id of an image is derived from its owner and the SHA-256
//! of its bytes ([`ImageId::for_content`]), so "same bytes from the same user, same image"
//! is a property of the stream itself: two concurrent uploads of one file race for sequence 1
//! of one stream and the event store lets only one of them commit, while a deleted image can
//! be uploaded again as a new `ImageUploaded` on the same stream.
//!
//! Decoding, hashing of the bytes, moderation and storage happen before the command, outside
//! the domain; the command carries their results and the aggregate checks that they are
//! consistent and records them. A moderation rejection is its own event, `ImageRejected`, so
//! that nothing reading `ImageUploaded` can serve a rejected image by forgetting a flag.

use std::fmt;
use std::str::FromStr;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ImageId, UserId};
use crate::services::Services;

/// Length of a SHA-256 digest in lowercase hex.
pub const SHA256_HEX_LEN: usize = 64;
/// Upper bound for each EXIF text kept (camera make, model, capture time).
pub const MAX_EXIF_TEXT_CHARS: usize = 128;
/// Upper bound for a moderation rule name and for its reason.
pub const MAX_MODERATION_TEXT_CHARS: usize = 500;
/// S3 object keys are at most 1,024 bytes.
pub const MAX_STORAGE_KEY_LEN: usize = 1024;

/// Domain separation for [`ImageId::for_content`]; changing it would re-key every image.
const IMAGE_ID_CONTEXT: &[u8] = b"framegate.image.v1\0";

impl ImageId {
    /// The id of the image `owner` gets for content with this SHA-256 (normalised, lowercase
    /// hex): a UUID v8 made of the first 16 bytes of
    /// `SHA-256("framegate.image.v1\0" || owner uuid bytes || sha256 hex)`.
    ///
    /// Deterministic on purpose: it turns the per-user dedupe into the stream identity, which
    /// the event store's primary key already keeps unique under concurrency.
    pub fn for_content(owner: UserId, sha256: &str) -> ImageId {
        let digest = Sha256::new()
            .chain_update(IMAGE_ID_CONTEXT)
            .chain_update(owner.as_uuid().as_bytes())
            .chain_update(sha256.as_bytes())
            .finalize();
        let mut bytes = [0_u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        ImageId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

/// Checks that `sha256` is a SHA-256 digest in hex and returns it lowercased, the one form
/// that is stored, indexed and hashed into the image id.
pub fn normalize_sha256(sha256: &str) -> Result<String, ImageError> {
    if sha256.len() != SHA256_HEX_LEN || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ImageError::InvalidSha256);
    }
    Ok(sha256.to_ascii_lowercase())
}

/// The formats an image may be stored in, identified by their media type in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ImageContentType {
    #[serde(rename = "image/jpeg")]
    Jpeg,
    #[serde(rename = "image/png")]
    Png,
    #[serde(rename = "image/webp")]
    Webp,
}

impl ImageContentType {
    pub const ALL: [ImageContentType; 3] = [
        ImageContentType::Jpeg,
        ImageContentType::Png,
        ImageContentType::Webp,
    ];

    /// The media type, as sent in `Content-Type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ImageContentType::Jpeg => "image/jpeg",
            ImageContentType::Png => "image/png",
            ImageContentType::Webp => "image/webp",
        }
    }

    /// The file extension used for storage keys and downloads.
    pub const fn extension(self) -> &'static str {
        match self {
            ImageContentType::Jpeg => "jpg",
            ImageContentType::Png => "png",
            ImageContentType::Webp => "webp",
        }
    }
}

impl fmt::Display for ImageContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported image content type {0:?}")]
pub struct UnsupportedContentType(pub String);

impl FromStr for ImageContentType {
    type Err = UnsupportedContentType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageContentType::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnsupportedContentType(s.to_string()))
    }
}

/// The EXIF metadata kept about an image. Location (the GPS IFD) is deliberately absent:
/// it never enters an event, a read model, a derivative or the stored original (which has
/// no EXIF but its orientation: docs/adr/0027-image-metadata.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageExif {
    pub camera_make: Option<String>,
    pub camera_model: Option<String>,
    /// When the picture was taken, as the camera recorded it (`YYYY-MM-DDTHH:MM:SS`, local
    /// time of the camera: EXIF usually has no zone).
    pub taken_at: Option<String>,
}

impl ImageExif {
    fn validate(&self) -> Result<(), ImageError> {
        let fields = [&self.camera_make, &self.camera_model, &self.taken_at];
        if fields
            .into_iter()
            .flatten()
            .all(|text| is_bounded_text(text, MAX_EXIF_TEXT_CHARS))
        {
            Ok(())
        } else {
            Err(ImageError::InvalidExif)
        }
    }
}

/// What the moderation hook decided about an upload. A rejection names the rule that
/// rejected it, so the record says why without re-running the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModerationDecision {
    pub allowed: bool,
    pub rule: Option<String>,
    pub reason: Option<String>,
}

impl ModerationDecision {
    pub fn allow() -> Self {
        ModerationDecision {
            allowed: true,
            rule: None,
            reason: None,
        }
    }

    pub fn reject(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        ModerationDecision {
            allowed: false,
            rule: Some(rule.into()),
            reason: Some(reason.into()),
        }
    }

    fn validate(&self) -> Result<(), ImageError> {
        let texts_ok = [&self.rule, &self.reason]
            .into_iter()
            .flatten()
            .all(|text| {
                !text.trim().is_empty() && is_bounded_text(text, MAX_MODERATION_TEXT_CHARS)
            });
        let explained = self.allowed || self.rule.is_some();
        if texts_ok && explained {
            Ok(())
        } else {
            Err(ImageError::InvalidModerationDecision)
        }
    }
}

fn is_bounded_text(text: &str, max_chars: usize) -> bool {
    text.chars().count() <= max_chars && !text.chars().any(char::is_control)
}

fn is_valid_storage_key(key: &str) -> bool {
    !key.trim().is_empty() && key.len() <= MAX_STORAGE_KEY_LEN && !key.chars().any(char::is_control)
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one command per request, moved straight into the aggregate; boxing buys nothing"
)]
pub enum ImageCommand {
    /// Records an upload whose bytes were sniffed, decoded, hashed and reviewed. Accepted
    /// (`moderation.allowed`) uploads must already be in storage under `blob_key` and
    /// `thumbnail_key`; for rejected ones the keys are ignored and nothing should be stored.
    Upload {
        image_id: ImageId,
        owner: UserId,
        sha256: String,
        content_type: ImageContentType,
        bytes: u64,
        /// As displayed, after the EXIF orientation is applied.
        width: u32,
        height: u32,
        /// The EXIF orientation (1–8) of the original; 1 when it had none.
        orientation: u16,
        exif: ImageExif,
        blob_key: String,
        thumbnail_key: String,
        moderation: ModerationDecision,
    },
    Delete {
        by: UserId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImageEvent {
    /// The image passed moderation and its original and thumbnail are stored. `owner` and
    /// `sha256` are top-level fields on purpose: the event store indexes them.
    ImageUploaded {
        image_id: ImageId,
        owner: UserId,
        sha256: String,
        content_type: ImageContentType,
        bytes: u64,
        width: u32,
        height: u32,
        orientation: u16,
        exif: ImageExif,
        blob_key: String,
        thumbnail_key: String,
        moderation: ModerationDecision,
    },
    /// Moderation refused the upload; nothing was stored. Only what the decision was about
    /// is kept (no EXIF, no storage keys).
    ImageRejected {
        image_id: ImageId,
        owner: UserId,
        sha256: String,
        content_type: ImageContentType,
        bytes: u64,
        width: u32,
        height: u32,
        moderation: ModerationDecision,
    },
    /// The owner deleted the image; its blobs are to be removed by the subscriber that
    /// reacts to this event, using the keys of the preceding `ImageUploaded`.
    ImageDeleted {},
}

impl DomainEvent for ImageEvent {
    fn event_type(&self) -> String {
        let name = match self {
            ImageEvent::ImageUploaded { .. } => "ImageUploaded",
            ImageEvent::ImageRejected { .. } => "ImageRejected",
            ImageEvent::ImageDeleted {} => "ImageDeleted",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::versions::current_version(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the SHA-256 must be {SHA256_HEX_LEN} hexadecimal characters")]
    InvalidSha256,
    #[error("the image id is not the one derived from the owner and the content")]
    ImageIdMismatch,
    #[error("the image is empty")]
    EmptyImage,
    #[error("the image width and height must be positive")]
    InvalidDimensions,
    #[error("the EXIF orientation must be between 1 and 8")]
    InvalidOrientation,
    #[error("an EXIF text is too long or contains control characters")]
    InvalidExif,
    #[error("a rejection must name its rule, and rule and reason must be short, plain text")]
    InvalidModerationDecision,
    #[error("a storage key must be 1 to {MAX_STORAGE_KEY_LEN} bytes of plain text")]
    InvalidStorageKey,
    #[error("this image is already uploaded")]
    AlreadyUploaded,
    #[error("this image is not uploaded")]
    NotUploaded,
    #[error("this image is already deleted")]
    AlreadyDeleted,
    #[error("this image belongs to another user")]
    NotOwner,
}

impl ImageError {
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::InvalidSha256 => "invalid_sha256",
            ImageError::ImageIdMismatch => "image_id_mismatch",
            ImageError::EmptyImage => "empty_image",
            ImageError::InvalidDimensions => "invalid_dimensions",
            ImageError::InvalidOrientation => "invalid_orientation",
            ImageError::InvalidExif => "invalid_exif",
            ImageError::InvalidModerationDecision => "invalid_moderation_decision",
            ImageError::InvalidStorageKey => "invalid_storage_key",
            ImageError::AlreadyUploaded => "already_uploaded",
            ImageError::NotUploaded => "not_uploaded",
            ImageError::AlreadyDeleted => "already_deleted",
            ImageError::NotOwner => "not_owner",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Stored and usable.
    Uploaded,
    /// The latest upload was refused by moderation; nothing usable is stored.
    Rejected,
    /// Deleted by its owner; may be uploaded again.
    Deleted,
}

/// The facts of the latest accepted upload. Kept after deletion so that whoever removes
/// the blobs knows their keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedImage {
    pub sha256: String,
    pub content_type: ImageContentType,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub orientation: u16,
    pub exif: ImageExif,
    pub blob_key: String,
    pub thumbnail_key: String,
    pub moderation: ModerationDecision,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    image_id: Option<ImageId>,
    owner: Option<UserId>,
    status: Option<ImageStatus>,
    upload: Option<UploadedImage>,
    last_moderation: Option<ModerationDecision>,
}

impl Image {
    pub fn image_id(&self) -> Option<ImageId> {
        self.image_id
    }

    pub fn owner(&self) -> Option<UserId> {
        self.owner
    }

    /// `None` until the first upload (accepted or rejected) is recorded.
    pub fn status(&self) -> Option<ImageStatus> {
        self.status
    }

    /// Whether the image may be shown and used (for a video, say).
    pub fn is_available(&self) -> bool {
        self.status == Some(ImageStatus::Uploaded)
    }

    /// The latest accepted upload, also after the image was deleted.
    pub fn upload(&self) -> Option<&UploadedImage> {
        self.upload.as_ref()
    }

    /// The decision on the latest upload attempt, accepted or not.
    pub fn last_moderation(&self) -> Option<&ModerationDecision> {
        self.last_moderation.as_ref()
    }

    fn decide(&self, command: ImageCommand) -> Result<ImageEvent, ImageError> {
        match command {
            ImageCommand::Upload {
                image_id,
                owner,
                sha256,
                content_type,
                bytes,
                width,
                height,
                orientation,
                exif,
                blob_key,
                thumbnail_key,
                moderation,
            } => {
                let sha256 = normalize_sha256(&sha256)?;
                if image_id != ImageId::for_content(owner, &sha256) {
                    return Err(ImageError::ImageIdMismatch);
                }
                if self.owner.is_some_and(|current| current != owner) {
                    return Err(ImageError::NotOwner);
                }
                if self.status == Some(ImageStatus::Uploaded) {
                    return Err(ImageError::AlreadyUploaded);
                }
                if bytes == 0 {
                    return Err(ImageError::EmptyImage);
                }
                if width == 0 || height == 0 {
                    return Err(ImageError::InvalidDimensions);
                }
                if !(1..=8).contains(&orientation) {
                    return Err(ImageError::InvalidOrientation);
                }
                exif.validate()?;
                moderation.validate()?;
                if !moderation.allowed {
                    return Ok(ImageEvent::ImageRejected {
                        image_id,
                        owner,
                        sha256,
                        content_type,
                        bytes,
                        width,
                        height,
                        moderation,
                    });
                }
                if !is_valid_storage_key(&blob_key) || !is_valid_storage_key(&thumbnail_key) {
                    return Err(ImageError::InvalidStorageKey);
                }
                Ok(ImageEvent::ImageUploaded {
                    image_id,
                    owner,
                    sha256,
                    content_type,
                    bytes,
                    width,
                    height,
                    orientation,
                    exif,
                    blob_key,
                    thumbnail_key,
                    moderation,
                })
            }
            ImageCommand::Delete { by } => {
                let owner = self.owner.ok_or(ImageError::NotUploaded)?;
                // Ownership first, so that someone else learns nothing about the state.
                if owner != by {
                    return Err(ImageError::NotOwner);
                }
                match self.status {
                    Some(ImageStatus::Uploaded) => Ok(ImageEvent::ImageDeleted {}),
                    Some(ImageStatus::Deleted) => Err(ImageError::AlreadyDeleted),
                    Some(ImageStatus::Rejected) | None => Err(ImageError::NotUploaded),
                }
            }
        }
    }
}

impl Aggregate for Image {
    const TYPE: &'static str = "Image";
    type Command = ImageCommand;
    type Event = ImageEvent;
    type Error = ImageError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ImageEvent::ImageUploaded {
                image_id,
                owner,
                sha256,
                content_type,
                bytes,
                width,
                height,
                orientation,
                exif,
                blob_key,
                thumbnail_key,
                moderation,
            } => {
                self.image_id = Some(image_id);
                self.owner = Some(owner);
                self.status = Some(ImageStatus::Uploaded);
                self.last_moderation = Some(moderation.clone());
                self.upload = Some(UploadedImage {
                    sha256,
                    content_type,
                    bytes,
                    width,
                    height,
                    orientation,
                    exif,
                    blob_key,
                    thumbnail_key,
                    moderation,
                });
            }
            ImageEvent::ImageRejected {
                image_id,
                owner,
                moderation,
                ..
            } => {
                self.image_id = Some(image_id);
                self.owner = Some(owner);
                self.status = Some(ImageStatus::Rejected);
                self.last_moderation = Some(moderation);
            }
            ImageEvent::ImageDeleted {} => self.status = Some(ImageStatus::Deleted),
        }
    }
}

/// The derived id of an image, for callers that hold a raw (not yet normalised) digest.
pub fn image_id_for(owner: UserId, sha256: &str) -> Result<ImageId, ImageError> {
    Ok(ImageId::for_content(owner, &normalize_sha256(sha256)?))
}

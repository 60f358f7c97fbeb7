//! Blob storage: the one port through which uploaded images, thumbnails, generated MP4s and
//! posters are written and read, with two adapters behind it.
//!
//! The [`FilesystemStore`] is the default, so a single machine runs without extra services;
//! the [`S3Store`] speaks to AWS S3 or any S3-compatible server. Callers hold a [`Blobs`]
//! (`Arc<dyn BlobStore>`) built from [`BlobConfig`] and never learn which one they have,
//! except that downloads always go through a signed, expiring URL: S3 presigns it, the
//! filesystem adapter signs an API route with HMAC-SHA256 that the API verifies and serves
//! (see [`FilesystemStore::verify`] and [`FilesystemStore::open`]).

mod config;
mod fs;
mod read;
mod s3;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use config::{build, BlobBackend, BlobConfig};
pub use fs::FilesystemStore;
pub use read::{BlobRead, ByteRange};
pub use s3::{S3Config, S3Store};

/// Shared handle to whichever blob store the configuration chose.
pub type Blobs = Arc<dyn BlobStore>;

/// The longest key accepted, in bytes (keys are ASCII).
pub const MAX_KEY_LEN: usize = 512;

/// Where a blob lives in the store, e.g. `videos/0190f3c2/video.mp4`.
///
/// Keys are validated once, here, because both adapters turn them into something sensitive:
/// a path under the filesystem root and a segment of a signed URL. Only `[A-Za-z0-9/_.-]`,
/// 1 to 512 characters, no leading or trailing `/`, no empty segment (`//`), no `..` anywhere
/// and no `.` segment. That keeps every key a plain relative path that cannot climb out of the
/// root, needs no escaping in a URL and names exactly one object (`a/./b` would alias `a/b`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn new(key: impl Into<String>) -> Result<BlobKey, BlobError> {
        let key = key.into();
        let invalid = |why: &str| Err(BlobError::InvalidKey(format!("{key:?}: {why}")));
        if key.is_empty() {
            return invalid("is empty");
        }
        if key.len() > MAX_KEY_LEN {
            return invalid("is longer than 512 characters");
        }
        if let Some(c) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-')))
        {
            return invalid(&format!("contains {c:?} (allowed: A-Z a-z 0-9 / _ . -)"));
        }
        if key.starts_with('/') || key.ends_with('/') {
            return invalid("starts or ends with '/'");
        }
        if key.contains("//") {
            return invalid("contains an empty segment ('//')");
        }
        if key.contains("..") {
            return invalid("contains '..'");
        }
        if key.split('/').any(|segment| segment == ".") {
            return invalid("contains a '.' segment");
        }
        Ok(BlobKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a relative path (safe to join onto a root: see the type's docs).
    pub(crate) fn as_relative_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BlobKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BlobKey {
    type Error = BlobError;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        BlobKey::new(key)
    }
}

impl TryFrom<&str> for BlobKey {
    type Error = BlobError;

    fn try_from(key: &str) -> Result<Self, Self::Error> {
        BlobKey::new(key)
    }
}

/// Where a finished video's blobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoKeys {
    /// The MP4.
    pub video: BlobKey,
    /// A full-size JPEG frame from early in the video.
    pub poster: BlobKey,
    /// A small JPEG for listings.
    pub thumbnail: BlobKey,
}

/// The keys of video `id`'s blobs: written by the worker, linked by the API.
pub fn video_keys(id: framegate_domain::VideoId) -> Result<VideoKeys, BlobError> {
    Ok(VideoKeys {
        video: BlobKey::new(format!("videos/{id}/video.mp4"))?,
        poster: BlobKey::new(format!("videos/{id}/poster.jpg"))?,
        thumbnail: BlobKey::new(format!("videos/{id}/thumbnail.jpg"))?,
    })
}

/// A URL that downloads one blob until `expires_at`, without further authentication.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under this key.
    #[error("blob not found: {0}")]
    NotFound(String),
    /// The key breaks the rules in [`BlobKey`].
    #[error("invalid blob key {0}")]
    InvalidKey(String),
    /// A signed URL whose signature does not match its key and expiry.
    #[error("the download link's signature is invalid")]
    InvalidSignature,
    /// A correctly signed URL past its expiry.
    #[error("the download link has expired")]
    Expired,
    /// The storage backend could not be reached or is overloaded; worth retrying later.
    #[error("blob storage is unavailable: {0}")]
    Unavailable(String),
    /// A local I/O failure (disk full, permissions, a file where a directory should be).
    #[error("blob storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A byte range that starts past the end of the blob (of `size` bytes, when known).
    #[error("the requested range is not within the blob")]
    RangeNotSatisfiable { size: Option<u64> },
    /// Anything else: bad configuration, an unexpected backend answer, a bug.
    #[error("blob storage error: {0}")]
    Other(String),
}

impl BlobError {
    /// A stable, machine-readable code for API responses and logs.
    pub fn code(&self) -> &'static str {
        match self {
            BlobError::NotFound(_) => "blob_not_found",
            BlobError::InvalidKey(_) => "invalid_blob_key",
            BlobError::InvalidSignature => "invalid_signature",
            BlobError::Expired => "link_expired",
            BlobError::Unavailable(_) => "dependency_unavailable",
            BlobError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            BlobError::Io(_) | BlobError::Other(_) => "internal",
        }
    }
}

/// The blob storage port. Implementations are cheap to share behind an `Arc`.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// `"filesystem"` or `"s3"`, for logs and health output.
    fn kind(&self) -> &'static str;

    /// Stores `bytes` under `key`, replacing any previous blob. Readers see the old blob or the
    /// new one, never a partial write.
    async fn put(&self, key: &BlobKey, bytes: Bytes, content_type: &str) -> Result<(), BlobError>;

    /// Like [`BlobStore::put`], streaming the content from a local file instead of memory
    /// (generated videos can be large).
    async fn put_file(
        &self,
        key: &BlobKey,
        path: &Path,
        content_type: &str,
    ) -> Result<(), BlobError>;

    /// The whole blob, in memory. Prefer a signed URL for anything served to clients.
    async fn get(&self, key: &BlobKey) -> Result<Bytes, BlobError>;

    /// Streams the blob, or the byte `range` of it, with its size and content type, without
    /// holding it in memory: what the API serves downloads from.
    async fn read(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, BlobError>;

    /// The blob's size in bytes, or `None` when there is no blob under `key`.
    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, BlobError>;

    /// Removes the blob; removing a missing blob succeeds.
    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError>;

    /// A URL that downloads the blob for `ttl`. It does not check that the blob exists.
    async fn signed_url(&self, key: &BlobKey, ttl: Duration) -> Result<SignedUrl, BlobError>;

    /// Succeeds when the store can currently be written to and read from.
    async fn health(&self) -> Result<(), BlobError>;

    /// The filesystem adapter, when this is one: the API needs it to verify and serve the
    /// signed download route that only the filesystem adapter issues.
    fn as_filesystem(&self) -> Option<&FilesystemStore> {
        None
    }
}

/// Rejects content types that could not be sent back as a `Content-Type` header.
fn check_content_type(content_type: &str) -> Result<(), BlobError> {
    let valid = !content_type.is_empty()
        && content_type.len() <= 255
        && content_type.bytes().all(|b| (0x20..0x7f).contains(&b));
    if valid {
        Ok(())
    } else {
        Err(BlobError::Other(format!(
            "invalid content type {content_type:?}: expected printable ASCII, 1 to 255 characters"
        )))
    }
}

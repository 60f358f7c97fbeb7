//! The local filesystem blob store: the default, so one machine needs no object storage.
//!
//! Layout under the root: `objects/<key>` holds the bytes, `meta/<key>` the content type (so
//! the download route can set `Content-Type`), and `tmp/` the files being written. Every write
//! goes to `tmp/` first and is renamed into place, so a reader never sees a half-written blob
//! and a crash leaves at most a stray temporary file. Separate trees (rather than a
//! `<file>.meta` sidecar) keep a key such as `poster.jpg.meta` from colliding with metadata.
//!
//! Downloads are served by the API at `{public_url}/v1/blobs/{key}?expires=..&signature=..`,
//! where the signature is a hex HMAC-SHA256 of `"{key}\n{expires}"` under a server-side key:
//! [`FilesystemStore::signed_url`] issues it, [`FilesystemStore::verify`] checks it and
//! [`FilesystemStore::open`] hands the route a file to stream.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{check_content_type, BlobError, BlobKey, BlobRead, BlobStore, ByteRange, SignedUrl};

type HmacSha256 = Hmac<Sha256>;

/// Served when a blob has no metadata file (e.g. copied in by hand).
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

pub struct FilesystemStore {
    root: PathBuf,
    signing_key: Vec<u8>,
    public_url: String,
}

impl fmt::Debug for FilesystemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilesystemStore")
            .field("root", &self.root)
            .field("signing_key", &"<redacted>")
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl FilesystemStore {
    /// A store under `root` (created on first write). `public_url` is the API's external base
    /// URL, e.g. `https://api.example.com`; signed URLs point at its `/v1/blobs/` route.
    pub fn new(root: PathBuf, signing_key: Vec<u8>, public_url: String) -> FilesystemStore {
        let public_url = public_url.trim_end_matches('/').to_owned();
        FilesystemStore {
            root,
            signing_key,
            public_url,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, key: &BlobKey) -> PathBuf {
        self.root.join("objects").join(key.as_relative_path())
    }

    fn meta_path(&self, key: &BlobKey) -> PathBuf {
        self.root.join("meta").join(key.as_relative_path())
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn mac(&self, key: &BlobKey, expires: i64) -> Result<HmacSha256, BlobError> {
        let mut mac = HmacSha256::new_from_slice(&self.signing_key)
            .map_err(|error| BlobError::Other(format!("blob signing key: {error}")))?;
        mac.update(key.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        Ok(mac)
    }

    /// The hex HMAC-SHA256 signature of `key` valid until `expires` (Unix seconds).
    pub fn sign(&self, key: &BlobKey, expires: i64) -> Result<String, BlobError> {
        Ok(hex::encode(self.mac(key, expires)?.finalize().into_bytes()))
    }

    /// Checks a download request's `expires` and `signature` for `key`. The signature is
    /// checked first and in constant time, so a forged link learns nothing, not even whether
    /// it would have expired; a genuine link is valid until the second `expires`.
    pub fn verify(&self, key: &BlobKey, expires: i64, signature: &str) -> Result<(), BlobError> {
        let signature = hex::decode(signature).map_err(|_| BlobError::InvalidSignature)?;
        self.mac(key, expires)?
            .verify_slice(&signature)
            .map_err(|_| BlobError::InvalidSignature)?;
        if Utc::now().timestamp() >= expires {
            return Err(BlobError::Expired);
        }
        Ok(())
    }

    /// The content type the blob was stored with.
    pub async fn content_type(&self, key: &BlobKey) -> Result<String, BlobError> {
        match tokio::fs::read_to_string(self.meta_path(key)).await {
            Ok(content_type) => Ok(content_type),
            Err(error) if is_missing(&error) => match self.head(key).await? {
                Some(_) => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
                None => Err(BlobError::NotFound(key.to_string())),
            },
            Err(error) => Err(error.into()),
        }
    }

    /// Opens the blob for streaming: the file, its length and its content type.
    pub async fn open(&self, key: &BlobKey) -> Result<(tokio::fs::File, u64, String), BlobError> {
        let file = tokio::fs::File::open(self.object_path(key))
            .await
            .map_err(|error| not_found_or_io(key, error))?;
        let metadata = file.metadata().await?;
        // Opening a directory succeeds on Unix: `videos` is not a blob because `videos/x` is.
        if !metadata.is_file() {
            return Err(BlobError::NotFound(key.to_string()));
        }
        let content_type = self.content_type(key).await?;
        Ok((file, metadata.len(), content_type))
    }

    /// A fresh path under `tmp/` (created if needed) for a file about to be renamed into place.
    async fn tmp_path(&self) -> Result<PathBuf, BlobError> {
        let dir = self.tmp_dir();
        tokio::fs::create_dir_all(&dir).await?;
        Ok(dir.join(uuid::Uuid::new_v4().simple().to_string()))
    }

    /// Writes `bytes` to a temporary file, flushed to disk, and returns its path.
    async fn write_tmp(&self, bytes: &[u8]) -> Result<PathBuf, BlobError> {
        let tmp = self.tmp_path().await?;
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(bytes).await?;
            file.sync_all().await
        }
        .await;
        match written {
            Ok(()) => Ok(tmp),
            Err(error) => {
                discard(&tmp).await;
                Err(error.into())
            }
        }
    }

    /// Renames a finished temporary file to `target`, creating its parent directories.
    async fn rename_into_place(&self, tmp: &Path, target: &Path) -> Result<(), BlobError> {
        let renamed = async {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(tmp, target).await
        }
        .await;
        if let Err(error) = renamed {
            discard(tmp).await;
            return Err(error.into());
        }
        Ok(())
    }

    /// Publishes a finished temporary file as the blob under `key`. The content type goes in
    /// first, so whoever sees the new bytes also sees their type.
    async fn commit(&self, key: &BlobKey, tmp: &Path, content_type: &str) -> Result<(), BlobError> {
        let meta = match self.write_tmp(content_type.as_bytes()).await {
            Ok(meta) => meta,
            Err(error) => {
                discard(tmp).await;
                return Err(error);
            }
        };
        if let Err(error) = self.rename_into_place(&meta, &self.meta_path(key)).await {
            discard(tmp).await;
            return Err(error);
        }
        self.rename_into_place(tmp, &self.object_path(key)).await
    }
}

#[async_trait::async_trait]
impl BlobStore for FilesystemStore {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes, content_type: &str) -> Result<(), BlobError> {
        check_content_type(content_type)?;
        let tmp = self.write_tmp(&bytes).await?;
        self.commit(key, &tmp, content_type).await
    }

    async fn put_file(
        &self,
        key: &BlobKey,
        path: &Path,
        content_type: &str,
    ) -> Result<(), BlobError> {
        check_content_type(content_type)?;
        let tmp = self.tmp_path().await?;
        // A copy rather than a rename: the source may be on another filesystem and belongs to
        // the caller. std's copy streams (and uses copy_file_range where it can).
        let copied = async {
            tokio::fs::copy(path, &tmp).await?;
            tokio::fs::File::open(&tmp).await?.sync_all().await
        }
        .await;
        if let Err(error) = copied {
            discard(&tmp).await;
            return Err(error.into());
        }
        self.commit(key, &tmp, content_type).await
    }

    async fn get(&self, key: &BlobKey) -> Result<Bytes, BlobError> {
        tokio::fs::read(self.object_path(key))
            .await
            .map(Bytes::from)
            .map_err(|error| not_found_or_io(key, error))
    }

    async fn read(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, BlobError> {
        let (mut file, size, content_type) = self.open(key).await?;
        let Some(range) = range else {
            return Ok(BlobRead {
                body: Box::pin(file),
                size,
                range: None,
                content_type,
            });
        };
        let (start, end) = range
            .within(size)
            .ok_or(BlobError::RangeNotSatisfiable { size: Some(size) })?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        Ok(BlobRead {
            body: Box::pin(file.take(end - start + 1)),
            size,
            range: Some((start, end)),
            content_type,
        })
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.object_path(key)).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Ok(None),
            Err(error) if is_missing(&error) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        for path in [self.object_path(key), self.meta_path(key)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(error) if is_missing(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn signed_url(&self, key: &BlobKey, ttl: Duration) -> Result<SignedUrl, BlobError> {
        let ttl = i64::try_from(ttl.as_secs())
            .map_err(|_| BlobError::Other(format!("signed URL lifetime too long: {ttl:?}")))?;
        let expires = Utc::now()
            .timestamp()
            .checked_add(ttl)
            .ok_or_else(|| BlobError::Other("signed URL lifetime too long".into()))?;
        let expires_at = DateTime::from_timestamp(expires, 0)
            .ok_or_else(|| BlobError::Other("signed URL lifetime too long".into()))?;
        let signature = self.sign(key, expires)?;
        Ok(SignedUrl {
            // Keys need no percent-encoding: see `BlobKey`.
            url: format!(
                "{}/v1/blobs/{key}?expires={expires}&signature={signature}",
                self.public_url
            ),
            expires_at,
        })
    }

    async fn health(&self) -> Result<(), BlobError> {
        let probe = self.write_tmp(b"health").await?;
        tokio::fs::remove_file(&probe).await?;
        Ok(())
    }

    fn as_filesystem(&self) -> Option<&FilesystemStore> {
        Some(self)
    }
}

/// Whether an I/O error means "no blob here": nothing at the path, or a directory or file in
/// the way of it (`a` when `a/b` is stored, `a/b` when `a` is).
fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory
    )
}

fn not_found_or_io(key: &BlobKey, error: std::io::Error) -> BlobError {
    if is_missing(&error) {
        BlobError::NotFound(key.to_string())
    } else {
        BlobError::Io(error)
    }
}

/// Best-effort removal of a temporary file after a failed write.
async fn discard(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await {
        if error.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "could not remove a temporary blob file");
        }
    }
}

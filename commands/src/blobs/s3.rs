//! The S3 blob store, over aws-sdk-s3: AWS itself or any S3-compatible server (MinIO, moto,
//! Ceph, R2) reached through an endpoint override and path-style addressing.
//!
//! Credentials come from the standard AWS chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//! profiles, web identity, container and instance roles) unless [`S3Config`] carries a static
//! pair, which tests use so parallel tests need not touch the process environment. Downloads are
//! presigned `GetObject` URLs: S3 checks signature and expiry itself, so nothing of ours sits on
//! the download path. Uploads are single `PutObject` requests (up to S3's 5 GB limit), streamed
//! from disk by [`BlobStore::put_file`]. Presigned URLs last at most 7 days (S3's limit), and
//! no longer than temporary credentials do. The credentials need `s3:ListBucket` on the bucket
//! as well as object access: without it S3 answers 403 instead of 404 for a missing key, which
//! would surface as `Other` rather than `NotFound`.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};

use super::{check_content_type, BlobError, BlobKey, BlobRead, BlobStore, ByteRange, SignedUrl};

/// Where the S3 store keeps blobs and how it reaches the server.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// A custom endpoint such as `http://127.0.0.1:9000`; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Address buckets as `{endpoint}/{bucket}/{key}` rather than `{bucket}.{endpoint}/{key}`:
    /// what most S3-compatible servers need.
    pub path_style: bool,
    /// A static access key pair overriding the default AWS credential chain (both or neither).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

impl S3Config {
    /// A configuration using the default credential chain, with path-style addressing exactly
    /// when a custom endpoint is given.
    pub fn new(
        bucket: impl Into<String>,
        region: impl Into<String>,
        endpoint: Option<String>,
    ) -> Self {
        S3Config {
            path_style: endpoint.is_some(),
            endpoint,
            bucket: bucket.into(),
            region: region.into(),
            access_key: None,
            secret_key: None,
        }
    }

    /// Uses this static key pair instead of the default credential chain.
    pub fn with_static_credentials(
        mut self,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        self.access_key = Some(access_key.into());
        self.secret_key = Some(secret_key.into());
        self
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
}

impl S3Store {
    /// Builds the client. Loading the AWS configuration (profile files, environment) is the
    /// only work done here: nothing is sent until the first request, so an unreachable server
    /// shows up in [`BlobStore::health`], not here.
    pub async fn new(config: &S3Config) -> Result<S3Store, BlobError> {
        if config.bucket.is_empty() {
            return Err(BlobError::Other("the S3 bucket name is empty".into()));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        match (&config.access_key, &config.secret_key) {
            (Some(access_key), Some(secret_key)) => {
                loader = loader.credentials_provider(Credentials::new(
                    access_key,
                    secret_key,
                    None,
                    None,
                    "framegate-config",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(BlobError::Other(
                    "an S3 access key needs its secret key, and the other way round".into(),
                ))
            }
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .build();
        Ok(S3Store {
            client: Client::from_conf(s3_config),
            bucket: config.bucket.clone(),
            region: config.region.clone(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists already (for development and tests; production
    /// buckets are provisioned with their policies elsewhere).
    pub async fn ensure_bucket(&self) -> Result<(), BlobError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(error) => match sdk_error(error, &self.bucket) {
                BlobError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that must not be named as a location constraint.
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Created concurrently by someone else with our credentials: just as good.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(error) => Err(sdk_error(error, &self.bucket)),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes, content_type: &str) -> Result<(), BlobError> {
        check_content_type(content_type)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| sdk_error(error, key.as_str()))?;
        Ok(())
    }

    async fn put_file(
        &self,
        key: &BlobKey,
        path: &Path,
        content_type: &str,
    ) -> Result<(), BlobError> {
        check_content_type(content_type)?;
        // Surfaces a missing or unreadable source as the I/O error it is.
        tokio::fs::metadata(path).await?;
        let body = ByteStream::from_path(path).await.map_err(|error| {
            BlobError::Other(format!("cannot stream {}: {error}", path.display()))
        })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|error| sdk_error(error, key.as_str()))?;
        Ok(())
    }

    async fn get(&self, key: &BlobKey) -> Result<Bytes, BlobError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|error| sdk_error(error, key.as_str()))?;
        let body = object.body.collect().await.map_err(|error| {
            BlobError::Unavailable(format!("reading {key} from S3 failed: {error}"))
        })?;
        Ok(body.into_bytes())
    }

    async fn read(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, BlobError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .set_range(range.map(|range| range.to_string()))
            .send()
            .await;
        let object = match result {
            Ok(object) => object,
            Err(error) if error.code() == Some("InvalidRange") => {
                return Err(BlobError::RangeNotSatisfiable {
                    size: self.head(key).await?,
                })
            }
            Err(error) => return Err(sdk_error(error, key.as_str())),
        };
        let length = object
            .content_length()
            .and_then(|length| u64::try_from(length).ok())
            .ok_or_else(|| BlobError::Other(format!("S3 sent no length for {key}")))?;
        // A ranged answer says which bytes it holds: `bytes 0-99/1000`.
        let (size, range) = match (range, object.content_range()) {
            (Some(_), Some(content_range)) => {
                let (start, end, size) = parse_content_range(content_range).ok_or_else(|| {
                    BlobError::Other(format!("S3 sent Content-Range {content_range:?} for {key}"))
                })?;
                (size, Some((start, end)))
            }
            _ => (length, None),
        };
        let content_type = object
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        Ok(BlobRead {
            body: Box::pin(object.body.into_async_read()),
            size,
            range,
            content_type,
        })
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, BlobError> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await;
        match result {
            Ok(object) => {
                let size = object.content_length().unwrap_or(0);
                u64::try_from(size)
                    .map(Some)
                    .map_err(|_| BlobError::Other(format!("S3 reported size {size} for {key}")))
            }
            Err(error) => match sdk_error(error, key.as_str()) {
                BlobError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        // S3 answers 204 for missing keys too: deleting is idempotent already.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|error| sdk_error(error, key.as_str()))?;
        Ok(())
    }

    async fn signed_url(&self, key: &BlobKey, ttl: Duration) -> Result<SignedUrl, BlobError> {
        let start = SystemTime::now();
        let presigning = PresigningConfig::builder()
            .start_time(start)
            .expires_in(ttl)
            .build()
            .map_err(|error| BlobError::Other(format!("cannot presign for {ttl:?}: {error}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(presigning)
            .await
            .map_err(|error| sdk_error(error, key.as_str()))?;
        // S3 counts whole seconds from the signing time, which is `start` truncated to the
        // second: truncating here too keeps `expires_at` from promising a moment too much.
        let expires_at = chrono::Duration::from_std(Duration::from_secs(ttl.as_secs()))
            .ok()
            .and_then(|ttl| {
                DateTime::<Utc>::from(start)
                    .trunc_subsecs(0)
                    .checked_add_signed(ttl)
            })
            .ok_or_else(|| BlobError::Other(format!("cannot presign for {ttl:?}")))?;
        Ok(SignedUrl {
            url: request.uri().to_owned(),
            expires_at,
        })
    }

    async fn health(&self) -> Result<(), BlobError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => match sdk_error(error, &self.bucket) {
                BlobError::NotFound(_) => Err(BlobError::Unavailable(format!(
                    "the S3 bucket {} does not exist",
                    self.bucket
                ))),
                other => Err(other),
            },
        }
    }
}

/// The start, inclusive end and total size in a `Content-Range: bytes start-end/size`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, size.parse().ok()?))
}

/// Sorts an SDK failure into our errors: 404 is `NotFound(what)`, no answer or a 5xx/throttling
/// answer is `Unavailable` (retry later), anything else (403, bad request) is `Other`.
fn sdk_error<E>(error: SdkError<E>, what: &str) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let code = error.code().map(str::to_owned);
    let detail = DisplayErrorContext(&error).to_string();
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            BlobError::Unavailable(detail)
        }
        _ if status == Some(404)
            || matches!(
                code.as_deref(),
                Some("NoSuchKey" | "NoSuchBucket" | "NotFound")
            ) =>
        {
            BlobError::NotFound(what.to_owned())
        }
        _ if status.is_some_and(|status| status >= 500)
            || matches!(code.as_deref(), Some("SlowDown" | "ServiceUnavailable")) =>
        {
            BlobError::Unavailable(detail)
        }
        _ => BlobError::Other(detail),
    }
}

//! Choosing and building the blob store from `FRAMEGATE_*` settings.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `FRAMEGATE_BLOB_STORE` | `s3` if `FRAMEGATE_S3_BUCKET` is set, else `filesystem` | which adapter |
//! | `FRAMEGATE_BLOB_DIR` | `.framegate/blobs` | filesystem root |
//! | `FRAMEGATE_BLOB_SIGNING_KEY` | random per process (with a warning); required with `FRAMEGATE_ENV=production` | HMAC key of filesystem download links, ≥ 32 characters (production: [`crate::deployment`]'s key rules) |
//! | `FRAMEGATE_PUBLIC_URL` | `http://127.0.0.1:8080` | the API's external base URL, for filesystem download links |
//! | `FRAMEGATE_S3_ENDPOINT` | AWS | S3-compatible endpoint, e.g. `http://127.0.0.1:9000` |
//! | `FRAMEGATE_S3_BUCKET` | — | bucket (required for `s3`) |
//! | `FRAMEGATE_S3_REGION` | `us-east-1` | region |
//! | `FRAMEGATE_S3_PATH_STYLE` | `true` with an endpoint, else `false` | path-style addressing |
//!
//! S3 credentials come from the standard AWS variables and chain. Empty values count as unset,
//! so a compose file can list every variable. Bad values fail at start-up with the variable's
//! name in the message.

use std::path::PathBuf;
use std::sync::Arc;

use rand::RngCore as _;

use super::{BlobError, Blobs, FilesystemStore, S3Config, S3Store};
use crate::deployment::{Deployment, Secret, SecretKind};

/// The shortest accepted `FRAMEGATE_BLOB_SIGNING_KEY`, in characters.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobBackend {
    Filesystem,
    S3,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobConfig {
    pub backend: BlobBackend,
    /// Root of the filesystem store.
    pub dir: PathBuf,
    /// HMAC key of the filesystem store's download links.
    pub signing_key: Secret<Vec<u8>>,
    /// True when no key was configured and `signing_key` is random: links then stop working
    /// on restart and are not accepted by other processes.
    pub signing_key_generated: bool,
    /// The API's external base URL, without a trailing slash.
    pub public_url: String,
    /// Present when the backend is S3.
    pub s3: Option<S3Config>,
}

impl BlobConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<BlobConfig, BlobError> {
        BlobConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get` (the environment, a file, a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<BlobConfig, BlobError> {
        let deployment =
            Deployment::from_lookup(&get).map_err(|e| invalid(e.variable, e.message))?;
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let bucket = get("FRAMEGATE_S3_BUCKET");
        let backend = match get("FRAMEGATE_BLOB_STORE").as_deref() {
            None if bucket.is_some() => BlobBackend::S3,
            None => BlobBackend::Filesystem,
            Some("filesystem") => BlobBackend::Filesystem,
            Some("s3") => BlobBackend::S3,
            Some(other) => {
                return Err(invalid(
                    "FRAMEGATE_BLOB_STORE",
                    format!("{other:?} is neither \"filesystem\" nor \"s3\""),
                ))
            }
        };

        let (signing_key, signing_key_generated) = match get("FRAMEGATE_BLOB_SIGNING_KEY") {
            Some(key) if key.chars().count() < MIN_SIGNING_KEY_LEN => {
                return Err(invalid(
                    "FRAMEGATE_BLOB_SIGNING_KEY",
                    format!("must be at least {MIN_SIGNING_KEY_LEN} characters"),
                ))
            }
            Some(key) => {
                deployment
                    .check_secret("FRAMEGATE_BLOB_SIGNING_KEY", &key, SecretKind::Key)
                    .map_err(|e| invalid(e.variable, e.message))?;
                (key.into_bytes(), false)
            }
            None if deployment.is_production() && backend == BlobBackend::Filesystem => {
                return Err(invalid(
                    "FRAMEGATE_BLOB_SIGNING_KEY",
                    "is required with FRAMEGATE_ENV=production and the filesystem store: \
                     download links must verify on every process and survive restarts"
                        .into(),
                ))
            }
            None => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                (hex::encode(key).into_bytes(), true)
            }
        };

        let public_url = get("FRAMEGATE_PUBLIC_URL")
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid(
                "FRAMEGATE_PUBLIC_URL",
                format!("{public_url:?} is not an http(s) URL"),
            ));
        }

        let s3 = match backend {
            BlobBackend::Filesystem => None,
            BlobBackend::S3 => {
                let bucket = bucket.ok_or_else(|| {
                    invalid(
                        "FRAMEGATE_S3_BUCKET",
                        "is required when FRAMEGATE_BLOB_STORE=s3".into(),
                    )
                })?;
                let endpoint = get("FRAMEGATE_S3_ENDPOINT");
                let region = get("FRAMEGATE_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned());
                let mut config = S3Config::new(bucket, region, endpoint);
                if let Some(path_style) = get("FRAMEGATE_S3_PATH_STYLE") {
                    config.path_style = parse_bool("FRAMEGATE_S3_PATH_STYLE", &path_style)?;
                }
                Some(config)
            }
        };

        Ok(BlobConfig {
            backend,
            dir: PathBuf::from(
                get("FRAMEGATE_BLOB_DIR").unwrap_or_else(|| ".framegate/blobs".into()),
            ),
            signing_key: Secret::new(signing_key),
            signing_key_generated,
            public_url,
            s3,
        })
    }
}

/// Builds the configured store. Nothing is contacted yet: call [`super::BlobStore::health`]
/// to find out whether it is reachable.
pub async fn build(config: &BlobConfig) -> Result<Blobs, BlobError> {
    match (config.backend, &config.s3) {
        (BlobBackend::Filesystem, _) => {
            if config.signing_key_generated {
                // Warned here rather than while parsing, so it reaches the configured logs.
                tracing::warn!(
                    "FRAMEGATE_BLOB_SIGNING_KEY is not set: using a random key, so download \
                     links stop working on restart and are rejected by other processes"
                );
            }
            Ok(Arc::new(FilesystemStore::new(
                config.dir.clone(),
                config.signing_key.expose().clone(),
                config.public_url.clone(),
            )))
        }
        (BlobBackend::S3, Some(s3)) => Ok(Arc::new(S3Store::new(s3).await?)),
        (BlobBackend::S3, None) => Err(invalid(
            "FRAMEGATE_S3_BUCKET",
            "is required when FRAMEGATE_BLOB_STORE=s3".into(),
        )),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, BlobError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            name,
            format!("{value:?} is not a boolean (true/false)"),
        )),
    }
}

fn invalid(name: &str, why: String) -> BlobError {
    BlobError::Other(format!("invalid configuration: {name} {why}"))
}

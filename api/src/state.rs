//! What every handler shares: configuration, the pool, the write side and the services.

use std::sync::Arc;

use framegate_commands::blobs::{Blobs, FilesystemStore};
use framegate_commands::passwords::PasswordHasher;
use framegate_commands::EventStore;
use sqlx::PgPool;

use crate::auth::api_keys::UsageTracker;
use crate::auth::cache::CredentialCache;
use crate::auth::jwt::TokenKeys;
use crate::config::ApiConfig;
use crate::idempotency::ResponseSeal;
use crate::images::{ImageProcessor, Moderation};
use crate::mail::Mailer;
use crate::rate_limit::RateLimits;
use crate::streams::Streams;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub pool: PgPool,
    pub store: EventStore,
    pub passwords: PasswordHasher,
    pub tokens: Arc<TokenKeys>,
    pub mailer: Arc<Mailer>,
    pub limits: Arc<RateLimits>,
    pub key_usage: Arc<UsageTracker>,
    /// Callers' keys and account state; answers only while `spawn_credentials_listener` runs.
    pub credentials: Arc<CredentialCache>,
    /// Encrypts the responses kept for Idempotency-Key replays.
    pub response_seal: ResponseSeal,
    /// Uploaded images and generated videos. The filesystem adapter from `config.blobs`
    /// unless [`AppState::with_blobs`] replaced it (S3 needs an async start-up).
    pub blobs: Blobs,
    /// Checks and thumbnails uploads off the async runtime, `config.image_concurrency` at once.
    pub images: ImageProcessor,
    /// Reviews every upload before anything is stored: `config.image_moderation` unless
    /// [`AppState::with_moderation`] replaced it.
    pub moderation: Arc<dyn Moderation>,
    /// The video event streams' watchers and caps; streams are served only while
    /// `spawn_streams` runs.
    pub streams: Arc<Streams>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("password hasher: {0}")]
    Passwords(#[from] framegate_commands::passwords::PasswordError),
    #[error("mailer: {0}")]
    Mail(#[from] crate::mail::MailError),
}

impl AppState {
    pub fn new(config: ApiConfig, pool: PgPool) -> Result<Self, StateError> {
        let passwords = PasswordHasher::owasp(config.max_concurrent_hashes)?;
        Self::with_passwords(config, pool, passwords)
    }

    /// With an explicit hasher (tests use cheap argon2 parameters).
    pub fn with_passwords(
        config: ApiConfig,
        pool: PgPool,
        passwords: PasswordHasher,
    ) -> Result<Self, StateError> {
        let blobs: Blobs = Arc::new(FilesystemStore::new(
            config.blobs.dir.clone(),
            config.blobs.signing_key.expose().clone(),
            config.blobs.public_url.clone(),
        ));
        Ok(Self {
            blobs,
            images: ImageProcessor::new(config.images.clone(), config.image_concurrency),
            moderation: Arc::new(config.image_moderation.clone()),
            store: framegate_projections::inline::event_store(pool.clone()),
            tokens: Arc::new(TokenKeys::new(&config)),
            mailer: Arc::new(Mailer::new(&config.mail)?),
            limits: Arc::new(RateLimits::new(&config.rate)),
            key_usage: Arc::new(UsageTracker::default()),
            credentials: Arc::new(CredentialCache::default()),
            streams: Arc::new(Streams::new(&config.streams)),
            response_seal: ResponseSeal::derive(config.jwt_secret.expose()),
            passwords,
            pool,
            config: Arc::new(config),
        })
    }
}

impl AppState {
    /// Uses `blobs` (built by `framegate_commands::blobs::build`) for storage and links.
    pub fn with_blobs(mut self, blobs: Blobs) -> Self {
        self.blobs = blobs;
        self
    }

    /// Reviews uploads with `moderation` (a classifier, say) instead of the configured rules.
    pub fn with_moderation(mut self, moderation: Arc<dyn Moderation>) -> Self {
        self.moderation = moderation;
        self
    }
}

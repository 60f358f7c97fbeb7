//! What every handler shares: configuration, the pool, the write side and the services.

use std::sync::Arc;

use framegate_commands::passwords::PasswordHasher;
use framegate_commands::EventStore;
use sqlx::PgPool;

use crate::auth::api_keys::UsageTracker;
use crate::auth::jwt::TokenKeys;
use crate::config::ApiConfig;
use crate::mail::Mailer;
use crate::rate_limit::RateLimits;

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
        Ok(Self {
            store: EventStore::new(pool.clone()),
            tokens: Arc::new(TokenKeys::new(&config)),
            mailer: Arc::new(Mailer::new(&config.mail)?),
            limits: Arc::new(RateLimits::new(&config.rate)),
            key_usage: Arc::new(UsageTracker::default()),
            passwords,
            pool,
            config: Arc::new(config),
        })
    }
}

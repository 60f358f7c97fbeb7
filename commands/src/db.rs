//! Connecting to Postgres and applying the project's own migrations.
//!
//! The migrations live in the top-level `migrations/` folder and are embedded in the binary,
//! so `framegate migrate` and the tests apply exactly the schema that was compiled in.
//!
//! Every connection a process opens comes from one pool sized by [`PoolSettings`], its shared
//! LISTEN connection included, so a deployment's total is the sum of its processes' pool
//! sizes; each connection names its role in `pg_stat_activity.application_name`.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

/// Every migration of the project, forward-only.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The setting that sizes a process's pool.
pub const POOL_SIZE_SETTING: &str = "FRAMEGATE_DATABASE_POOL_SIZE";
/// The setting that bounds how long a request waits for a pooled connection.
pub const ACQUIRE_TIMEOUT_SETTING: &str = "FRAMEGATE_DATABASE_ACQUIRE_TIMEOUT_MS";

/// Postgres's SQLSTATE for "too many connections" (server-wide, per role or per database).
const TOO_MANY_CONNECTIONS: &str = "53300";

/// How one process's pool is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// The most connections the process holds at once.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails.
    pub acquire_timeout: Duration,
    /// Shown in `pg_stat_activity.application_name` (`framegate-<role>`).
    pub application_name: String,
}

impl PoolSettings {
    /// `role`'s pool with `default_size` connections unless [`POOL_SIZE_SETTING`] says
    /// otherwise.
    pub fn for_role(role: &str, default_size: u32) -> Self {
        Self {
            max_connections: default_size,
            acquire_timeout: Duration::from_secs(10),
            application_name: format!("framegate-{role}"),
        }
    }

    /// [`PoolSettings::for_role`] with the environment's overrides (read through `get`).
    pub fn from_lookup(
        role: &str,
        default_size: u32,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut settings = Self::for_role(role, default_size);
        if let Some(value) = get(POOL_SIZE_SETTING).filter(|v| !v.trim().is_empty()) {
            settings.max_connections = value
                .trim()
                .parse()
                .ok()
                .filter(|size| (1..=10_000).contains(size))
                .ok_or_else(|| {
                    format!(
                        "{POOL_SIZE_SETTING} must be a whole number from 1 to 10000, not {value:?}"
                    )
                })?;
        }
        if let Some(value) = get(ACQUIRE_TIMEOUT_SETTING).filter(|v| !v.trim().is_empty()) {
            let millis: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    format!("{ACQUIRE_TIMEOUT_SETTING} must be a positive number of milliseconds, not {value:?}")
                })?;
            settings.acquire_timeout = Duration::from_millis(millis);
        }
        Ok(settings)
    }
}

/// Why a pool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "Postgres has no connection slot left ({message}). This process may open up to \
         {size} connections ({POOL_SIZE_SETTING}); lower it, run fewer processes, or raise the \
         server's max_connections (or the database role's CONNECTION LIMIT)"
    )]
    TooManyConnections { message: String, size: u32 },
    #[error(
        "no Postgres connection within {waited:?} ({ACQUIRE_TIMEOUT_SETTING}); is the server \
         up and reachable at DATABASE_URL?"
    )]
    TimedOut { waited: Duration },
    #[error(transparent)]
    Other(#[from] sqlx::Error),
}

/// Opens a pool on `url` without touching the schema.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let settings = PoolSettings::for_role("cli", max_connections);
    connect_pool(url, &settings)
        .await
        .map_err(|error| match error {
            ConnectError::Other(error) => error,
            other => sqlx::Error::Configuration(Box::new(other)),
        })
}

/// Opens a pool on `url` sized by `settings`, checking that one connection can be made.
pub async fn connect_pool(url: &str, settings: &PoolSettings) -> Result<PgPool, ConnectError> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.application_name(&settings.application_name);
    // One connection of our own first: the pool retries a server out of slots until its
    // timeout and then reports only that it timed out.
    let probe = tokio::time::timeout(settings.acquire_timeout, options.connect())
        .await
        .map_err(|_| ConnectError::TimedOut {
            waited: settings.acquire_timeout,
        })?
        .map_err(|error| explain(error, settings))?;
    probe.close().await.ok();
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|error| explain(error, settings))
}

/// Names the setting to change when the server is out of connection slots.
pub fn explain(error: sqlx::Error, settings: &PoolSettings) -> ConnectError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(TOO_MANY_CONNECTIONS) => {
            ConnectError::TooManyConnections {
                message: db.message().to_owned(),
                size: settings.max_connections,
            }
        }
        sqlx::Error::PoolTimedOut => ConnectError::TimedOut {
            waited: settings.acquire_timeout,
        },
        _ => ConnectError::Other(error),
    }
}

/// Applies every pending migration.
///
/// Then claims the email addresses of registrations stored before crypto-shredding in
/// `email_claims` (idempotent; `crate::pii`), so that they stay taken.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await?;
    crate::pii::current()
        .claim_plaintext_emails(pool)
        .await
        .map_err(sqlx::migrate::MigrateError::Execute)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<PoolSettings, String> {
        PoolSettings::from_lookup("api", 10, |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_per_role_and_overrides() {
        let default = settings(&[]).expect("defaults");
        assert_eq!(default.max_connections, 10);
        assert_eq!(default.application_name, "framegate-api");
        let sized = settings(&[(POOL_SIZE_SETTING, "3"), (ACQUIRE_TIMEOUT_SETTING, "2500")])
            .expect("valid");
        assert_eq!(sized.max_connections, 3);
        assert_eq!(sized.acquire_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_name_the_setting() {
        for bad in ["0", "-1", "ten", "10001"] {
            let error = settings(&[(POOL_SIZE_SETTING, bad)]).expect_err(bad);
            assert!(error.contains(POOL_SIZE_SETTING), "{error}");
        }
        let error = settings(&[(ACQUIRE_TIMEOUT_SETTING, "0")]).expect_err("zero");
        assert!(error.contains(ACQUIRE_TIMEOUT_SETTING), "{error}");
    }
}

//! Connecting to Postgres and applying the project's own migrations.
//!
//! The migrations live in the top-level `migrations/` folder and are embedded in the binary,
//! so `framegate migrate` and the tests apply exactly the schema that was compiled in.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Every migration of the project, forward-only.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool on `url` without touching the schema.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

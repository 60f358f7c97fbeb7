//! Test support: every test gets its own freshly migrated database.
//!
//! The server comes from `DATABASE_URL` (default: the local trust-auth cluster). Each
//! `TestDatabase` creates `fg_test_<uuid>` and drops it again when it goes out of scope, so
//! tests run in parallel without seeing each other. Migrating is done once per set of
//! migrations, not once per test: the first test to need it migrates a template database,
//! `fg_template_<digest of the migrations>`, and every test database is a copy of it
//! (`CREATE DATABASE ... TEMPLATE`), as crates.io's test suite does. A changed migration has
//! another digest, so a stale template is never used.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgPool};
use uuid::Uuid;

use crate::db;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's admin URL used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

pub struct TestDatabase {
    pub pool: PgPool,
    pub name: String,
    url: String,
}

impl TestDatabase {
    /// Creates and migrates a private database. Panics on failure: this is test code.
    pub async fn new() -> Self {
        Self::with_pool_size(16).await
    }

    pub async fn with_pool_size(max_connections: u32) -> Self {
        let admin = admin_options();
        let template = template(&admin).await;
        Self::create(&admin, Some(&template), max_connections).await
    }

    /// An empty database, for tests of the migrations themselves.
    pub async fn unmigrated(max_connections: u32) -> Self {
        Self::create(&admin_options(), None, max_connections).await
    }

    async fn create(
        admin: &PgConnectOptions,
        template: Option<&str>,
        max_connections: u32,
    ) -> Self {
        let name = format!("fg_test_{}", Uuid::new_v4().simple());
        let mut conn = admin
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot reach Postgres at DATABASE_URL: {e}"));
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        sqlx::query(&sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = db::connect(&url, max_connections)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database: {e}"));
        Self { pool, name, url }
    }

    /// A URL of this database, for code that opens its own connections.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn admin_options() -> PgConnectOptions {
    admin_url()
        .parse()
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a Postgres URL: {e}"))
}

/// The name of the migrated template for the migrations compiled in: their checksums'
/// digest, so every change of a migration gets a template of its own.
fn template_name() -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    for migration in db::MIGRATOR.iter() {
        digest.update(migration.version.to_le_bytes());
        digest.update(&*migration.checksum);
    }
    format!("fg_template_{}", &hex::encode(digest.finalize())[..16])
}

/// Makes sure the template exists and returns its name. Test processes run at once (one per
/// test under nextest), so the first one builds it under an advisory lock while the others
/// wait; it is built under a temporary name and renamed when complete, so a process that
/// died half-way leaves nothing anyone would clone.
async fn template(admin: &PgConnectOptions) -> String {
    let name = template_name();
    let mut conn = admin
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach Postgres at DATABASE_URL: {e}"));
    if template_exists(&mut conn, &name).await {
        conn.close().await.ok();
        return name;
    }
    // A session lock: released by the unlock below or, if this process dies, by its end.
    sqlx::query("SELECT pg_advisory_lock(hashtext('framegate test template'))")
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot lock the template: {e}"));
    if !template_exists(&mut conn, &name).await {
        let building = format!("fg_template_building_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create the template: {e}"));
        let url = admin.clone().database(&building).to_url_lossy().to_string();
        let pool = db::connect(&url, 1)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the template: {e}"));
        db::migrate(&pool)
            .await
            .unwrap_or_else(|e| panic!("migrations failed: {e}"));
        // Nobody may be connected to a template while it is copied.
        pool.close().await;
        rename(&mut conn, &building, &name).await;
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('framegate test template'))")
        .execute(&mut conn)
        .await
        .ok();
    conn.close().await.ok();
    name
}

/// Renames the built template. A connection of the closed pool may still be open on the
/// server ("being accessed by other users"): it is ended and the rename tried again.
async fn rename(conn: &mut sqlx::PgConnection, building: &str, name: &str) {
    let mut tries = 0;
    loop {
        let renamed = sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut *conn)
            .await;
        match renamed {
            Ok(_) => return,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55006") && tries < 5 => {
                tries += 1;
                // The database is ours alone until renamed: whatever is still connected to it
                // (a pooled connection the pool's close left open) is ended.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(building)
                .execute(&mut *conn)
                .await
                .ok();
            }
            Err(e) => panic!("cannot name the template: {e}"),
        }
    }
}

async fn template_exists(conn: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
        .unwrap_or(false)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await; a short-lived thread with its own runtime removes the database.
        // FORCE disconnects whatever the test left open.
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(admin) = admin_url().parse::<PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = admin.connect().await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut conn).await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// An environment of `pairs`, for the `from_lookup` constructors of configuration.
pub fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Keys whose next commit fails right after it committed (once each): the failure of a
/// step after the commit, e.g. a pool that timed out while the response was being stored.
static FAIL_AFTER_COMMIT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Makes the next unit of work committed for Idempotency-Key `key` report a failure (a pool
/// time-out) although it committed.
pub fn fail_after_commit(key: &str) {
    FAIL_AFTER_COMMIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(key.to_owned());
}

/// Whether the commit under `key` is to fail; consumes the failure.
pub(crate) fn take_failure_after_commit(key: &str) -> bool {
    let mut keys = FAIL_AFTER_COMMIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match keys.iter().position(|k| k == key) {
        Some(at) => {
            keys.swap_remove(at);
            true
        }
        None => false,
    }
}

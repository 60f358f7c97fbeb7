//! The database of `framegate dev`: whatever DATABASE_URL names, else a PostgreSQL server that
//! already runs on this machine, else a private cluster started from the installed binaries.
//!
//! `framegate dev` promises a working platform without any set-up, so this module finds a
//! database the way a developer would by hand: try the local server on its default socket or
//! port (creating the `framegate` database), and when there is none, `initdb` a cluster under
//! `.framegate/` and run it with `pg_ctl` on a free port of 127.0.0.1. The cluster's data
//! persists between runs; it is stopped when `framegate dev` exits. PostgreSQL refuses to run as
//! root, so as root the cluster runs as an unprivileged OS user (`postgres`, else `nobody`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio::process::Command;

/// The database `framegate dev` uses, on the local server as in the private cluster.
const DATABASE: &str = "framegate";
/// The superuser `initdb` creates in the private cluster (trust authentication, no password).
const CLUSTER_SUPERUSER: &str = "framegate";
const DEFAULT_PORT: u16 = 5432;
/// Where Debian and Ubuntu install each server version: `/usr/lib/postgresql/<version>/bin`.
const INSTALLED_VERSIONS: &str = "/usr/lib/postgresql";
/// An absent server is refused at once, but a filtered port or a wedged server would otherwise
/// stall start-up for the driver's default of minutes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// `sun_path` holds 108 bytes on Linux and 104 on macOS, `.s.PGSQL.<port>` included.
const MAX_SOCKET_DIR_LEN: usize = 90;
const MISSING_BINARIES: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH \
     or in /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install postgresql; \
     macOS: brew install postgresql) or set DATABASE_URL";

/// The database of one `framegate dev` run; stops the private cluster it started when dropped.
pub struct DevDatabase {
    url: String,
    source: DatabaseSource,
    cluster: Option<PrivateCluster>,
}

/// Where the database of `framegate dev` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    /// DATABASE_URL, used as given.
    Configured,
    /// A server already running on this machine.
    LocalServer,
    /// A cluster of our own, its data in `data_dir`.
    PrivateCluster { data_dir: PathBuf },
}

impl DevDatabase {
    /// DATABASE_URL (`configured`) when set; else a local server on the default socket
    /// directories or 127.0.0.1:5432, as the current OS user's role or `postgres`, with database
    /// `framegate` created if missing; else a private cluster under `state_dir`.
    pub async fn resolve(configured: Option<String>, state_dir: &Path) -> anyhow::Result<Self> {
        if let Some(url) = configured {
            // The URL may carry a password: say where it came from, not what it is.
            tracing::info!("database: DATABASE_URL");
            return Ok(Self {
                url,
                source: DatabaseSource::Configured,
                cluster: None,
            });
        }
        let roles = local_roles().await;
        if let Some(url) = local_server(&local_endpoints(), &roles, DATABASE).await {
            tracing::info!(%url, "database: the local PostgreSQL server");
            return Ok(Self {
                url,
                source: DatabaseSource::LocalServer,
                cluster: None,
            });
        }
        tracing::info!(
            "no local PostgreSQL server let us in (DATABASE_URL can name another one): \
             starting a private cluster"
        );
        Self::private(state_dir).await
    }

    /// A private cluster under `state_dir`, initialised on first use and reused afterwards.
    pub async fn private(state_dir: &Path) -> anyhow::Result<Self> {
        let path = std::env::var_os("PATH");
        let binaries = ServerBinaries::locate(path.as_deref(), Path::new(INSTALLED_VERSIONS))?;
        let cluster = PrivateCluster::start(binaries, state_dir).await?;
        let url = format!(
            "postgres://{CLUSTER_SUPERUSER}@127.0.0.1:{}/{DATABASE}",
            cluster.port
        );
        let data_dir = cluster.data_dir.display();
        tracing::info!(%url, %data_dir, "database: private PostgreSQL cluster");
        Ok(Self {
            url,
            source: DatabaseSource::PrivateCluster {
                data_dir: cluster.data_dir.clone(),
            },
            cluster: Some(cluster),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn source(&self) -> &DatabaseSource {
        &self.source
    }

    /// Stops the private cluster this run started (fast shutdown: sessions are disconnected);
    /// nothing to do for any other database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        match self.cluster.take() {
            Some(mut cluster) => cluster.stop().await,
            None => Ok(()),
        }
    }
}

/// A server address to probe; `url` is what the rest of the platform connects with.
#[derive(Debug, Clone)]
enum Endpoint {
    Tcp { host: String, port: u16 },
    Socket { dir: PathBuf, port: u16 },
}

impl Endpoint {
    fn options(&self, role: &str) -> PgConnectOptions {
        let options = PgConnectOptions::new().username(role);
        match self {
            Self::Tcp { host, port } => options.host(host).port(*port),
            Self::Socket { dir, port } => options.socket(dir).port(*port),
        }
    }

    fn url(&self, role: &str, database: &str) -> String {
        let role = url_encode(role, "");
        let database = url_encode(database, "");
        match self {
            Self::Tcp { host, port } => format!("postgres://{role}@{host}:{port}/{database}"),
            Self::Socket { dir, port } => {
                let dir = url_encode(&dir.to_string_lossy(), "/");
                format!("postgres://{role}@localhost:{port}/{database}?host={dir}")
            }
        }
    }
}

fn local_endpoints() -> Vec<Endpoint> {
    // TCP first: its URL is the plain one every client understands. The sockets come second
    // for the common Debian set-up, where only they let a role in without a password (peer).
    let tcp = Endpoint::Tcp {
        host: "127.0.0.1".to_owned(),
        port: DEFAULT_PORT,
    };
    let sockets = ["/var/run/postgresql", "/tmp"].map(|dir| Endpoint::Socket {
        dir: PathBuf::from(dir),
        port: DEFAULT_PORT,
    });
    std::iter::once(tcp).chain(sockets).collect()
}

/// The current OS user's role (what `psql` would use), then `postgres`.
async fn local_roles() -> Vec<String> {
    let current = match run(Command::new("id").arg("-un"), "id -un").await {
        Ok(name) => Some(name),
        Err(_) => std::env::var("USER").ok(),
    };
    let mut roles: Vec<String> = current.into_iter().collect();
    if !roles.iter().any(|role| role == "postgres") {
        roles.push("postgres".to_owned());
    }
    roles
}

/// The URL of `database` on the first endpoint and role that let us in, creating it if needed.
async fn local_server(endpoints: &[Endpoint], roles: &[String], database: &str) -> Option<String> {
    for endpoint in endpoints {
        for role in roles {
            match ensure_database(&endpoint.options(role), database).await {
                Ok(()) => return Some(endpoint.url(role, database)),
                Err(error) => tracing::debug!(?endpoint, role, "local server unusable: {error:#}"),
            }
        }
    }
    None
}

/// Connects to `database` on `server`, creating the database first when it does not exist.
async fn ensure_database(server: &PgConnectOptions, database: &str) -> anyhow::Result<()> {
    match connect(&server.clone().database(database)).await {
        Ok(connection) => return close(connection).await,
        Err(error) if sql_state(&error).as_deref() == Some("3D000") => {} // invalid_catalog_name
        Err(error) => return Err(error.into()),
    }
    let mut admin = connect(&server.clone().database("postgres")).await?;
    let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
    match sqlx::raw_sql(&create).execute(&mut admin).await {
        Ok(_) => tracing::info!(database, "created the database"),
        // Someone else created it meanwhile: 42P04 duplicate_database, or a unique violation
        // on pg_database when both commands ran at once.
        Err(error) if matches!(sql_state(&error).as_deref(), Some("42P04" | "23505")) => {}
        Err(error) => {
            return Err(anyhow!(error).context(format!("cannot create database {database}")))
        }
    }
    close(admin).await?;
    close(connect(&server.clone().database(database)).await?).await
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(connected) => connected,
        Err(_) => Err(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

async fn close(connection: PgConnection) -> anyhow::Result<()> {
    Ok(connection.close().await?)
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    Some(error.as_database_error()?.code()?.into_owned())
}

/// Percent-encodes everything but unreserved characters and `keep`.
fn url_encode(text: &str, keep: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric()
                || b"-._~".contains(&byte)
                || keep.as_bytes().contains(&byte)
            {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

mod cluster;
use cluster::{run, PrivateCluster, ServerBinaries};

#[cfg(test)]
mod tests;

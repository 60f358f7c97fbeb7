//! The database of `framegate dev`: whatever DATABASE_URL names, else a PostgreSQL server that
//! already runs on this machine, else a private cluster started from the installed binaries.
//!
//! `framegate dev` promises a working platform without any set-up, so this module finds a
//! database the way a developer would by hand: try the local server on its default socket or
//! port (creating the `framegate` database), and when there is none, `initdb` a cluster under
//! `.framegate/` and run it with `pg_ctl` on a free port of 127.0.0.1. The cluster's data
//! persists between runs; it is stopped when `framegate dev` exits. PostgreSQL refuses to run as
//! root, so as root the cluster runs as an unprivileged OS user (`postgres`, else `nobody`).

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
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

/// `initdb` and `pg_ctl`, from one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerBinaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl ServerBinaries {
    /// The first directory of `path` (a PATH value) holding both, else the newest version under
    /// `installed_versions` (Debian keeps the server binaries off PATH).
    fn locate(path: Option<&OsStr>, installed_versions: &Path) -> anyhow::Result<Self> {
        let on_path: Vec<PathBuf> = path
            .map(|path| std::env::split_paths(path).collect())
            .unwrap_or_default();
        on_path
            .iter()
            .find_map(|dir| Self::in_dir(dir))
            .or_else(|| newest_installed(installed_versions))
            .ok_or_else(|| anyhow!(MISSING_BINARIES))
    }

    fn in_dir(dir: &Path) -> Option<Self> {
        let binaries = Self {
            initdb: dir.join("initdb"),
            pg_ctl: dir.join("pg_ctl"),
        };
        (binaries.initdb.is_file() && binaries.pg_ctl.is_file()).then_some(binaries)
    }
}

fn newest_installed(installed_versions: &Path) -> Option<ServerBinaries> {
    let mut versions: Vec<(Vec<u32>, ServerBinaries)> = std::fs::read_dir(installed_versions)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, ServerBinaries::in_dir(&entry.path().join("bin"))?))
        })
        .collect();
    versions.sort_by(|a, b| a.0.cmp(&b.0));
    versions.pop().map(|(_, binaries)| binaries)
}

/// A cluster under the state directory, run by `pg_ctl`: `data/` holds the cluster, `port` the
/// port of the last run, `postgres.log` the server's log, and the directory itself the socket.
struct PrivateCluster {
    pg_ctl: PathBuf,
    run_as: RunAs,
    data_dir: PathBuf,
    port: u16,
    /// Only a server this run started is stopped by it. One found running (another
    /// `framegate dev`, or a server that outlived a killed run) is left as it was.
    stop_on_exit: bool,
}

impl PrivateCluster {
    async fn start(binaries: ServerBinaries, state_dir: &Path) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(state_dir)
            .await
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let state_dir = tokio::fs::canonicalize(state_dir).await?;
        let run_as = RunAs::detect().await?;
        run_as.take_over(&state_dir).await?;
        let mut cluster = Self {
            pg_ctl: binaries.pg_ctl,
            run_as,
            data_dir: state_dir.join("data"),
            port: 0,
            stop_on_exit: false,
        };
        if !cluster.data_dir.join("PG_VERSION").is_file() {
            cluster.initdb(&binaries.initdb).await?;
        }
        let server = |port| {
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username(CLUSTER_SUPERUSER)
        };
        if let Some(port) = cluster.running_port().await? {
            cluster.port = port;
            let data_dir = cluster.data_dir.display();
            tracing::info!(
                port,
                "the private cluster is already running (another framegate dev, or left by a \
                 killed one): using it and leaving it running (pg_ctl stop -D {data_dir})"
            );
            let unreachable = || {
                format!(
                    "a server is recorded as running in {data_dir} (postmaster.pid) but does not \
                     accept connections on port {port}: stop it, or delete postmaster.pid if \
                     that process is not PostgreSQL"
                )
            };
            ensure_database(&server(port), DATABASE)
                .await
                .with_context(unreachable)?;
        } else {
            cluster.port = choose_port(&state_dir)?;
            cluster.pg_ctl_start(&state_dir).await?;
            cluster.stop_on_exit = true;
            ensure_database(&server(cluster.port), DATABASE).await?;
        }
        Ok(cluster)
    }

    async fn initdb(&self, initdb: &Path) -> anyhow::Result<()> {
        let data_dir = self.data_dir.display();
        tracing::info!(%data_dir, "initialising a private PostgreSQL cluster");
        // Trust lets every local tool in without a password, which is what a development cluster
        // listening only on 127.0.0.1 and its own socket directory is for. Locale C does not
        // depend on the locales this machine happens to have generated. Not waiting for the
        // disk saves seconds on every first run; the risk, an empty cluster corrupted by a power
        // cut in that moment, is fixed by deleting it.
        let args = [
            OsStr::new("-D"),
            self.data_dir.as_os_str(),
            OsStr::new("--username"),
            OsStr::new(CLUSTER_SUPERUSER),
            OsStr::new("--auth=trust"),
            OsStr::new("--encoding=UTF8"),
            OsStr::new("--locale=C"),
            OsStr::new("--no-sync"),
        ];
        run(&mut self.run_as.command(initdb, &args), "initdb").await?;
        Ok(())
    }

    /// The port of a server already running on the data directory.
    async fn running_port(&self) -> anyhow::Result<Option<u16>> {
        let Ok(pid_file) = tokio::fs::read_to_string(self.data_dir.join("postmaster.pid")).await
        else {
            return Ok(None);
        };
        // pg_ctl checks whether the recorded process is alive. The pid file of a server that
        // died with a killed run is stale, and the next server replaces it when it starts.
        let status_args = [
            OsStr::new("status"),
            OsStr::new("-D"),
            self.data_dir.as_os_str(),
        ];
        let running = self
            .run_as
            .command(&self.pg_ctl, &status_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("cannot run pg_ctl status")?
            .success();
        if !running {
            return Ok(None);
        }
        // The fourth line of postmaster.pid is the port.
        let port = pid_file
            .lines()
            .nth(3)
            .and_then(|line| line.trim().parse().ok());
        port.map(Some)
            .with_context(|| format!("{}/postmaster.pid records no port", self.data_dir.display()))
    }

    async fn pg_ctl_start(&self, state_dir: &Path) -> anyhow::Result<()> {
        let log = state_dir.join("postgres.log");
        // Too long a socket path would keep the server from starting; without a socket the
        // cluster is still reachable over TCP, which is all the platform uses.
        let socket_dir = state_dir.to_string_lossy();
        let socket_dir = if socket_dir.len() <= MAX_SOCKET_DIR_LEN {
            &socket_dir
        } else {
            ""
        };
        // pg_ctl hands these to the server through /bin/sh.
        let server_options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            shell_quote(socket_dir)
        );
        let args = [
            OsStr::new("start"),
            OsStr::new("-D"),
            self.data_dir.as_os_str(),
            OsStr::new("-l"),
            log.as_os_str(),
            OsStr::new("-w"),
            OsStr::new("-o"),
            OsStr::new(&server_options),
        ];
        tracing::info!(port = self.port, "starting the private PostgreSQL cluster");
        let started = run(
            &mut self.run_as.command(&self.pg_ctl, &args),
            "pg_ctl start",
        )
        .await;
        let Err(error) = started else {
            return Ok(());
        };
        let log_text = tokio::fs::read_to_string(&log).await.unwrap_or_default();
        let lines: Vec<&str> = log_text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        bail!("{error:#}\n{}:\n{tail}", log.display())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        if !self.stop_on_exit {
            return Ok(());
        }
        self.stop_on_exit = false;
        run(
            &mut self.run_as.command(&self.pg_ctl, &self.stop_args()),
            "pg_ctl stop",
        )
        .await?;
        tracing::info!("stopped the private PostgreSQL cluster");
        Ok(())
    }

    fn stop_args(&self) -> [&OsStr; 6] {
        let [stop, dash_d, mode, fast, wait] = ["stop", "-D", "-m", "fast", "-w"].map(OsStr::new);
        [stop, dash_d, self.data_dir.as_os_str(), mode, fast, wait]
    }
}

impl Drop for PrivateCluster {
    /// Best effort, for a run that ends without `shutdown` (an error, a panic).
    fn drop(&mut self) {
        if self.stop_on_exit {
            let stopped = self
                .run_as
                .std_command(&self.pg_ctl, &self.stop_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !stopped.is_ok_and(|status| status.success()) {
                let data_dir = self.data_dir.display();
                tracing::warn!(%data_dir, "could not stop the private PostgreSQL cluster");
            }
        }
    }
}

/// The port of the previous run while it is free, so that clients set up by hand keep working;
/// else any free port. Another process could take it before the server binds it: the server
/// then fails to start and its log says why.
fn choose_port(state_dir: &Path) -> anyhow::Result<u16> {
    let file = state_dir.join("port");
    let previous = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    if let Some(port) = previous.filter(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok()) {
        return Ok(port);
    }
    let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
    std::fs::write(&file, format!("{port}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(port)
}

/// Who runs `initdb` and `pg_ctl`.
enum RunAs {
    /// This process's user.
    Myself,
    /// An unprivileged OS user, because PostgreSQL refuses to run as root; through `runuser`,
    /// or `su` where there is none (macOS, busybox).
    User {
        name: String,
        runuser: Option<PathBuf>,
    },
}

impl RunAs {
    async fn detect() -> anyhow::Result<Self> {
        if run(Command::new("id").arg("-u"), "id -u").await? != "0" {
            return Ok(Self::Myself);
        }
        let mut name = None;
        for candidate in ["postgres", "nobody"] {
            let exists = Command::new("id")
                .arg(candidate)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if exists.is_ok_and(|status| status.success()) {
                name = Some(candidate.to_owned());
                break;
            }
        }
        let name = name.context(
            "PostgreSQL refuses to run as root and there is no `postgres` or `nobody` OS user to \
             run it as: create one, run as a regular user, or set DATABASE_URL",
        )?;
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file());
        tracing::info!(
            user = name,
            "running as root: the private PostgreSQL cluster runs as an unprivileged user"
        );
        Ok(Self::User { name, runuser })
    }

    fn command(&self, program: &Path, args: &[&OsStr]) -> Command {
        Command::from(self.std_command(program, args))
    }

    fn std_command(&self, program: &Path, args: &[&OsStr]) -> std::process::Command {
        let mut command = match self {
            Self::Myself => {
                let mut command = std::process::Command::new(program);
                command.args(args);
                command
            }
            Self::User {
                name,
                runuser: Some(runuser),
            } => {
                let mut command = std::process::Command::new(runuser);
                command.args(["-u", name, "--"]).arg(program).args(args);
                command
            }
            Self::User {
                name,
                runuser: None,
            } => {
                let line = std::iter::once(program.as_os_str())
                    .chain(args.iter().copied())
                    .map(|arg| shell_quote(&arg.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut command = std::process::Command::new("su");
                command.args(["-s", "/bin/sh", name, "-c", &line]);
                command
            }
        };
        // The user may not be allowed into our working directory; every path passed is absolute.
        command.current_dir("/");
        command
    }

    /// Hands `state_dir` to the user the server runs as, and checks that user can reach it.
    async fn take_over(&self, state_dir: &Path) -> anyhow::Result<()> {
        let Self::User { name, .. } = self else {
            return Ok(());
        };
        run(
            Command::new("chown").arg("-R").arg(name).arg(state_dir),
            "chown",
        )
        .await?;
        if self.test("-w", state_dir).await {
            return Ok(());
        }
        // Some directory above is closed to the user (/root is 0700). Rather than open it up
        // behind the developer's back, or keep the data somewhere outside the project where
        // nobody would look for it, say what stands in the way.
        let mut blocking = state_dir;
        for ancestor in state_dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if !self.test("-x", ancestor).await {
                blocking = ancestor;
                break;
            }
        }
        let (wanted, blocking) = (state_dir.display(), blocking.display());
        bail!(
            "PostgreSQL refuses to run as root, so the private cluster runs as the OS user \
             `{name}`, which cannot reach {wanted} because it may not enter {blocking}: allow it \
             (chmod o+x {blocking}), run framegate dev as a regular user, or set DATABASE_URL"
        )
    }

    /// `test <flag> <path>` as the user.
    async fn test(&self, flag: &str, path: &Path) -> bool {
        let status = self
            .command(Path::new("test"), &[OsStr::new(flag), path.as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        status.is_ok_and(|status| status.success())
    }
}

/// Runs `command` to completion; its trimmed stdout, or an error carrying its stderr.
async fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Instant;

    use super::*;

    /// A temporary directory with `mode`: as root, the cluster's user may enter 0755, not 0700.
    fn temp_dir(mode: u32) -> tempfile::TempDir {
        tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempdir()
            .expect("temp dir")
    }

    async fn query_one(url: &str, sql: &str) -> Result<String, sqlx::Error> {
        let mut connection = PgConnection::connect(url).await?;
        let value: String = sqlx::query_scalar(sql).fetch_one(&mut connection).await?;
        connection.close().await?;
        Ok(value)
    }

    fn port_of(database: &DevDatabase) -> u16 {
        database.cluster.as_ref().expect("a private cluster").port
    }

    fn accepts_connections(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[tokio::test]
    async fn a_private_cluster_keeps_its_data_between_runs_and_stops_on_shutdown() {
        let dir = temp_dir(0o755);
        let state_dir = dir.path().join("postgres");

        let first = DevDatabase::private(&state_dir).await.expect("first start");
        let data_dir = std::fs::canonicalize(&state_dir)
            .expect("state dir")
            .join("data");
        assert_eq!(first.source(), &DatabaseSource::PrivateCluster { data_dir });
        let port = port_of(&first);
        assert_eq!(
            first.url(),
            format!("postgres://framegate@127.0.0.1:{port}/framegate")
        );
        assert_eq!(
            query_one(first.url(), "SELECT current_database()::text")
                .await
                .expect("query"),
            "framegate"
        );
        let mut connection = PgConnection::connect(first.url()).await.expect("connect");
        sqlx::raw_sql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('from run one')")
            .execute(&mut connection)
            .await
            .expect("create table");
        connection.close().await.expect("close");
        first.shutdown().await.expect("shutdown");
        assert!(
            !accepts_connections(port),
            "the cluster still listens on {port}"
        );

        let second = DevDatabase::private(&state_dir)
            .await
            .expect("second start");
        assert_eq!(port_of(&second), port, "the port of the last run is reused");
        assert_eq!(
            query_one(second.url(), "SELECT note FROM kept")
                .await
                .expect("query"),
            "from run one"
        );
        second.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn a_pid_file_left_by_a_killed_server_does_not_block_the_next_start() {
        let dir = temp_dir(0o755);
        let state_dir = dir.path().join("postgres");
        let first = DevDatabase::private(&state_dir).await.expect("first start");
        let pid_file = state_dir.join("data/postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("pid file");
        let pid = pid.lines().next().expect("pid line").to_owned();
        let killed = Command::new("kill").args(["-KILL", &pid]).status().await;
        assert!(killed.is_ok_and(|status| status.success()));
        // Without its postmaster the server's other processes exit on their own.
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepts_connections(port_of(&first)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(first);
        assert!(pid_file.exists(), "the killed server left its pid file");

        let second = DevDatabase::private(&state_dir)
            .await
            .expect("start after a kill");
        assert_eq!(
            query_one(second.url(), "SELECT current_database()::text")
                .await
                .expect("query"),
            "framegate"
        );
        second.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn a_configured_url_is_used_as_it_is() {
        let dir = temp_dir(0o755);
        let state_dir = dir.path().join("postgres");
        let url = "postgres://someone:secret@db.example:6543/elsewhere?sslmode=require";
        let database = DevDatabase::resolve(Some(url.to_owned()), &state_dir)
            .await
            .expect("resolve");
        assert_eq!(database.url(), url);
        assert_eq!(database.source(), &DatabaseSource::Configured);
        assert!(!state_dir.exists(), "no private cluster was prepared");
        database.shutdown().await.expect("shutdown");
    }

    /// Needs the machine's own server: trust authentication on 127.0.0.1:5432.
    #[tokio::test]
    async fn without_database_url_the_running_local_server_is_used() {
        let dir = temp_dir(0o755);
        let state_dir = dir.path().join("postgres");
        let database = DevDatabase::resolve(None, &state_dir)
            .await
            .expect("resolve");
        assert_eq!(database.source(), &DatabaseSource::LocalServer);
        assert!(database.url().ends_with("@127.0.0.1:5432/framegate"));
        assert_eq!(
            query_one(database.url(), "SELECT current_database()::text")
                .await
                .expect("query"),
            "framegate"
        );
        assert!(!state_dir.exists(), "no private cluster was prepared");
    }

    /// Needs the machine's own server: trust authentication on 127.0.0.1:5432.
    #[tokio::test]
    async fn the_local_server_probe_creates_a_missing_database() {
        let name = format!("framegate_probe_{}", uuid::Uuid::new_v4().simple());
        let endpoints = local_endpoints();
        let roles = ["no_such_role".to_owned(), "postgres".to_owned()];
        let url = local_server(&endpoints, &roles, &name)
            .await
            .expect("a usable local server");
        assert_eq!(url, format!("postgres://postgres@127.0.0.1:5432/{name}"));
        let current = query_one(&url, "SELECT current_database()::text").await;
        let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .expect("admin");
        sqlx::raw_sql(&format!("DROP DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("drop the probe database");
        assert_eq!(current.expect("query"), name);
    }

    #[tokio::test]
    async fn unreachable_local_servers_are_skipped_quickly() {
        let free_port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let endpoints = [
            Endpoint::Tcp {
                host: "127.0.0.1".to_owned(),
                port: free_port,
            },
            Endpoint::Socket {
                dir: PathBuf::from("/nonexistent"),
                port: DEFAULT_PORT,
            },
        ];
        let started = Instant::now();
        let found = local_server(&endpoints, &["postgres".to_owned()], DATABASE).await;
        assert_eq!(found, None);
        assert!(started.elapsed() < PROBE_TIMEOUT);
    }

    #[test]
    fn missing_server_binaries_say_what_to_install() {
        let empty = temp_dir(0o755);
        let error = ServerBinaries::locate(Some(empty.path().as_os_str()), empty.path())
            .expect_err("nothing to find");
        let message = error.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("brew install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn the_newest_complete_installed_version_is_used() {
        let versions = temp_dir(0o755);
        let install = |version: &str, programs: &[&str]| {
            let bin = versions.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).expect("bin dir");
            for program in programs {
                std::fs::write(bin.join(program), "").expect("program");
            }
            bin
        };
        install("9.6", &["initdb", "pg_ctl"]);
        let fifteen = install("15", &["initdb", "pg_ctl"]);
        install("16", &["initdb"]);
        let empty_path = temp_dir(0o755);
        let found = ServerBinaries::locate(Some(empty_path.path().as_os_str()), versions.path())
            .expect("found");
        assert_eq!(found, ServerBinaries::in_dir(&fifteen).expect("15"));

        let on_path = install("path", &["initdb", "pg_ctl"]);
        let found =
            ServerBinaries::locate(Some(on_path.as_os_str()), versions.path()).expect("found");
        assert_eq!(found.pg_ctl, on_path.join("pg_ctl"), "PATH comes first");
    }

    #[tokio::test]
    async fn as_root_commands_run_as_the_unprivileged_user_through_runuser_or_su() {
        let Ok(RunAs::User { name, runuser }) = RunAs::detect().await else {
            return; // Only root hands the cluster to another user.
        };
        let argument = "it's  two words";
        for runuser in [runuser, None] {
            let run_as = RunAs::User {
                name: name.clone(),
                runuser,
            };
            let script = [
                OsStr::new("-c"),
                OsStr::new("id -un; echo \"$0\""),
                OsStr::new(argument),
            ];
            let output = run(&mut run_as.command(Path::new("/bin/sh"), &script), "sh")
                .await
                .expect("runs");
            assert_eq!(output, format!("{name}\n{argument}"));
        }
    }

    #[tokio::test]
    async fn as_root_a_state_dir_the_server_user_cannot_enter_is_reported() {
        if !matches!(RunAs::detect().await, Ok(RunAs::User { .. })) {
            return; // Only root hands the cluster to another user.
        }
        let closed = temp_dir(0o700);
        let error = DevDatabase::private(&closed.path().join("postgres"))
            .await
            .err()
            .expect("the server user cannot enter a 0700 directory");
        let message = error.to_string();
        let closed = std::fs::canonicalize(closed.path()).expect("path");
        assert!(
            message.contains(&format!("chmod o+x {}", closed.display())),
            "{message}"
        );
    }
}

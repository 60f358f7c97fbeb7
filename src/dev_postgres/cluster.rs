//! The private cluster `framegate dev` starts when no server runs: the installed server
//! binaries, `initdb` and `pg_ctl` under the state directory, and who they run as.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{anyhow, bail, Context as _};
use sqlx::postgres::PgConnectOptions;
use tokio::process::Command;

use super::{ensure_database, CLUSTER_SUPERUSER, DATABASE, MAX_SOCKET_DIR_LEN, MISSING_BINARIES};

/// `initdb` and `pg_ctl`, from one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerBinaries {
    pub(super) initdb: PathBuf,
    pub(super) pg_ctl: PathBuf,
}

impl ServerBinaries {
    /// The first directory of `path` (a PATH value) holding both, else the newest version under
    /// `installed_versions` (Debian keeps the server binaries off PATH).
    pub(super) fn locate(path: Option<&OsStr>, installed_versions: &Path) -> anyhow::Result<Self> {
        let on_path: Vec<PathBuf> = path
            .map(|path| std::env::split_paths(path).collect())
            .unwrap_or_default();
        on_path
            .iter()
            .find_map(|dir| Self::in_dir(dir))
            .or_else(|| newest_installed(installed_versions))
            .ok_or_else(|| anyhow!(MISSING_BINARIES))
    }

    pub(super) fn in_dir(dir: &Path) -> Option<Self> {
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
pub(super) struct PrivateCluster {
    pg_ctl: PathBuf,
    run_as: RunAs,
    pub(super) data_dir: PathBuf,
    pub(super) port: u16,
    /// Only a server this run started is stopped by it. One found running (another
    /// `framegate dev`, or a server that outlived a killed run) is left as it was.
    stop_on_exit: bool,
}

impl PrivateCluster {
    pub(super) async fn start(binaries: ServerBinaries, state_dir: &Path) -> anyhow::Result<Self> {
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

    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
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
pub(super) enum RunAs {
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
    pub(super) async fn detect() -> anyhow::Result<Self> {
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

    pub(super) fn command(&self, program: &Path, args: &[&OsStr]) -> Command {
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
pub(super) async fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
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

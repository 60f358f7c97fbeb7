//! Tests of `framegate dev`'s database: the configured URL, the local server, the private cluster.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Instant;

use super::cluster::RunAs;
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
    let found = ServerBinaries::locate(Some(on_path.as_os_str()), versions.path()).expect("found");
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

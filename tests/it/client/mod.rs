//! `framegate client` end to end: the real binary against `framegate dev`, without a terminal
//! (plain lines, one JSON document with `--json`, no escape codes) and in a pseudo-terminal
//! (the progress bar, the password prompt without echo, Ctrl-C detaching or cancelling).

mod plain;
mod terminal;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use crate::common::{png, PASSWORD};
use crate::common::{Dev, PATIENCE};
use framegate_workers::media::{probe, MediaTools};
use serde_json::Value;

/// The client as one user on one machine: their own config directory and working directory.
pub struct Client {
    pub config: tempfile::TempDir,
    pub workdir: tempfile::TempDir,
    server: String,
}

impl Client {
    pub fn new(dev: &Dev) -> Client {
        Client {
            config: tempfile::tempdir().expect("config dir"),
            workdir: tempfile::tempdir().expect("work dir"),
            server: dev.base.clone(),
        }
    }

    /// `framegate client ARGS` with this user's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_framegate"));
        command.arg("client").args(args);
        self.environment(&mut command);
        command
    }

    /// This user's working directory, config directory and server; no key from the
    /// machine running the tests.
    fn environment(&self, command: &mut Command) {
        command
            .current_dir(self.workdir.path())
            .env("XDG_CONFIG_HOME", self.config.path())
            .env("FRAMEGATE_SERVER", &self.server)
            .env_remove("FRAMEGATE_API_KEY");
    }

    /// Runs it without a terminal, `stdin` as its input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run framegate client");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait")
    }

    /// `--json ARGS`, which must succeed; its stdout is one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(&all, "");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output));
        assert_no_escapes(&output);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not one JSON document ({e}): {}",
                text(&output)
            )
        })
    }

    pub fn credentials(&self) -> PathBuf {
        self.config
            .path()
            .join("framegate")
            .join("credentials.json")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.workdir.path().join(name)
    }

    /// Runs it in a pseudo-terminal through `pty_run.py`: each step types its keys once its
    /// text has appeared (a secret once the terminal's echo is off, too). Returns the exit
    /// code and everything written to the terminal.
    pub fn in_terminal(&self, steps: &[Step<'_>], args: &[&str]) -> (Option<i32>, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/client/pty_run.py");
        let transcript = self.workdir.path().join("transcript.txt");
        let python =
            std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut command = Command::new(&python);
        command.arg(&script).arg(&transcript);
        for step in steps {
            let (flag, text, keys) = match step {
                Step::Type(text, keys) => ("--step", text, keys),
                Step::Secret(text, keys) => ("--secret-step", text, keys),
            };
            command.arg(flag).arg(format!("{text}=>{keys}"));
        }
        command
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_framegate"))
            .arg("client")
            .args(args)
            .stdin(Stdio::null());
        self.environment(&mut command);
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("run {python} (FRAMEGATE_TEST_CLIENTS_PYTHON): {e}"));
        let written = std::fs::read(&transcript).expect("transcript");
        (
            status.code(),
            String::from_utf8_lossy(&written).into_owned(),
        )
    }
}

/// What `in_terminal` types, and when: `(text to wait for, keys)` in Python escapes.
pub enum Step<'a> {
    Type(&'a str, &'a str),
    /// Typed only once echo is off: a password prompt flushes what was typed before.
    Secret(&'a str, &'a str),
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Neither stream holds an escape code (no bar, no colours, no cursor movement).
pub fn assert_no_escapes(output: &Output) {
    assert!(
        !output.stdout.contains(&0x1b) && !output.stderr.contains(&0x1b),
        "escape codes without a terminal: {}",
        text(output)
    );
}

/// ffprobe reads `file` as an H.264 video of about `seconds`.
pub async fn assert_playable(file: &Path, seconds: u64) {
    let report = probe(&MediaTools::from_env().expect("tools"), file)
        .await
        .expect("ffprobe");
    assert_eq!(report.codec, "h264");
    let expected = seconds * 1000;
    assert!(
        report.duration_ms.abs_diff(expected) <= 150,
        "{} ms, expected {expected}",
        report.duration_ms
    );
}

/// Reads video `id` until `done` says so.
pub fn wait_for(client: &Client, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let video = client.json(&["videos", "get", id]);
        if done(&video) {
            return video;
        }
        assert!(Instant::now() < deadline, "video {id} stuck: {video}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The credits once nothing is reserved any more (settlement captures or releases a finished
/// video's reservation shortly after its end).
pub fn settled_credits(client: &Client) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let credits = client.json(&["credits"]);
        if credits["reserved"] == 0 {
            return credits;
        }
        assert!(Instant::now() < deadline, "still reserved: {credits}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

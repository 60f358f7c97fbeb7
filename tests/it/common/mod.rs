//! `framegate dev` as a child process, for the end-to-end tests.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use framegate_commands::testing::TestDatabase;
use framegate_domain::{Credits, ProviderPreference, UserId, VideoSpec};
use reqwest::StatusCode;

/// Job `n` of `owner`: two seconds of 480p from the simulator, 2 credits.
pub fn simulator_job(owner: UserId, n: impl std::fmt::Display) -> VideoSpec {
    VideoSpec {
        owner,
        prompt: format!("job {n}"),
        negative_prompt: None,
        provider: ProviderPreference::Simulator,
        model: Some("simulator-v1".into()),
        duration_seconds: 2,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(2),
        generate_audio: false,
        external_id: None,
        webhook: None,
    }
}

/// A 640×480 PNG, red on the left and blue on the right.
pub fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(640, 480, |x, _| {
        if x < 320 {
            image::Rgb([220, 30, 30])
        } else {
            image::Rgb([30, 30, 220])
        }
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("png");
    bytes
}

/// The password `Dev::register` registers with.
pub const PASSWORD: &str = "correct horse battery staple";

/// How long any one wait may take before a test gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Settings of the machine running the tests that would change which providers run.
const FOREIGN_SETTINGS: [&str; 5] = [
    "FRAMEGATE_VEO_",
    "FRAMEGATE_SORA_",
    "FRAMEGATE_KLING_",
    "FRAMEGATE_SIMULATOR",
    "FRAMEGATE_PROVIDER_",
];

/// `framegate dev` on a free port with its own state directory; killed if the test ends
/// without interrupting it.
pub struct Dev {
    child: Child,
    pub base: String,
    pub state_dir: tempfile::TempDir,
    /// How it was started, to start it again the same way.
    url: String,
    port: u16,
    env: Vec<(String, String)>,
}

impl Dev {
    /// Starts it against `db` with `env` on top of the test defaults.
    pub fn start(db: &TestDatabase, env: &[(&str, String)]) -> Dev {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let state_dir = tempfile::tempdir().expect("state dir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let child = spawn(db.url(), state_dir.path(), port, &env);
        Dev {
            child,
            base: format!("http://127.0.0.1:{port}"),
            state_dir,
            url: db.url().to_owned(),
            port,
            env,
        }
    }

    /// SIGKILL, as a supervisor's hard stop or a crash would end it, then the same command
    /// again on the same port and state (its secrets with it).
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill(); // std's kill is SIGKILL on Unix
        let _ = self.child.wait();
        self.child = spawn(&self.url, self.state_dir.path(), self.port, &self.env);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(response) = client.get(self.url("/health/ready")).send().await {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("framegate dev did not become ready");
    }

    /// SIGINT, as Ctrl-C sends; the process must exit cleanly and soon.
    pub fn interrupt(self) -> std::process::ExitStatus {
        self.signal("INT")
    }

    /// SIGTERM, as a supervisor stops it; the process must exit cleanly and soon.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    fn signal(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "framegate dev ignored SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Dev {
    /// Registers `email` (the password is `PASSWORD`) and verifies it, as a user would: a
    /// verified user with the sign-up credits.
    pub async fn register(&self, client: &reqwest::Client, email: &str) {
        let registered = client
            .post(self.url("/v1/auth/register"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("register");
        assert_eq!(registered.status(), StatusCode::CREATED);
        self.verify_email(client, email).await;
    }

    /// Registers and verifies `email` and logs in; returns the access token.
    pub async fn sign_up(&self, client: &reqwest::Client, email: &str) -> String {
        self.register(client, email).await;
        let login: serde_json::Value = client
            .post(self.url("/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        login["access_token"].as_str().expect("token").to_owned()
    }

    /// Verifies `email` with the token `framegate dev` mailed to it (the newest), as a user
    /// would: the sign-up credits arrive with it.
    pub async fn verify_email(&self, client: &reqwest::Client, email: &str) {
        let mailbox = self.state_dir.path().join("mailbox");
        let mail = framegate_api::mail::read_mailbox(&mailbox)
            .expect("dev mailbox")
            .into_iter()
            .rev()
            .find(|mail| mail.to.contains(email))
            .unwrap_or_else(|| panic!("no mail to {email}"));
        let token = mail
            .body
            .lines()
            .map(str::trim)
            .find(|line| {
                line.split_once('.').is_some_and(|(id, rest)| {
                    id.parse::<uuid::Uuid>().is_ok() && !rest.is_empty() && !rest.contains(' ')
                })
            })
            .unwrap_or_else(|| panic!("no token in mail: {}", mail.body))
            .to_owned();
        let verified = client
            .post(self.url("/v1/auth/verify-email"))
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .expect("verify");
        assert_eq!(verified.status(), reqwest::StatusCode::OK, "verify {email}");
    }
}

fn spawn(url: &str, state_dir: &std::path::Path, port: u16, env: &[(String, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_framegate"));
    command.arg("dev");
    for (name, _) in std::env::vars() {
        if FOREIGN_SETTINGS
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    command
        .env("DATABASE_URL", url)
        .env("FRAMEGATE_DEV_DIR", state_dir)
        .env("FRAMEGATE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("FRAMEGATE_LOG", "warn")
        .envs(env.iter().cloned());
    command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start framegate dev")
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

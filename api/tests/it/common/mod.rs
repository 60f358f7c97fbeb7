//! `TestApp`: the real router on a random port, its own database, projectors running, a
//! private mailbox directory and cheap password hashing.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

pub mod pictures;
pub mod stripe;

use std::net::SocketAddr;
use std::path::PathBuf;

use argon2::Params;
use framegate_api::config::ApiConfig;
use framegate_api::mail::read_mailbox;
use framegate_api::AppState;
use framegate_commands::blobs::Blobs;
use framegate_commands::passwords::PasswordHasher;
use framegate_commands::testing::TestDatabase;
use framegate_projections::notify::Notifications;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    pub mailbox: PathBuf,
    pub db: TestDatabase,
    stop: watch::Sender<bool>,
    /// Stops only the asynchronous read-model projectors.
    projectors: watch::Sender<bool>,
    projector_tasks: std::sync::Mutex<Vec<ProjectorTask>>,
}

type ProjectorTask = tokio::task::JoinHandle<Result<(), framegate_projections::SubscriptionError>>;

impl TestApp {
    pub async fn spawn() -> Self {
        Self::with_config(|_| {}).await
    }

    pub async fn with_config(adjust: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::with_config_and_blobs(adjust, None).await
    }

    /// Like [`TestApp::spawn`], storing files in `blobs` (an S3 store, say) instead of the
    /// configured filesystem directory.
    pub async fn with_blobs(blobs: Blobs) -> Self {
        Self::with_config_and_blobs(|_| {}, Some(blobs)).await
    }

    async fn with_config_and_blobs(
        adjust: impl FnOnce(&mut ApiConfig),
        blobs: Option<Blobs>,
    ) -> Self {
        let db = TestDatabase::new().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mailbox = std::env::temp_dir().join(format!("framegate-mail-{}", Uuid::new_v4()));
        let mut config = ApiConfig::development();
        config.mail.mailbox_dir = mailbox.clone();
        config.rate.anonymous_per_minute = 10_000;
        config.rate.login_per_minute = 10_000;
        config.public_url = format!("http://{addr}");
        config.blobs.public_url = config.public_url.clone();
        config.blobs.dir = std::env::temp_dir().join(format!("framegate-blobs-{}", Uuid::new_v4()));
        adjust(&mut config);
        let params = Params::new(1024, 1, 1, None).expect("argon2 params");
        let passwords = PasswordHasher::with_params(params, 4).expect("hasher");
        let mut state =
            AppState::with_passwords(config, db.pool.clone(), passwords).expect("state");
        if let Some(blobs) = blobs {
            state = state.with_blobs(blobs);
        }
        let (stop, stopped) = watch::channel(false);
        // As `framegate api` runs it: one listener for the process, the credential cache in
        // play in every API test, projectors that can be stopped on their own.
        let (notifications, _listening) = Notifications::spawn(db.pool.clone(), stopped.clone());
        let (projectors, projectors_stopped) = watch::channel(false);
        let projector_tasks = framegate_projections::read_models::spawn_all_with(
            db.pool.clone(),
            &notifications,
            projectors_stopped,
        );
        framegate_api::spawn_credentials_listener(&state, &notifications, stopped.clone());
        framegate_api::spawn_mail_sender(&state, &notifications, stopped.clone());
        framegate_api::spawn_streams(&state, &notifications, stopped.clone());
        let server_state = state.clone();
        let mut shutdown = stopped;
        tokio::spawn(async move {
            let _ = framegate_api::serve(server_state, listener, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        });
        Self {
            addr,
            client: reqwest::Client::new(),
            state,
            mailbox,
            db,
            stop,
            projectors,
            projector_tasks: std::sync::Mutex::new(projector_tasks),
        }
    }

    /// Stops the asynchronous read-model projectors (the API goes on) and waits until they
    /// have: from then on only what the API's own transactions write reaches the read models.
    pub async fn stop_projectors(&self) {
        let _ = self.projectors.send(true);
        let tasks = std::mem::take(&mut *self.projector_tasks.lock().expect("tasks"));
        for task in tasks {
            task.await.expect("projector task").expect("projector");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token, None).await
    }

    /// Registers `email` and returns the new user's id.
    pub async fn register(&self, email: &str) -> Uuid {
        let response = self
            .post(
                "/v1/auth/register",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// The newest mail to `email` whose subject contains `subject`, waiting up to ten seconds
    /// for it (mail from the outbox is sent off the request path).
    pub async fn mail_to(&self, email: &str, subject: &str) -> framegate_api::mail::StoredMail {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mails = read_mailbox(&self.mailbox).expect("mailbox");
            if let Some(mail) = mails
                .into_iter()
                .rev()
                .find(|m| m.to.contains(email) && m.subject.contains(subject))
            {
                return mail;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mail to {email} about {subject:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The newest one-time token mailed to `email` (`<uuid>.<secret>` on a line of its own),
    /// waiting for the mail.
    pub async fn mailed_token(&self, email: &str) -> String {
        self.mailed_token_about(email, "").await
    }

    /// [`TestApp::mailed_token`] from the newest mail whose subject contains `subject`.
    pub async fn mailed_token_about(&self, email: &str, subject: &str) -> String {
        let mail = self.mail_to(email, subject).await;
        mail.body
            .lines()
            .map(str::trim)
            .find(|line| {
                line.split_once('.')
                    .is_some_and(|(id, rest)| id.parse::<Uuid>().is_ok() && !rest.is_empty())
            })
            .unwrap_or_else(|| panic!("no token in mail: {}", mail.body))
            .to_owned()
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers, verifies and logs in; returns (user id, access token, refresh token).
    pub async fn signed_in_user(&self, email: &str) -> (Uuid, String, String) {
        let id = self.register(email).await;
        let token = self.mailed_token(email).await;
        let verified = self
            .post("/v1/auth/verify-email", None, json!({"token": token}))
            .await;
        assert_eq!(verified.status(), StatusCode::OK);
        let login: Value = self
            .login(email, PASSWORD)
            .await
            .json()
            .await
            .expect("json");
        (
            id,
            login["access_token"].as_str().expect("access").to_owned(),
            login["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    }

    /// A signed-in administrator (promoted through the event store, as the CLI does).
    pub async fn admin(&self, email: &str) -> (Uuid, String) {
        let (id, _, _) = self.signed_in_user(email).await;
        let meta =
            framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::System);
        // The users read model is written inline: the new role is visible once this returns.
        self.state
            .store
            .users()
            .execute(
                &id.to_string(),
                framegate_domain::UserCommand::ChangeRole {
                    role: framegate_domain::Role::Admin,
                },
                &meta,
            )
            .await
            .expect("promote")
            .expect("written");
        let login: Value = self
            .login(email, PASSWORD)
            .await
            .json()
            .await
            .expect("json");
        (
            id,
            login["access_token"].as_str().expect("access").to_owned(),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.projectors.send(true);
        let _ = std::fs::remove_dir_all(&self.mailbox);
    }
}

/// Asserts a problem+json response with `status` and `code`; returns the document.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    assert!(
        body["request_id"].is_string(),
        "problem carries the request id"
    );
    body
}

//! `login` and `logout`: credentials for one server into and out of the credentials file.
//!
//! An API key (`--api-key KEY`, or `--api-key -` / a key piped on stdin) is checked with
//! `GET /v1/me` and stored as it is. Email and password (the password prompted without echo
//! on a terminal, else read from stdin) are exchanged for an access and a refresh token; the
//! access token is renewed with the refresh token when it expires (`api::Api::refresh`).

use std::io::{BufRead as _, IsTerminal as _};

use reqwest::Method;
use serde_json::{json, Value};

use super::api::{self, Api};
use super::config::{Credentials, Store};
use super::error::{ClientError, Exit};
use super::output::Output;
use super::server;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Log in with an API key (`fg_...`); `-` reads it from stdin. Without this or --email,
    /// a key is read from stdin when stdin is not a terminal.
    #[arg(long, conflicts_with = "email")]
    pub api_key: Option<String>,
    /// Log in with this email address; the password is prompted for without echo on a
    /// terminal, else read (one line) from stdin.
    #[arg(long)]
    pub email: Option<String>,
}

pub async fn login(
    args: LoginArgs,
    server: Option<&str>,
    output: Output,
) -> Result<Exit, ClientError> {
    let store = Store::locate()?;
    let file = store.load()?;
    let (base, _) = server::choose(server, &file)?;
    if let Some(warning) = server::plain_http_warning(&base) {
        // Said even with --json (stderr only): it is about the user's secret.
        eprintln!("{warning}");
    }
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let credentials = match (args.api_key, args.email) {
        (Some(key), _) if key != "-" => api_key(&base, key).await?,
        (Some(_), _) => api_key(&base, read_stdin_line("API key")?).await?,
        (None, Some(email)) => password_login(&base, email, stdin_is_terminal).await?,
        (None, None) if !stdin_is_terminal => api_key(&base, read_stdin_line("API key")?).await?,
        (None, None) => {
            let email = prompt("Email: ")?;
            password_login(&base, email, true).await?
        }
    };
    let (credentials, me) = credentials;
    // Read again under the lock: a refresh or another login may have saved meanwhile.
    let _lock = store.lock()?;
    let mut file = store.load()?;
    file.servers.insert(base.clone(), credentials);
    file.default_server = Some(base.clone());
    store.save(&file)?;
    let result = json!({
        "server": base,
        "user": me,
        "credentials_file": store.path().display().to_string(),
    });
    output.result(&result, |_| {
        format!(
            "Logged in to {base} as {} (credentials in {}).",
            me["email"].as_str().unwrap_or("?"),
            store.path().display()
        )
    });
    Ok(Exit::Success)
}

async fn api_key(base: &str, key: String) -> Result<(Credentials, Value), ClientError> {
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(ClientError::Usage("the API key is empty".to_owned()));
    }
    let credentials = Credentials::ApiKey { key };
    let me = whoami(base, &credentials).await?;
    Ok((credentials, me))
}

async fn password_login(
    base: &str,
    email: String,
    stdin_is_terminal: bool,
) -> Result<(Credentials, Value), ClientError> {
    let password = if stdin_is_terminal {
        // One write: the prompt whole, then echo off.
        let prompt = format!("Password for {email}: ");
        eprint!("{prompt}");
        console::Term::stderr()
            .read_secure_line()
            .map_err(|e| ClientError::local("reading the password", e))?
    } else {
        read_stdin_line("password")?
    };
    let mut anonymous = Api::anonymous(base.to_owned())?;
    let tokens = anonymous
        .call(
            Method::POST,
            "/v1/auth/login",
            Some(&json!({ "email": email.trim(), "password": password })),
        )
        .await?;
    let credentials = api::tokens_from(&tokens, Some(email.trim().to_owned()))?;
    let me = whoami(base, &credentials).await?;
    Ok((credentials, me))
}

/// `GET /v1/me` with `credentials`: they work, and whose they are.
async fn whoami(base: &str, credentials: &Credentials) -> Result<Value, ClientError> {
    let token = match credentials {
        Credentials::ApiKey { key } => key,
        Credentials::Tokens { access_token, .. } => access_token,
    };
    let http = api::http_client()?;
    let response = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| ClientError::network(&e))?;
    api::read_json(api::check(response).await?).await
}

pub async fn logout(server: Option<&str>, output: Output) -> Result<Exit, ClientError> {
    let store = Store::locate()?;
    let lock = store.lock()?;
    let mut file = store.load()?;
    let (base, _) = server::choose(server, &file)?;
    let Some(credentials) = file.servers.remove(&base) else {
        return Err(ClientError::NotLoggedIn { server: base });
    };
    if file.default_server.as_deref() == Some(base.as_str()) {
        file.default_server = None;
    }
    store.save(&file)?;
    drop(lock);
    // A session is ended on the server too; an API key stays valid (revoke it with `keys`).
    let mut ended = false;
    if let Credentials::Tokens { refresh_token, .. } = &credentials {
        let mut anonymous = Api::anonymous(base.clone())?;
        match anonymous
            .call(
                Method::POST,
                "/v1/auth/logout",
                Some(&json!({ "refresh_token": refresh_token })),
            )
            .await
        {
            Ok(_) => ended = true,
            Err(error) => output.note(format_args!(
                "note: the server did not end the session: {error}"
            )),
        }
    }
    let result = json!({ "server": base, "session_ended": ended });
    output.result(&result, |_| format!("Logged out of {base}."));
    Ok(Exit::Success)
}

fn prompt(question: &str) -> Result<String, ClientError> {
    eprint!("{question}");
    let line = console::Term::stderr()
        .read_line()
        .map_err(|e| ClientError::local("reading the terminal", e))?;
    Ok(line.trim().to_owned())
}

/// One line of stdin, without its line ending.
fn read_stdin_line(what: &str) -> Result<String, ClientError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::local(format_args!("reading the {what} from stdin"), e))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        return Err(ClientError::Usage(format!("no {what} on stdin")));
    }
    Ok(line)
}

//! `framegate client …`: the command-line client of the REST API (ADR 0041).
//!
//! It talks HTTP to a Framegate server (`--server`, `FRAMEGATE_SERVER`, else the last
//! login's, else `framegate dev`'s http://127.0.0.1:8080), never to the database, with the
//! credentials `login` stored (`config`) or `FRAMEGATE_API_KEY`. One file per command group;
//! `api` is the HTTP side, `output` what is printed, `follow` and `wait` the `--wait` of a
//! video. Exit codes are in `error::Exit`.

mod api;
mod auth;
mod config;
mod credits;
mod download;
mod error;
mod follow;
mod images;
mod keys;
mod output;
mod server;
mod sse;
mod videos;
mod wait;

use error::{ClientError, Exit};
use output::Output;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 done, 1 error (the server refused, network, local file), \
2 usage, 3 a waited-for video failed or was cancelled, 4 not logged in or credentials refused, \
130 interrupted (Ctrl-C)."
)]
pub struct ClientArgs {
    /// The Framegate server [default: the last login's, else http://127.0.0.1:8080].
    #[arg(long, env = "FRAMEGATE_SERVER", global = true)]
    server: Option<String>,
    /// Print one JSON document on stdout (errors too) and nothing else: for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClientCommand {
    /// Store credentials for the server: an API key, or a login with email and password.
    Login(auth::LoginArgs),
    /// Forget the server's credentials (and end the login session on the server).
    Logout,
    /// Your credits: available, balance, reserved.
    Credits,
    /// Request, follow, list, cancel and download videos.
    Videos {
        #[command(subcommand)]
        command: videos::VideosCommand,
    },
    /// Upload, list and delete reference images.
    Images {
        #[command(subcommand)]
        command: images::ImagesCommand,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
}

/// Runs one client command; returns the process's exit code.
pub async fn run(args: ClientArgs) -> i32 {
    let output = Output::new(args.json);
    match dispatch(args, output).await {
        Ok(exit) => exit.code(),
        Err(error) => {
            output.error(&error);
            error.exit().code()
        }
    }
}

async fn dispatch(args: ClientArgs, output: Output) -> Result<Exit, ClientError> {
    let server = args.server.as_deref();
    match args.command {
        ClientCommand::Login(login) => auth::login(login, server, output).await,
        ClientCommand::Logout => auth::logout(server, output).await,
        ClientCommand::Credits => credits::run(&mut connect(server, output)?, output).await,
        ClientCommand::Videos { command } => {
            videos::run(command, &mut connect(server, output)?, output).await
        }
        ClientCommand::Images { command } => {
            images::run(command, &mut connect(server, output)?, output).await
        }
        ClientCommand::Keys { command } => {
            keys::run(command, &mut connect(server, output)?, output).await
        }
    }
}

/// The API with this user's credentials for the server the command names.
fn connect(server: Option<&str>, output: Output) -> Result<api::Api, ClientError> {
    // Without a config directory, FRAMEGATE_API_KEY can still do.
    let store = config::Store::locate().ok();
    let file = match &store {
        Some(store) => store.load()?,
        None => config::CredentialsFile::default(),
    };
    let (base, source) = server::choose(server, &file)?;
    if api::env_api_key().is_some() {
        if let Some(note) = server::env_key_note(source, &base) {
            output.note(note);
        }
    }
    api::Api::authenticated(base, store, &file)
}

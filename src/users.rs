//! `framegate users create`: make an account (typically the first admin) from the shell.

use std::io::Read as _;

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::{Subcommand, ValueEnum};
use framegate_commands::passwords::PasswordHasher;
use framegate_commands::users::{register, Registration};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{hash_token, Role, UserCommand, UserId};
use uuid::Uuid;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a verified user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required: passwords never go in argv).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, value_enum, default_value_t = RoleArg::User)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    User,
    Admin,
}

pub async fn run(command: UsersCommand, database_url: &str) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            email,
            password_stdin,
            role,
        } => {
            if !password_stdin {
                bail!("pass --password-stdin and the password on standard input");
            }
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 10 {
                bail!("the password must be at least 10 characters");
            }
            let pool = framegate_commands::db::connect(database_url, 2)
                .await
                .context("cannot connect to DATABASE_URL")?;
            framegate_commands::db::migrate(&pool).await?;
            let store = framegate_projections::inline::event_store(pool);
            let role = match role {
                RoleArg::User => Role::User,
                RoleArg::Admin => Role::Admin,
            };
            let user_id = create_verified(&store, &email, password, role).await?;
            println!("{user_id}");
            Ok(())
        }
    }
}

/// Registers `email` with `password` and `role`, its address already verified (an operator
/// vouches for it). Fails if the address is taken.
pub async fn create_verified(
    store: &EventStore,
    email: &str,
    password: &str,
    role: Role,
) -> anyhow::Result<UserId> {
    let hasher = PasswordHasher::owasp(1)?;
    let user_id = UserId::from_uuid(Uuid::now_v7());
    let token = format!("{user_id}.{}", Uuid::new_v4().simple());
    let meta = CommandMetadata::new_request(Actor::System);
    let registration = Registration {
        user_id,
        email: email.to_owned(),
        password_hash: hasher.hash(password).await?,
        verification_token_hash: hash_token(&token),
        verification_expires_at: Utc::now() + chrono::Duration::minutes(5),
        role,
    };
    register(store, registration, &meta)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the user: {e} ({})", e.code()))?;
    store
        .users()
        .execute(
            &user_id.to_string(),
            UserCommand::VerifyEmail { token },
            &meta,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot verify the user: {e}"))?;
    Ok(user_id)
}

//! The mail outbox: mail recorded by a request, delivered by a sender off the request path.
//!
//! A password-reset request must cost the same whether or not the address has an account
//! (issue 12.8: waiting for the SMTP send only for real accounts told them apart by timing).
//! So the request only records the address it was asked about ([`Outgoing::PasswordReset`]),
//! in one statement, and answers 202; the sender decides whether an account gets a token and
//! mails it. The confirmation that a password was reset goes the same way, and so do the
//! notification mails users opt into (`crate::notifications` records them from the log;
//! `super::notices` words them).
//!
//! Delivery is at least once: a row is claimed with `FOR UPDATE SKIP LOCKED` (several API
//! processes share the table), deleted when delivered, and retried with a growing delay when
//! not, for up to [`GIVE_UP_AFTER`]. A crash between the send and the delete sends it again. The
//! sender wakes on [`MAIL_CHANNEL`] and, as a fallback, every [`POLL`].

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use framegate_commands::users::registered_user_by_email;
use framegate_commands::{Actor, CommandError, CommandMetadata};
use framegate_domain::{hash_token, UserCommand, UserId};
use framegate_projections::notify::{Event, Notifications, MAIL_CHANNEL};
use framegate_projections::read_models::{api_keys, users};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::notices::Notice;
use crate::auth::one_time_token;
use crate::state::AppState;

/// How often the sender looks for due rows without being woken.
pub const POLL: Duration = Duration::from_secs(5);

/// The least time between two reset tokens mailed to one account.
pub const RESET_MAIL_INTERVAL: Duration = Duration::from_secs(60);

/// How long a row is retried before it is dropped (logged as an error): a reset token is
/// worth nothing after a day, and an SMTP outage shorter than that loses nothing.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What a row asks the sender to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outgoing {
    /// Someone asked to reset the password of `email`: mail a token if it has an account.
    PasswordReset {
        email: String,
        /// The request's metadata, for the event the sender records.
        request_id: uuid::Uuid,
        ip: IpAddr,
        user_agent: Option<String>,
    },
    /// The password of `user_id` was reset: confirm it, listing the API keys that survive it.
    PasswordWasReset { user_id: uuid::Uuid },
    /// A notification the user opted into, to the address they had when it was recorded.
    /// Its row's `kind` is the notice's (`video_completed`, `video_failed`, `credits_low`).
    Notice { to: String, notice: Notice },
    /// The webhook sender disabled an endpoint of `user_id` (written by the worker,
    /// `framegate_workers::webhooks::outcome`).
    WebhookDisabled {
        user_id: uuid::Uuid,
        endpoint_id: uuid::Uuid,
        url: Option<String>,
        /// `gone` or `failing`.
        reason: String,
        detail: String,
    },
}

impl Outgoing {
    fn kind(&self) -> &'static str {
        match self {
            Outgoing::PasswordReset { .. } => "password_reset",
            Outgoing::PasswordWasReset { .. } => "password_was_reset",
            Outgoing::Notice { notice, .. } => notice.kind(),
            Outgoing::WebhookDisabled { .. } => "webhook_disabled",
        }
    }
}

/// Records `mail` for the sender, and wakes it when the caller's transaction commits.
pub async fn enqueue(conn: &mut sqlx::PgConnection, mail: &Outgoing) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_value(mail).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "WITH queued AS (INSERT INTO mail_outbox (kind, payload) VALUES ($1, $2))
         SELECT pg_notify($3, '')",
    )
    .bind(mail.kind())
    .bind(payload)
    .bind(MAIL_CHANNEL)
    .execute(conn)
    .await?;
    Ok(())
}

/// Delivers due rows until `shutdown` flips.
pub fn spawn_sender(
    state: AppState,
    notifications: &Notifications,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut heard = notifications.subscribe();
    tokio::spawn(async move {
        loop {
            if let Err(error) = drain(&state).await {
                tracing::warn!(%error, "mail outbox: could not deliver");
            }
            let woken = async {
                loop {
                    match heard.recv().await {
                        Event::Notification { channel, .. } if channel == MAIL_CHANNEL => return,
                        Event::Missed => return,
                        _ => {}
                    }
                }
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    })
}

/// Delivers every row that is due; returns how many were delivered.
pub async fn drain(state: &AppState) -> Result<usize, sqlx::Error> {
    let mut delivered = 0;
    while let Some(outcome) = deliver_one(state).await? {
        delivered += usize::from(outcome);
    }
    Ok(delivered)
}

/// id, payload, attempts so far, whether the row is older than [`GIVE_UP_AFTER`]
type Row = (i64, serde_json::Value, i32, bool);

/// Claims the oldest due row and delivers it: `Some(true)` delivered, `Some(false)` put back
/// for later, `None` nothing was due.
async fn deliver_one(state: &AppState) -> Result<Option<bool>, sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, payload, attempts, created_at < now() - make_interval(secs => $1)
           FROM mail_outbox
          WHERE available_at <= now()
          ORDER BY id LIMIT 1
            FOR UPDATE SKIP LOCKED",
    )
    .bind(GIVE_UP_AFTER.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, payload, attempts, expired)) = row else {
        return Ok(None);
    };
    let result = match serde_json::from_value::<Outgoing>(payload) {
        Ok(mail) => deliver(state, mail).await,
        Err(error) => Err(format!("unreadable outbox row: {error}")),
    };
    let attempts = attempts + 1;
    let delivered = result.is_ok();
    match result {
        Ok(()) => {
            sqlx::query("DELETE FROM mail_outbox WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Err(error) if expired => {
            tracing::error!(id, attempts, %error, "mail outbox: giving up on a message");
            sqlx::query("DELETE FROM mail_outbox WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Err(error) => {
            tracing::warn!(id, attempts, %error, "mail outbox: delivery failed; will retry");
            sqlx::query(
                "UPDATE mail_outbox SET attempts = $2, last_error = $3,
                        available_at = now() + make_interval(secs => $4)
                  WHERE id = $1",
            )
            .bind(id)
            .bind(attempts)
            .bind(&error)
            .bind(retry_delay(attempts).as_secs_f64())
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Some(delivered))
}

/// 2, 4, 8 … seconds, at most ten minutes.
fn retry_delay(attempts: i32) -> Duration {
    let exponent = attempts.clamp(1, 10) as u32;
    Duration::from_secs(2u64.pow(exponent)).min(Duration::from_secs(600))
}

async fn deliver(state: &AppState, mail: Outgoing) -> Result<(), String> {
    match mail {
        Outgoing::PasswordReset {
            email,
            request_id,
            ip,
            user_agent,
        } => {
            // Recorded as the request would have: its id, client and correlation.
            let meta = CommandMetadata {
                actor: Actor::System,
                request_id,
                correlation_id: request_id,
                causation_id: format!("request:{request_id}"),
                client_ip: Some(ip.to_string()),
                user_agent,
                // The request's trace ended with its answer; the outbox keeps no context.
                trace: None,
            };
            reset_token(state, &email, &meta).await
        }
        Outgoing::PasswordWasReset { user_id } => {
            reset_confirmation(state, UserId::from_uuid(user_id)).await
        }
        Outgoing::Notice { to, notice } => {
            let (subject, text) = notice.text(&state.config.public_url);
            state
                .mailer
                .send(&to, &subject, &text)
                .await
                .map_err(|e| e.to_string())
        }
        Outgoing::WebhookDisabled {
            user_id,
            endpoint_id,
            url,
            reason,
            detail,
        } => {
            let notice = super::webhook_disabled::Notice {
                endpoint_id,
                url: url.as_deref(),
                reason: &reason,
                detail: &detail,
            };
            super::webhook_disabled::send(state, UserId::from_uuid(user_id), &notice).await
        }
    }
}

/// Mails a reset token to `email` if it has an account that may reset its password, and
/// was not mailed one in the last [`RESET_MAIL_INTERVAL`]: requests are limited per client
/// IP only, so this is what keeps a flood of requests for one address from flooding its
/// inbox. The token mailed last stays valid meanwhile (no new one replaces it).
async fn reset_token(state: &AppState, email: &str, meta: &CommandMetadata) -> Result<(), String> {
    let Some(user_id) = registered_user_by_email(&state.pool, email)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let user = state
        .store
        .users()
        .load(&user_id.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let ttl = chrono::Duration::from_std(state.config.reset_ttl).unwrap_or_default();
    let interval = chrono::Duration::from_std(RESET_MAIL_INTERVAL).unwrap_or_default();
    if let Some(pending) = user.pending_password_reset() {
        if pending.expires_at - ttl + interval > Utc::now() {
            tracing::info!(user = %user_id, "password reset: a token was mailed moments ago");
            return Ok(());
        }
    }
    let token = one_time_token(user_id);
    let command = UserCommand::RequestPasswordReset {
        token_hash: hash_token(&token),
        expires_at: Utc::now()
            + chrono::Duration::from_std(state.config.reset_ttl).unwrap_or_default(),
    };
    match state
        .store
        .users()
        .execute(&user_id.to_string(), command, meta)
        .await
    {
        Ok(_) => {}
        // A disabled account gets no reset email.
        Err(CommandError::Domain(_)) => return Ok(()),
        Err(other) => return Err(other.to_string()),
    }
    let link = crate::console::email_link(&state.config.public_url, "reset-password", &token);
    let text = format!(
        "Someone asked to reset your Framegate password.\n\nReset token:\n\n{token}\n\nor choose a new password at {link}\n\nIt expires in {} minutes. If it was not you, ignore this email.\n",
        state.config.reset_ttl.as_secs() / 60
    );
    state
        .mailer
        .send(email, "Reset your password", &text)
        .await
        .map_err(|e| e.to_string())
}

/// Tells the user their password was reset and every session ended, and lists the API keys
/// that still work (a reset does not revoke them) with how to revoke one.
async fn reset_confirmation(state: &AppState, user_id: UserId) -> Result<(), String> {
    let Some(user) = users::get(&state.pool, user_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let keys = api_keys::list_for_user(&state.pool, user_id)
        .await
        .map_err(|e| e.to_string())?;
    let text = confirmation_text(&state.config.public_url, &keys);
    state
        .mailer
        .send(&user.email, "Your password was reset", &text)
        .await
        .map_err(|e| e.to_string())
}

fn confirmation_text(public_url: &str, keys: &[api_keys::ApiKeyRow]) -> String {
    let mut text = String::from(
        "Your Framegate password was just reset, and every signed-in session has ended.\n\n\
         If it was not you, reset it again at once and contact support.\n\n",
    );
    let live: Vec<_> = keys.iter().filter(|k| k.revoked_at.is_none()).collect();
    if live.is_empty() {
        text.push_str("Your account has no API keys.\n");
        return text;
    }
    text.push_str(
        "A password reset does not revoke API keys. These keys still work; revoke any you do not \
         recognise:\n\n",
    );
    for key in live {
        text.push_str(&format!(
            "  {} ({}…), created {}, last used {}\n    revoke: DELETE {public_url}/v1/api-keys/{}\n",
            key.name,
            key.prefix,
            key.created_at.format("%Y-%m-%d %H:%M UTC"),
            key.last_used_at
                .map_or_else(|| "never".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
            key.id,
        ));
    }
    text
}

/// Rows waiting (for tests and operators).
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM mail_outbox")
        .fetch_one(pool)
        .await
}

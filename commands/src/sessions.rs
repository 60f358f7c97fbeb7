//! Sessions: one per login, ended in one place (docs/adr/0028-sessions.md).
//!
//! A login starts a session; its refresh tokens rotate within it and every access token
//! issued in it names it. Ending the session (`revoked_at`) ends all of them at once, and the
//! end is announced on [`CREDENTIALS_CHANNEL`] in the same transaction, so API processes that
//! cached the session as live drop it when the change is visible.
//!
//! A password reset and disabling an account end every session of the user in the
//! transaction that records the event ([`execute_ending_sessions`]): there is no moment, and
//! no crash, after which the password is new but an old session still works.

use framegate_domain::{User, UserCommand, UserError, UserId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::store::EventStore;
use crate::unit::serialize;

/// The channel on which a change to what authenticates a user is announced (a key revoked,
/// the account disabled, its role changed, a session ended), so that API processes can drop
/// what they cached. The payload is the user's id, or [`CREDENTIALS_ALL`] when a whole read
/// model was replaced. A notification is sent inside the transaction making the change, so
/// it arrives only once the change is visible.
pub const CREDENTIALS_CHANNEL: &str = "framegate_credentials";

/// The payload that tells listeners to forget every cached credential.
pub const CREDENTIALS_ALL: &str = "*";

/// Why a session ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    LogoutAll,
    RefreshTokenReused,
    PasswordReset,
    Disabled,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::LogoutAll => "logout_all",
            EndReason::RefreshTokenReused => "refresh_token_reused",
            EndReason::PasswordReset => "password_reset",
            EndReason::Disabled => "disabled",
        }
    }
}

/// What an access token's session is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    pub user_id: Uuid,
    pub live: bool,
}

/// Starts a session for `user_id` on `conn` (the caller's transaction also stores its first
/// refresh token), if the user's stream is still at `checked_at`: the sequence of the state
/// the password was checked against. `None` when the user changed since (a reset or a
/// disable may have ended every session in between: a login that overlapped it must not
/// leave a session behind).
///
/// Serialised per user with [`end_all`] (a transaction-scoped advisory lock): either the
/// session is committed first and `end_all` ends it, or `end_all`'s event is visible here.
pub async fn start(
    conn: &mut PgConnection,
    user_id: UserId,
    checked_at: usize,
) -> Result<Option<Uuid>, sqlx::Error> {
    lock_user(conn, user_id).await?;
    let current: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0) FROM events
          WHERE aggregate_type = 'User' AND aggregate_id = $1",
    )
    .bind(user_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    if current != checked_at as i64 {
        return Ok(None);
    }
    let session_id = Uuid::now_v7();
    sqlx::query("INSERT INTO sessions (session_id, user_id) VALUES ($1, $2)")
        .bind(session_id)
        .bind(user_id.as_uuid())
        .execute(conn)
        .await?;
    Ok(Some(session_id))
}

/// Orders [`start`] and [`end_all`] of one user until the transaction ends.
async fn lock_user(conn: &mut PgConnection, user_id: UserId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("framegate.sessions:{user_id}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// The session `session_id`, if it was ever started.
pub async fn state(pool: &PgPool, session_id: Uuid) -> Result<Option<SessionState>, sqlx::Error> {
    let row: Option<(Uuid, bool)> =
        sqlx::query_as("SELECT user_id, revoked_at IS NULL FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(user_id, live)| SessionState { user_id, live }))
}

/// Ends session `session_id` (again: nothing changes) and announces it. Returns its user, or
/// `None` when no such session was ever started.
pub async fn end(
    conn: &mut PgConnection,
    session_id: Uuid,
    reason: EndReason,
) -> Result<Option<Uuid>, sqlx::Error> {
    let user_id: Option<Uuid> = sqlx::query_scalar(
        "WITH ended AS (
             UPDATE sessions SET revoked_at = now(), revoked_reason = $2
              WHERE session_id = $1 AND revoked_at IS NULL)
         SELECT user_id FROM sessions WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(reason.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(user_id) = user_id {
        announce_credentials_changed(conn, &[user_id]).await?;
    }
    Ok(user_id)
}

/// Ends every live session of `user_id` and announces it; returns how many there were.
pub async fn end_all(
    conn: &mut PgConnection,
    user_id: UserId,
    reason: EndReason,
) -> Result<u64, sqlx::Error> {
    lock_user(conn, user_id).await?;
    let ended = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2
          WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id.as_uuid())
    .bind(reason.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    announce_credentials_changed(conn, &[user_id.as_uuid()]).await?;
    Ok(ended)
}

/// Announces on [`CREDENTIALS_CHANNEL`] that the credentials of `user_ids` changed (the
/// account projectors and the sessions table both call it, inside their transaction).
pub async fn announce_credentials_changed(
    conn: &mut PgConnection,
    user_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(());
    }
    // Not while a replay projects into its copy (search_path `replay_<model>`): the copy
    // serves no one until the swap, which announces everything.
    sqlx::query(
        "SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id
          WHERE current_schema() NOT LIKE 'replay\\_%'",
    )
    .bind(CREDENTIALS_CHANNEL)
    .bind(user_ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// More statements for the transaction of [`execute_ending_sessions`] (e.g. queueing a mail);
/// run again if the transaction is retried.
pub type AlsoInTransaction<'a> =
    &'a (dyn for<'c> Fn(&'c mut PgConnection) -> InTransaction<'c> + Sync);

/// Gives a closure the signature [`AlsoInTransaction`] needs (closures do not infer a
/// signature for every lifetime on their own).
pub fn also_in_transaction<F>(statements: F) -> F
where
    F: for<'c> Fn(&'c mut PgConnection) -> InTransaction<'c> + Sync,
{
    statements
}

/// What an [`AlsoInTransaction`] returns.
pub type InTransaction<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// Executes `command` on user `user_id` and ends every session of the user in the same
/// transaction (a password reset, disabling), with `also`. Returns how many sessions ended.
pub async fn execute_ending_sessions(
    store: &EventStore,
    user_id: UserId,
    command: UserCommand,
    reason: EndReason,
    metadata: &CommandMetadata,
    also: Option<AlsoInTransaction<'_>>,
) -> Result<u64, CommandError<UserError>> {
    let id = user_id.to_string();
    let _user = store.users().lock(&id).await;
    let mut attempt = 0;
    loop {
        let decided = store.users().decide(&id, command.clone()).await?;
        let events = serialize::<User>(&id, decided.current_sequence, &decided.events, metadata)
            .map_err(|e| CommandError::Internal(Box::new(e)))?;
        let Some(mut unit) = store.append_or_retry(&events, &mut attempt).await? else {
            continue;
        };
        let ended = end_all(unit.conn(), user_id, reason).await?;
        if let Some(also) = also {
            also(unit.conn()).await?;
        }
        unit.commit().await?;
        return Ok(ended);
    }
}

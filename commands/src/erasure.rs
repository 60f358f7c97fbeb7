//! The right to erasure: `UserErased`, the destruction of the user's data key and the
//! scrubbing of the tables that copy personal data without being rebuilt from events, in one
//! transaction (docs/adr/0043-crypto-shredding.md).
//!
//! After it commits, every reader of the log opens the user's personal fields as `[erased]`
//! (`crate::pii`), the inline users read model shows the email as `[erased]`, the email claim
//! is released (the address can register again), and the user's credits and videos stay as
//! anonymous facts. Their files go by `process.erasure_cleanup` (workers), which follows
//! `UserErased` and, for files stored later by work that was in flight, the video and image
//! events after it.
//!
//! Work in flight is cancelled in the same transaction, by the owner's own rule
//! (`VideoCommand::RequestCancel`): a video no provider holds yet is cancelled at once and its
//! reservation released by settlement; one a provider holds is cancelled there by the worker
//! and billed as any cancellation is. Nothing of the erased user is dispatched afterwards.

use framegate_domain::pii::ERASED;
use framegate_domain::{
    ErasedBy, User, UserCommand, UserError, UserId, Video, VideoCommand, VideoError, VideoStatus,
};
use sqlx::PgConnection;

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::position::LogPosition;
use crate::store::EventStore;
use crate::stored::StoredEvent;
use crate::unit::serialize;

/// Why an erasure's cancellations say the videos stopped.
pub const CANCEL_REASON: &str = "the owner's account was erased";

/// Erases `user`: records `UserErased` (asked for `by` the owner or an admin, the metadata
/// saying who and from where) and the cancellation of every unfinished video of the user,
/// destroys the data key and scrubs the copies, in one transaction. A stream that moved
/// meanwhile (a worker recording progress on one of the videos) is decided again.
pub async fn erase(
    store: &EventStore,
    user: UserId,
    by: ErasedBy,
    metadata: &CommandMetadata,
) -> Result<Option<LogPosition>, CommandError<UserError>> {
    let id = user.to_string();
    let users = store.users();
    let _serialised = users.lock(&id).await;
    let mut attempt = 0;
    loop {
        let email = users.load(&id).await?.email().map(str::to_owned);
        let decision = users.decide(&id, UserCommand::Erase { by }).await?;
        let mut events =
            serialize::<User>(&id, decision.current_sequence, &decision.events, metadata)
                .map_err(|e| CommandError::Internal(e.into()))?;
        // This process's commands on those videos wait until the erasure is decided.
        let unfinished = unfinished_videos(store.pool(), user).await?;
        let mut held = Vec::with_capacity(unfinished.len());
        for video in &unfinished {
            held.push(store.videos().lock(video).await);
        }
        for video in &unfinished {
            events.extend(cancellation(store, video, metadata).await?);
        }
        let Some(mut unit) = store.append_or_retry(&events, &mut attempt).await? else {
            continue;
        };
        let position = unit.written().iter().map(StoredEvent::position).max();
        // Destroying the key takes its row: writes that sealed data under it have committed,
        // and every later one finds the tombstone and is refused (`AccountErased`). A video
        // requested after the list above was read is therefore visible now, and the erasure
        // is decided again to cancel it too (the transaction rolls back when `unit` drops).
        crate::pii::current().keys.destroy(unit.conn(), &id).await?;
        let now = unfinished_videos(unit.conn(), user).await?;
        if now.iter().any(|video| !unfinished.contains(video)) {
            continue;
        }
        scrub(unit.conn(), user, email.as_deref()).await?;
        unit.commit().await?;
        drop(held);
        users.remember(
            &id,
            decision.state,
            decision.current_sequence + decision.events.len(),
        );
        return Ok(position);
    }
}

/// The user's videos that have not finished and are not being cancelled already, by the
/// inline read model (the aggregate decides: one that finished meanwhile is left alone), in
/// id order (the order their locks are taken in).
async fn unfinished_videos<'c>(
    db: impl sqlx::PgExecutor<'c>,
    user: UserId,
) -> Result<Vec<String>, CommandError<UserError>> {
    let settled: Vec<&str> = VideoStatus::ALL
        .into_iter()
        .filter(|status| status.is_terminal() || *status == VideoStatus::CancelRequested)
        .map(VideoStatus::as_str)
        .collect();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT id FROM videos WHERE owner_id = $1 AND status <> ALL($2) ORDER BY id",
    )
    .bind(user.as_uuid())
    .bind(&settled)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(|id| id.to_string()).collect())
}

/// The events that cancel `video` (none when it finished or is being cancelled already).
async fn cancellation(
    store: &EventStore,
    video: &str,
    metadata: &CommandMetadata,
) -> Result<Vec<cqrs_es::persist::SerializedEvent>, CommandError<UserError>> {
    let cancel = VideoCommand::RequestCancel {
        reason: CANCEL_REASON.to_owned(),
    };
    let decision = match store.videos().decide(video, cancel).await {
        Ok(decision) => decision,
        Err(CommandError::Domain(
            VideoError::AlreadyTerminal { .. } | VideoError::AlreadyCancelRequested,
        )) => return Ok(Vec::new()),
        Err(CommandError::Conflict) => return Err(CommandError::Conflict),
        Err(CommandError::Unavailable(error)) => return Err(CommandError::Unavailable(error)),
        Err(other) => return Err(CommandError::Internal(other.into())),
    };
    serialize::<Video>(video, decision.current_sequence, &decision.events, metadata)
        .map_err(|e| CommandError::Internal(e.into()))
}

/// Removes the user's personal data from the tables that hold copies of it and are not
/// rebuilt from events (a replay of those that are reads `[erased]` from the log).
async fn scrub(
    conn: &mut PgConnection,
    user: UserId,
    email: Option<&str>,
) -> Result<(), sqlx::Error> {
    let id = user.as_uuid();
    // The videos read model is rebuilt from the log too, where the prompts now read
    // `[erased]`; this makes the live rows say so at once.
    sqlx::query(
        "UPDATE videos SET prompt = $2,
                negative_prompt = CASE WHEN negative_prompt IS NULL THEN NULL ELSE $2 END
          WHERE owner_id = $1",
    )
    .bind(id)
    .bind(ERASED)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE simulator_jobs SET prompt = $2
          WHERE video_id IN (SELECT v.id FROM videos v WHERE v.owner_id = $1)",
    )
    .bind(id)
    .bind(ERASED)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM mail_outbox
          WHERE position($1::text IN payload::text) > 0
             OR ($2::text IS NOT NULL AND position($2::text IN payload::text) > 0)",
    )
    .bind(id.to_string())
    .bind(email)
    .execute(&mut *conn)
    .await?;
    // Stored responses hold prompts and addresses, sealed (so not to be found by content):
    // the user's own, and those of requests whose events were about the user (a
    // registration's, under its IP's scope; an admin's change to the account), which name
    // the user (`user_id`, set when the request committed). Deliveries hold prompts in their
    // bodies.
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 OR user_id = $2")
        .bind(format!("user:{id}"))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    // The endpoints' answers to a run's deliveries (often echoing the body) are kept in the
    // run's row (migration 0028), which names the queue, not the owner: a user's queues are
    // those of their deliveries.
    sqlx::query(
        "DELETE FROM webhook_runs
          WHERE queue IN (SELECT DISTINCT queue FROM webhook_deliveries WHERE owner_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE owner_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'erased'
          WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

//! The right to erasure: `UserErased`, the destruction of the user's data key and the
//! scrubbing of the tables that copy personal data without being rebuilt from events, in one
//! transaction (docs/adr/0043-crypto-shredding.md).
//!
//! After it commits, every reader of the log opens the user's personal fields as `[erased]`
//! (`crate::pii`), the inline users read model shows the email as `[erased]`, the email claim
//! is released (the address can register again), and the user's credits and videos stay as
//! anonymous facts. Their files go by `process.erasure_cleanup` (workers), which follows
//! `UserErased`.

use framegate_domain::pii::ERASED;
use framegate_domain::{ErasedBy, User, UserCommand, UserError, UserId};
use sqlx::PgConnection;

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::position::LogPosition;
use crate::store::EventStore;
use crate::stored::StoredEvent;

/// Erases `user`: records `UserErased` (asked for `by` the owner or an admin, the metadata
/// saying who and from where), destroys the data key and scrubs the copies.
pub async fn erase(
    store: &EventStore,
    user: UserId,
    by: ErasedBy,
    metadata: &CommandMetadata,
) -> Result<Option<LogPosition>, CommandError<UserError>> {
    let id = user.to_string();
    let users = store.users();
    let _serialised = users.lock(&id).await;
    let email = users.load(&id).await?.email().map(str::to_owned);
    let decision = users.decide(&id, UserCommand::Erase { by }).await?;
    let mut unit = store.begin().await?;
    let position = unit
        .append::<User>(&id, decision.current_sequence, &decision.events, metadata)
        .await?
        .iter()
        .map(StoredEvent::position)
        .max();
    crate::pii::current().keys.destroy(unit.conn(), &id).await?;
    scrub(unit.conn(), user, email.as_deref()).await?;
    unit.commit().await?;
    users.remember(
        &id,
        decision.state,
        decision.current_sequence + decision.events.len(),
    );
    Ok(position)
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
    // Stored responses hold prompts and addresses (a registration's, under its IP's scope);
    // deliveries hold prompts in their bodies.
    sqlx::query(
        "DELETE FROM idempotency_keys
          WHERE scope = $1
             OR ($2::text IS NOT NULL
                 AND position(convert_to($2::text, 'UTF8') IN response_body) > 0)",
    )
    .bind(format!("user:{id}"))
    .bind(email)
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

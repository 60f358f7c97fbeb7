//! The videos projector's part in an erasure (docs/adr/0043-crypto-shredding.md): a
//! `UserErased` sets the prompts of the user's videos to `[erased]`.

use cqrs_es::Aggregate as _;
use framegate_domain::pii::ERASED;
use framegate_domain::User;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::StoredEvent;

/// Whether `event` erases a user (`UserErased`), whose videos' prompts then read `[erased]`.
pub(super) fn is_erasure(event: &StoredEvent) -> bool {
    event.aggregate_type == User::TYPE && event.event_type == "UserErased"
}

/// Sets the prompts of `owner`'s videos to `[erased]`, as the erasure does to the live rows
/// (`framegate_commands::erasure`). The projector must do it too: a replay that projected
/// the user's requests into its copy before the erasure (in clear: the key was still there)
/// would otherwise swap their prompts back in, and so would a live projector that lags.
pub(super) async fn forget_prompts(
    conn: &mut PgConnection,
    owner: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE videos SET prompt = $2,
                negative_prompt = CASE WHEN negative_prompt IS NULL THEN NULL ELSE $2 END
          WHERE owner_id = $1 AND (prompt <> $2 OR negative_prompt <> $2)",
    )
    .bind(owner)
    .bind(ERASED)
    .execute(conn)
    .await?;
    Ok(())
}

//! A user's notification preferences as of a point in the log.
//!
//! The notification mails (and the `credits.low` webhook) follow what the user had chosen
//! when the event happened, not what the `users` read model says when a lagging or restarted
//! subscription gets to it: a user who opts in today is not mailed about last week's videos,
//! and one who opted out before a failure is not mailed about it. The preferences come from
//! the user's own stream: the last `NotificationPreferencesChanged` before the event in log
//! order, read backwards on the stream's primary key (a user's stream is short).

use cqrs_es::Aggregate as _;
use framegate_domain::{versions, NotificationPreferences, User, UserEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::LogPosition;
use crate::read_models::ProjectionError;

/// The preferences `user_id` had just before the event at `before` (the defaults, all off,
/// if they never changed them by then).
pub async fn as_of(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: LogPosition,
) -> Result<NotificationPreferences, ProjectionError> {
    let row: Option<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_version, payload FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2
            AND event_type = 'NotificationPreferencesChanged'
            AND (tx_id, global_position) < ($3::bigint::text::xid8, $4)
          ORDER BY sequence DESC
          LIMIT 1",
    )
    .bind(User::TYPE)
    .bind(user_id.to_string())
    .bind(before.tx_id)
    .bind(before.global_position)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((version, payload)) = row else {
        return Ok(NotificationPreferences::default());
    };
    match versions::decode::<UserEvent>("NotificationPreferencesChanged", &version, &payload) {
        Ok(UserEvent::NotificationPreferencesChanged { preferences }) => Ok(preferences),
        Ok(_) => Err(ProjectionError::Inconsistent(format!(
            "a NotificationPreferencesChanged row of user {user_id} holds another event"
        ))),
        Err(error) => Err(error.into()),
    }
}

//! When each job in flight is next polled, kept in Postgres (`poll_schedule`) so every worker
//! shares it and a restart keeps it: the poller asks for the jobs that are due, soonest
//! first, polls them, and writes back when each is due again (its provider's interval, or
//! longer when the provider asked). Queued jobs are not here at all: only jobs a provider
//! holds are followed, so however many wait, they never delay one in flight.

use std::time::Duration;

use framegate_domain::VideoStatus;
use framegate_projections::read_models::videos::{sql_list, VideoRow, COLUMNS};
use sqlx::PgPool;
use uuid::Uuid;

/// Whether a job a provider holds is due: never polled yet, its time has come, a
/// cancellation was asked for since it was scheduled, or it outlived its deadline (`$2`;
/// a cancellation under way keeps its own pace instead).
fn due_predicate() -> String {
    format!(
        "status NOT IN ({terminal}) AND provider_job_id IS NOT NULL
         AND (p.video_id IS NULL OR p.due_at <= now()
              OR (status = {cancel_requested} AND updated_at > p.scheduled_at)
              OR (status <> {cancel_requested}
                  AND created_at < now() - make_interval(secs => $2)))",
        terminal = sql_list(VideoStatus::ALL.into_iter().filter(|s| s.is_terminal())),
        cancel_requested = sql_list([VideoStatus::CancelRequested]),
    )
}

/// Jobs a provider holds that are due now, soonest due first: a cancellation asked for
/// comes first, and a job never polled is due since it was submitted (its last change).
/// Ties keep request order. `max_age`: jobs older than this are due whatever their time.
pub(super) async fn due(
    pool: &PgPool,
    limit: i64,
    max_age: Duration,
) -> Result<Vec<VideoRow>, sqlx::Error> {
    let cancel_requested = sql_list([VideoStatus::CancelRequested]);
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos LEFT JOIN poll_schedule p ON p.video_id = videos.id
          WHERE {due}
          ORDER BY status = {cancel_requested} DESC, COALESCE(p.due_at, updated_at), created_at, id
          LIMIT $1",
        due = due_predicate(),
    ))
    .bind(limit)
    .bind(max_age.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// `video` as it is now, if it is still due: read again once its follower holds the lock,
/// since another worker may have polled it after this one's sweep listed it.
pub(super) async fn still_due(
    pool: &PgPool,
    video: Uuid,
    max_age: Duration,
) -> Result<Option<VideoRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos LEFT JOIN poll_schedule p ON p.video_id = videos.id
          WHERE videos.id = $1 AND {due}",
        due = due_predicate(),
    ))
    .bind(video)
    .bind(max_age.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// `video` is next due `wait` from now.
pub(super) async fn polled(pool: &PgPool, video: Uuid, wait: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO poll_schedule (video_id, due_at, scheduled_at)
         VALUES ($1, now() + make_interval(secs => $2), now())
         ON CONFLICT (video_id)
         DO UPDATE SET due_at = EXCLUDED.due_at, scheduled_at = EXCLUDED.scheduled_at",
    )
    .bind(video)
    .bind(wait.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Drops the rows of jobs that ended (or whose video is gone); returns how many.
pub(super) async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query(&format!(
        "DELETE FROM poll_schedule p
          WHERE NOT EXISTS (SELECT 1 FROM videos v
                             WHERE v.id = p.video_id AND v.status NOT IN ({terminal}))",
        terminal = sql_list(VideoStatus::ALL.into_iter().filter(|s| s.is_terminal())),
    ))
    .execute(pool)
    .await?;
    Ok(pruned.rows_affected())
}

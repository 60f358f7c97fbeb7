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

/// Jobs a provider holds that are due now, soonest due first: a cancellation asked for is
/// always due, and a job never polled is due since it was submitted (its last change).
/// Ties keep request order.
pub(super) async fn due(pool: &PgPool, limit: i64) -> Result<Vec<VideoRow>, sqlx::Error> {
    let cancel_requested = sql_list([VideoStatus::CancelRequested]);
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos LEFT JOIN poll_schedule p ON p.video_id = videos.id
          WHERE status NOT IN ({terminal}) AND provider_job_id IS NOT NULL
            AND (p.due_at IS NULL OR p.due_at <= now() OR status = {cancel_requested})
          ORDER BY status = {cancel_requested} DESC, COALESCE(p.due_at, updated_at), created_at, id
          LIMIT $1",
        terminal = sql_list(VideoStatus::ALL.into_iter().filter(|s| s.is_terminal())),
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// `video` is next due `wait` from now.
pub(super) async fn polled(pool: &PgPool, video: Uuid, wait: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO poll_schedule (video_id, due_at)
         VALUES ($1, now() + make_interval(secs => $2))
         ON CONFLICT (video_id) DO UPDATE SET due_at = EXCLUDED.due_at",
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

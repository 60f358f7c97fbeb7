//! The two measured runs over a log: the live read models catching up on all of it from
//! empty checkpoints, then `replay --all`; and the check that what they built was opened.

use std::time::Instant;

use framegate_domain::pii::ERASED;
use framegate_projections::read_models::{catch_up_all, READ_MODELS};
use framegate_projections::replay::{self, ReplayOptions, ReplayReport, Silent};
use sqlx::PgPool;

use super::seed::Log;
use super::story::{EMAIL, PROMPT};

/// Every read model drained from an empty checkpoint to the head; the log events per second.
pub async fn catch_up(pool: &PgPool, log: Log) -> f64 {
    cold_keys();
    let started = Instant::now();
    let handled = catch_up_all(pool).await.expect("catch up");
    let elapsed = started.elapsed();
    assert_eq!(
        handled,
        log.events as u64 * READ_MODELS.len() as u64,
        "every read model handled every event"
    );
    log.events as f64 / elapsed.as_secs_f64()
}

/// Empties every read model's tables and checkpoint, so the next [`catch_up`] starts from
/// nothing again.
pub async fn reset_read_models(pool: &PgPool) {
    let tables: Vec<&str> = replay::all_models(pool)
        .expect("models")
        .iter()
        .flat_map(|model| model.tables.iter().copied())
        .collect();
    sqlx::query(&format!("TRUNCATE {} CASCADE", tables.join(", ")))
        .execute(pool)
        .await
        .expect("truncate");
    sqlx::query("DELETE FROM subscription_checkpoints WHERE name = ANY($1)")
        .bind(READ_MODELS.to_vec())
        .execute(pool)
        .await
        .expect("checkpoints");
}

/// `replay --all` (build beside, compare with the live tables, swap).
pub async fn replay(pool: &PgPool, batch: i64) -> ReplayReport {
    cold_keys();
    let models = replay::all_models(pool).expect("models");
    let options = ReplayOptions {
        batch_size: batch,
        ..ReplayOptions::default()
    };
    let report = replay::replay(pool, &models, &options, &Silent)
        .await
        .expect("replay");
    assert!(report.finished && report.swapped);
    // The live tables were built by the catch-up: the rebuild must equal them.
    assert!(
        report.identical(),
        "replay differs from catch-up: {report:?}"
    );
    report
}

/// Empties the process's cache of unwrapped data keys: each run unwraps every key it needs,
/// as a process started for it would.
fn cold_keys() {
    framegate_commands::pii::current().keys.forget(None);
}

/// Panics unless the read models hold every user's email and prompt in clear and nothing
/// reads `[erased]`: the sealed log's fields were really opened.
pub async fn check_opened(pool: &PgPool, log: Log, what: &str) {
    for model in replay::all_models(pool).expect("models") {
        for table in model.tables {
            let erased: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0"
            ))
            .bind(ERASED)
            .fetch_one(pool)
            .await
            .expect("erased rows");
            assert_eq!(erased, 0, "{what}: {erased} rows of {table} read {ERASED}");
        }
    }
    let (emails, prompts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users
                  WHERE email = $1 OR email ~ '^bench[0-9]+@example\\.com$'),
                (SELECT count(*) FROM videos WHERE prompt = $2)",
    )
    .bind(EMAIL)
    .bind(PROMPT)
    .fetch_one(pool)
    .await
    .expect("opened rows");
    assert_eq!(
        (emails, prompts),
        (log.stories, log.stories),
        "{what}: every user's email and prompt in clear"
    );
}

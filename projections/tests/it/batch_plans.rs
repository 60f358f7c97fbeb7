//! A batch's statements are planned for their own arguments (`subscription::begin_batch`):
//! a prepared statement run many times in batches never switches to its cached generic plan,
//! which, built over a read model's table while it was empty, would scan the grown table
//! whole for every batch (ADR 0043, stop-31 addendum).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use framegate_commands::testing::TestDatabase;
use framegate_projections::subscription::HandlerError;
use framegate_projections::{EventHandler, StoredEvent, Subscription};
use sqlx::PgConnection;

use crate::support::register;

/// The statement the handler prepares; Postgres would plan it generically from its sixth run
/// (its generic plan costs no more than a custom one, which adds planning).
const PROBE: &str = "SELECT $1::int8 + 1";

/// Runs [`PROBE`] several times in each batch, then records how Postgres planned it so far
/// on this connection: (generic plans, custom plans).
#[derive(Default)]
struct Planner {
    plans: Arc<Mutex<Vec<(i64, i64)>>>,
}

#[async_trait]
impl EventHandler for Planner {
    async fn handle(
        &self,
        _conn: &mut PgConnection,
        _event: &StoredEvent,
    ) -> Result<(), framegate_projections::subscription::BoxError> {
        Ok(())
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        let at = |source: sqlx::Error| HandlerError::at(&events[0], source);
        for n in 0..8_i64 {
            sqlx::query_scalar::<_, i64>(PROBE)
                .bind(n)
                .fetch_one(&mut *conn)
                .await
                .map_err(at)?;
        }
        let plans: (i64, i64) = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
        )
        .bind(PROBE)
        .fetch_one(&mut *conn)
        .await
        .map_err(at)?;
        self.plans.lock().expect("plans").push(plans);
        Ok(())
    }
}

#[tokio::test]
async fn every_statement_of_a_batch_is_planned_for_its_own_arguments() {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    for n in 0..3 {
        register(&store, &format!("planned{n}@example.com")).await;
    }
    // One connection, so every batch's statements share one cache of prepared statements.
    let pool = framegate_commands::db::connect(db.url(), 1)
        .await
        .expect("a pool of one");
    let planner = Planner::default();
    Subscription::new("test.batch_plans", pool.clone())
        .with_batch_size(1)
        .drain(&planner)
        .await
        .expect("drain");
    let plans = planner.plans.lock().expect("plans").clone();
    assert!(plans.len() >= 3, "one record per batch: {plans:?}");
    let (generic, custom) = *plans.last().expect("a batch");
    assert_eq!(generic, 0, "no generic plan in any batch: {plans:?}");
    assert_eq!(custom, 8 * plans.len() as i64, "{plans:?}");

    // Outside a batch the connection plans as configured: the setting was the batch's own.
    let mode: String = sqlx::query_scalar("SELECT current_setting('plan_cache_mode')")
        .fetch_one(&pool)
        .await
        .expect("setting");
    assert_eq!(mode, "auto");
}

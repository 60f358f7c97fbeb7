//! Shared by the batch-projection tests: reading the whole log, and projecting it into empty
//! copies of a read model's tables (a schema per copy, as a replay does) through
//! `handle_batch` or event by event through `handle`, then reading the copies back.

use framegate_projections::replay::ReadModel;
use framegate_projections::{HandlerError, StoredEvent};
use sqlx::PgPool;

/// The whole log in log order (everything has committed: no horizon to respect), personal
/// fields opened as every reader of the log gets them.
pub async fn log(pool: &PgPool) -> Vec<StoredEvent> {
    let mut events = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata
           FROM events ORDER BY events.tx_id, events.global_position",
    )
    .fetch_all(pool)
    .await
    .expect("log");
    framegate_commands::pii::open_stored(pool, &mut events)
        .await
        .expect("open");
    events
}

/// Empty copies of the model's tables in a schema of their own.
pub async fn copies(pool: &PgPool, schema: &str, model: &ReadModel) {
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(pool)
        .await
        .expect("schema");
    for table in model.tables {
        let sql = format!("CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)");
        sqlx::query(&sql).execute(pool).await.expect("copy");
    }
}

/// Projects `events` into the copies in `schema`, `size` events per `handle_batch`, each
/// batch in a transaction of its own as a subscription runs it.
pub async fn in_batches(
    pool: &PgPool,
    schema: &str,
    model: &ReadModel,
    events: &[StoredEvent],
    size: usize,
) -> Result<(), HandlerError> {
    for batch in events.chunks(size) {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SELECT set_config('search_path', $1, true)")
            .bind(schema)
            .execute(&mut *tx)
            .await
            .expect("search_path");
        model.handler.handle_batch(&mut tx, batch).await?;
        tx.commit().await.expect("commit");
    }
    Ok(())
}

/// Projects `events` into the copies in `schema` through `handle`, one event at a time.
pub async fn one_by_one(
    pool: &PgPool,
    schema: &str,
    model: &ReadModel,
    events: &[StoredEvent],
) -> Result<(), HandlerError> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(schema)
        .execute(&mut *tx)
        .await
        .expect("search_path");
    for event in events {
        model
            .handler
            .handle(&mut tx, event)
            .await
            .map_err(|source| HandlerError::at(event, source))?;
    }
    tx.commit().await.expect("commit");
    Ok(())
}

/// Every row of the model's tables in `schema`, as text, sorted.
pub async fn rows(pool: &PgPool, schema: &str, model: &ReadModel) -> Vec<(String, Vec<String>)> {
    let mut tables = Vec::new();
    for table in model.tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT t::text FROM {schema}.{table} t ORDER BY 1"
        ))
        .fetch_all(pool)
        .await
        .expect("rows");
        tables.push(((*table).to_owned(), rows));
    }
    tables
}

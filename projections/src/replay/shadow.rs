//! The shadow schema of a replay: empty copies of a read model's tables beside the live ones,
//! the copy's checkpoint, the comparison with the live tables and the swap.
//!
//! Every statement here names its schema: the only unqualified names a replay resolves are
//! the projector's own, through the shadow `search_path` set around `project`.

use sqlx::{PgConnection, PgPool};

use super::{ReadModel, ReplayError, TableComparison};
use crate::log::{LogPosition, StoredEvent};
use crate::read_models::{CREDENTIALS_ALL, CREDENTIALS_CHANNEL};

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the shadow schema with empty copies of the model's tables and a checkpoint at the
/// start, or keeps the one an earlier run left (resume) if its tables still have the live
/// tables' columns; a copy from before a migration is dropped and started again.
pub(super) async fn prepare(pool: &PgPool, model: &ReadModel) -> Result<(), ReplayError> {
    let schema = model.shadow_schema();
    let mut tx = pool.begin().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&schema)
            .fetch_one(&mut *tx)
            .await?;
    let mut usable = exists && has_checkpoint(&mut tx, &schema).await?;
    if usable {
        for table in model.tables {
            let live = columns(&mut tx, "public", table).await?;
            let copy = columns(&mut tx, &schema, table).await?;
            usable &= copy.is_some() && copy == live;
        }
    }
    if !usable {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&schema)))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {}", ident(&schema)))
            .execute(&mut *tx)
            .await?;
        for table in model.tables {
            create_copy(&mut tx, &schema, table).await?;
        }
        sqlx::query(&format!(
            "CREATE TABLE {}.replay_checkpoint (
                 last_tx_id     xid8        NOT NULL DEFAULT '0',
                 last_position  bigint      NOT NULL DEFAULT 0,
                 events_handled bigint      NOT NULL DEFAULT 0,
                 started_at     timestamptz NOT NULL DEFAULT now(),
                 updated_at     timestamptz NOT NULL DEFAULT now()
             )",
            ident(&schema)
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {}.replay_checkpoint DEFAULT VALUES",
            ident(&schema)
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn has_checkpoint(conn: &mut PgConnection, schema: &str) -> Result<bool, sqlx::Error> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("{}.replay_checkpoint", ident(schema)))
        .fetch_one(&mut *conn)
        .await?;
    if table.is_none() {
        return Ok(false);
    }
    let rows: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.replay_checkpoint",
        ident(schema)
    ))
    .fetch_one(&mut *conn)
    .await?;
    Ok(rows == 1)
}

/// The table's columns with types and nullability, `None` if there is no such table.
async fn columns(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                           ', ' ORDER BY a.attnum)
           FROM pg_attribute a
          WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(format!("{}.{}", ident(schema), ident(table)))
    .fetch_one(conn)
    .await
}

/// An empty copy with the live table's columns, defaults, checks, indexes and comments, its
/// indexes renamed to the live names so that the table is indistinguishable after the swap
/// (later migrations refer to indexes by name).
async fn create_copy(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<(), sqlx::Error> {
    let copy = format!("{}.{}", ident(schema), ident(table));
    let live = format!("public.{}", ident(table));
    sqlx::query(&format!("CREATE TABLE {copy} (LIKE {live} INCLUDING ALL)"))
        .execute(&mut *conn)
        .await?;
    // Pairs (copy's index, live index) with the same definition apart from name and schema.
    let pairs: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, l.relname::text
           FROM pg_index ci JOIN pg_class c ON c.oid = ci.indexrelid,
                pg_index li JOIN pg_class l ON l.oid = li.indexrelid
          WHERE ci.indrelid = to_regclass($1) AND li.indrelid = to_regclass($2)
            AND ci.indisunique = li.indisunique AND ci.indisprimary = li.indisprimary
            AND regexp_replace(pg_get_indexdef(ci.indexrelid), '^.* USING ', '')
              = regexp_replace(pg_get_indexdef(li.indexrelid), '^.* USING ', '')",
    )
    .bind(&copy)
    .bind(&live)
    .fetch_all(&mut *conn)
    .await?;
    // Through temporary names: a copy's generated name may be another live index's name.
    for (n, (from, _)) in pairs.iter().enumerate() {
        sqlx::query(&format!(
            "ALTER INDEX {}.{} RENAME TO {}",
            ident(schema),
            ident(from),
            ident(&format!("replay_index_{n}"))
        ))
        .execute(&mut *conn)
        .await?;
    }
    for (n, (_, to)) in pairs.iter().enumerate() {
        sqlx::query(&format!(
            "ALTER INDEX {}.{} RENAME TO {}",
            ident(schema),
            ident(&format!("replay_index_{n}")),
            ident(to)
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The copy's position and how many events it has been given.
pub(super) async fn checkpoint(
    conn: &mut PgConnection,
    model: &ReadModel,
) -> Result<(LogPosition, i64), sqlx::Error> {
    let (tx_id, global_position, handled): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT last_tx_id::text::bigint, last_position, events_handled
           FROM {}.replay_checkpoint",
        ident(&model.shadow_schema())
    ))
    .fetch_one(conn)
    .await?;
    Ok((
        LogPosition {
            tx_id,
            global_position,
        },
        handled,
    ))
}

/// Runs the model's projector on `events` against the copy and moves the copy's checkpoint,
/// both in the caller's transaction.
pub(super) async fn project(
    conn: &mut PgConnection,
    model: &ReadModel,
    events: &[StoredEvent],
    handled_before: i64,
) -> Result<(), ReplayError> {
    let Some(last) = events.last().map(StoredEvent::position) else {
        return Ok(());
    };
    let schema = model.shadow_schema();
    let previous: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&mut *conn)
        .await?;
    // Only the shadow: a table the projector writes that is not copied there is an error,
    // never a write to a live table. Prepared statements re-resolve their names when the
    // search_path differs from the one they were planned with. Each statement is planned for
    // its own arguments, as in a live batch (`subscription::begin_batch`): the copies grow
    // from empty.
    sqlx::query(
        "SELECT set_config('search_path', $1, true),
                set_config('plan_cache_mode', 'force_custom_plan', true)",
    )
    .bind(ident(&schema))
    .execute(&mut *conn)
    .await?;
    model
        .handler
        .handle_batch(conn, events)
        .await
        .map_err(|source| ReplayError::Handler {
            model: model.name.clone(),
            source: Box::new(source),
        })?;
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(&previous)
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!(
        "UPDATE {}.replay_checkpoint
            SET last_tx_id = $1::bigint::text::xid8, last_position = $2,
                events_handled = $3, updated_at = now()",
        ident(&schema)
    ))
    .bind(last.tx_id)
    .bind(last.global_position)
    .bind(handled_before + events.len() as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Compares each live table with its copy: row counts and the rows each lacks (`EXCEPT ALL`,
/// so order and physical layout do not matter but duplicates do).
pub(super) async fn compare(
    conn: &mut PgConnection,
    model: &ReadModel,
) -> Result<Vec<TableComparison>, sqlx::Error> {
    let schema = ident(&model.shadow_schema());
    let mut comparisons = Vec::new();
    for table in model.tables {
        let live = format!("public.{}", ident(table));
        let copy = format!("{schema}.{}", ident(table));
        let (live_rows, rebuilt_rows, only_live, only_rebuilt): (i64, i64, i64, i64) =
            sqlx::query_as(&format!(
                "SELECT (SELECT count(*) FROM {live}), (SELECT count(*) FROM {copy}),
                        (SELECT count(*) FROM (SELECT * FROM {live} EXCEPT ALL SELECT * FROM {copy}) d),
                        (SELECT count(*) FROM (SELECT * FROM {copy} EXCEPT ALL SELECT * FROM {live}) d)"
            ))
            .fetch_one(&mut *conn)
            .await?;
        comparisons.push(TableComparison {
            table: (*table).to_owned(),
            live_rows,
            rebuilt_rows,
            only_live,
            only_rebuilt,
        });
    }
    Ok(comparisons)
}

/// Moves the live tables out of `public` and the copies in, and gives the live subscription
/// the copy's checkpoint, in the caller's transaction: readers see the old tables or the new
/// ones, and the live projector continues on the new ones from where they stand.
pub(super) async fn swap(conn: &mut PgConnection, model: &ReadModel) -> Result<(), sqlx::Error> {
    let schema = ident(&model.shadow_schema());
    let retired = ident(&model.retired_schema());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {retired}"))
        .execute(&mut *conn)
        .await?;
    for table in model.tables {
        let table = ident(table);
        sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {retired}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(&format!(
        "INSERT INTO public.subscription_checkpoints
                (name, last_tx_id, last_position, events_handled, updated_at)
         SELECT $1, last_tx_id, last_position, events_handled, now() FROM {schema}.replay_checkpoint
         ON CONFLICT (name) DO UPDATE
            SET last_tx_id = EXCLUDED.last_tx_id, last_position = EXCLUDED.last_position,
                events_handled = EXCLUDED.events_handled, updated_at = now()"
    ))
    .bind(&model.subscription)
    .execute(&mut *conn)
    .await?;
    // What API processes cached from the old tables may differ from the new ones.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CREDENTIALS_CHANNEL)
        .bind(CREDENTIALS_ALL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Drops what a finished run leaves: the retired live tables after a swap, the copy after a
/// dry run (and the copy's checkpoint either way).
pub(super) async fn drop_leftovers(pool: &PgPool, model: &ReadModel) -> Result<(), sqlx::Error> {
    for schema in [model.retired_schema(), model.shadow_schema()] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&schema)))
            .execute(pool)
            .await?;
    }
    Ok(())
}

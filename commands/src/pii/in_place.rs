//! Sealing rows written before encryption, in place: `framegate events seal` (ADR 0043).
//!
//! Rows appended before crypto-shredding hold their personal fields in clear, which an erasure
//! cannot reach: the readers show them as `[erased]`, but the table, its dumps and its backups
//! keep them. This pass rewrites each such row's `payload` and `metadata` exactly as the append
//! path would have stored them ([`Pii::seal`]: envelopes under the user's key, made if the
//! user has none yet; `[erased]` for a user erased already). Nothing else of a row changes: its
//! position, sequence, id and times stay, and the append-only trigger (migration 0029) lets
//! only this pass's one `UPDATE` statement through, with those columns unchanged.
//!
//! One transaction per batch of rows in log order, each taking its rows `FOR UPDATE` and their
//! users' key rows under the writers' share lock (an erasure waits for the batch, and a batch
//! after an erasure writes `[erased]`). Idempotent (a sealed row no longer matches) and
//! resumable (a run stopped midway starts again where the plaintext is). Metadata that
//! belongs to nobody (a Stripe webhook's system events) has no key to be sealed under and is
//! left as it is, as the append path leaves it.
//!
//! Before the first batch the pass makes sure that every registration of a user not erased
//! has its email claim, and drops `events_user_email_key`, the unique index of plaintext
//! addresses: the claims guard uniqueness since encryption, and the index would refuse the
//! `[erased]` that erased users' old registrations get (several would share it).

use framegate_domain::pii::{ENVELOPE, ERASED, METADATA_FIELDS, PERSONAL};
use serde_json::Value;
use sqlx::{FromRow, PgPool};

use super::keys::is_deadlock;
use super::{EventParts, ForErased, Pii, PiiError};

/// What a run of [`Pii::seal_in_place`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SealReport {
    /// Rows whose personal data is now sealed under its user's key.
    pub sealed: u64,
    /// Rows of users erased already: their personal data now reads `[erased]` in the row.
    pub erased: u64,
    /// Rows whose personal metadata belongs to nobody (no acting user, no subject): left.
    pub left_in_clear: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Whether this run dropped `events_user_email_key`.
    pub index_dropped: bool,
}

/// How often one batch is run again after a deadlock with writes before the pass gives up
/// (it can be run again: it is idempotent).
const MAX_DEADLOCK_RETRIES: u32 = 20;

/// The plaintext email index of migration 0001.
const PLAINTEXT_EMAIL_INDEX: &str = "events_user_email_key";

/// The parts of a stored row the pass reads.
#[derive(FromRow)]
struct Row {
    global_position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: Value,
    metadata: Value,
}

/// SQL that is true for a row holding any personal field in clear, from the one list of
/// personal fields (`framegate_domain::pii`): a body field of its event type, or personal
/// metadata. NULL and `[erased]` are not personal data.
pub fn plaintext_predicate() -> String {
    let mut alternatives = Vec::new();
    for (event_type, fields) in PERSONAL {
        let present: Vec<String> = fields
            .iter()
            .map(|path| {
                let path = format!("{{{event_type},{}}}", path.replace('.', ","));
                format!("(payload #>> '{path}') <> '{ERASED}'")
            })
            .collect();
        alternatives.push(format!(
            "(event_type = '{event_type}' AND ({}))",
            present.join(" OR ")
        ));
    }
    for field in METADATA_FIELDS {
        alternatives.push(format!("(metadata ->> '{field}') <> '{ERASED}'"));
    }
    alternatives.join(" OR ")
}

/// One batch's outcome: the position reached and what was done.
struct Step {
    last: i64,
    sealed: u64,
    erased: u64,
    left_in_clear: u64,
}

impl Pii {
    /// Seals every row written before encryption in place, in batches of `batch` rows (see
    /// the module). Fails before changing anything when a registration of a user not erased
    /// has no email claim (dropping the plaintext index would then lose its uniqueness).
    pub async fn seal_in_place(&self, pool: &PgPool, batch: i64) -> Result<SealReport, PiiError> {
        let mut report = SealReport::default();
        self.claim_plaintext_emails(pool).await?;
        let unclaimed = unclaimed_registrations(pool).await?;
        if unclaimed > 0 {
            return Err(PiiError::Unclaimed(unclaimed));
        }
        report.index_dropped = drop_plaintext_index(pool).await?;
        let mut cursor = 0;
        let mut deadlocks = 0;
        loop {
            match self.seal_batch(pool, cursor, batch).await {
                Ok(None) => break,
                Ok(Some(step)) => {
                    cursor = step.last;
                    report.sealed += step.sealed;
                    report.erased += step.erased;
                    report.left_in_clear += step.left_in_clear;
                    report.batches += 1;
                }
                Err(PiiError::Database(error))
                    if is_deadlock(&error) && deadlocks < MAX_DEADLOCK_RETRIES =>
                {
                    deadlocks += 1;
                    tracing::warn!(%error, "a sealing batch deadlocked with writes; again");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(report)
    }

    /// Seals the next `batch` rows after position `after` that hold plaintext, in one
    /// transaction; `None` when there are none.
    async fn seal_batch(
        &self,
        pool: &PgPool,
        after: i64,
        batch: i64,
    ) -> Result<Option<Step>, PiiError> {
        let mut tx = pool.begin().await?;
        let mut rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT global_position, aggregate_type, aggregate_id, sequence, event_type,
                    payload, metadata
               FROM events
              WHERE global_position > $1 AND ({})
              ORDER BY global_position
              LIMIT $2
                FOR UPDATE",
            plaintext_predicate()
        ))
        .bind(after)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last().map(|row| row.global_position) else {
            return Ok(None);
        };
        let before: Vec<(Value, Value)> = rows
            .iter()
            .map(|row| (row.payload.clone(), row.metadata.clone()))
            .collect();
        let claims = {
            let mut parts: Vec<EventParts<'_>> = rows
                .iter_mut()
                .map(|row| EventParts {
                    aggregate_type: &row.aggregate_type,
                    aggregate_id: &row.aggregate_id,
                    sequence: row.sequence,
                    event_type: &row.event_type,
                    payload: &mut row.payload,
                    metadata: &mut row.metadata,
                })
                .collect();
            self.seal(&mut tx, &mut parts, ForErased::Erase).await?
        };
        // Claimed already (at start-up and above); kept for a registration that was not,
        // unless its user was erased (whose address is free).
        let (hashes, users): (Vec<Vec<u8>>, Vec<String>) = claims
            .into_iter()
            .map(|claim| (claim.email_hash, claim.user_id))
            .unzip();
        sqlx::query(
            "INSERT INTO email_claims (email_hash, user_id)
             SELECT c.hash, c.user_id FROM unnest($1::bytea[], $2::text[]) AS c(hash, user_id)
              WHERE NOT EXISTS (SELECT 1 FROM data_keys d
                                 WHERE d.user_id = c.user_id AND d.erased_at IS NOT NULL)
             ON CONFLICT DO NOTHING",
        )
        .bind(&hashes)
        .bind(&users)
        .execute(&mut *tx)
        .await?;

        let mut step = Step {
            last,
            sealed: 0,
            erased: 0,
            left_in_clear: 0,
        };
        let (mut positions, mut payloads, mut metadata) = (Vec::new(), Vec::new(), Vec::new());
        for (row, (payload, meta)) in rows.into_iter().zip(before) {
            if row.payload == payload && row.metadata == meta {
                step.left_in_clear += 1;
                continue;
            }
            let sealed = row.metadata.get(ENVELOPE).is_some()
                || row
                    .payload
                    .get(&row.event_type)
                    .is_some_and(|body| body.get(ENVELOPE).is_some());
            if sealed {
                step.sealed += 1;
            } else {
                step.erased += 1;
            }
            positions.push(row.global_position);
            payloads.push(row.payload);
            metadata.push(row.metadata);
        }
        if !positions.is_empty() {
            // The trigger lets this one statement through (migration 0029), nothing after it.
            sqlx::query("SELECT set_config('framegate.seal_in_place', 'on', true)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE events e SET payload = r.payload, metadata = r.metadata
                   FROM unnest($1::bigint[], $2::jsonb[], $3::jsonb[])
                        AS r(global_position, payload, metadata)
                  WHERE e.global_position = r.global_position",
            )
            .bind(&positions)
            .bind(&payloads)
            .bind(&metadata)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT set_config('framegate.seal_in_place', 'off', true)")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(step))
    }
}

/// Registrations of users not erased that hold no email claim.
async fn unclaimed_registrations(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e
          WHERE e.aggregate_type = 'User' AND e.event_type = 'UserRegistered'
            AND NOT EXISTS (SELECT 1 FROM email_claims c WHERE c.user_id = e.aggregate_id)
            AND NOT EXISTS (SELECT 1 FROM data_keys d
                             WHERE d.user_id = e.aggregate_id AND d.erased_at IS NOT NULL)",
    )
    .fetch_one(pool)
    .await
}

/// Whether the plaintext email index is still there.
pub(super) async fn plaintext_index_exists(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("public.{PLAINTEXT_EMAIL_INDEX}"))
        .fetch_one(pool)
        .await
}

/// Drops the plaintext email index without blocking writes; whether it was there.
async fn drop_plaintext_index(pool: &PgPool) -> Result<bool, sqlx::Error> {
    if !plaintext_index_exists(pool).await? {
        return Ok(false);
    }
    // A simple query: CONCURRENTLY runs outside any transaction.
    sqlx::raw_sql(&format!(
        "DROP INDEX CONCURRENTLY IF EXISTS public.{PLAINTEXT_EMAIL_INDEX}"
    ))
    .execute(pool)
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predicate_covers_every_personal_field() {
        let predicate = plaintext_predicate();
        assert!(predicate.contains("payload #>> '{UserRegistered,email}'"));
        assert!(predicate.contains("payload #>> '{VideoRequested,spec,negative_prompt}'"));
        assert!(predicate.contains("metadata ->> 'user_agent'"));
    }
}

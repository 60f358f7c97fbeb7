//! Building the benchmark's log: the template's plaintext rows, copied in SQL with fresh ids,
//! emails and key hashes (the pre-encryption format, as `framegate events seal` finds it), and
//! for the sealed log, those rows sealed in place by that very pass: every copied user gets a
//! data key of their own and every personal field an envelope bound (AAD) to its own row.

use std::time::Instant;

use framegate_commands::pii::{self, in_place::plaintext_predicate};
use sqlx::PgPool;

use super::story::{Template, EMAIL};

/// The log as built: events stored and stories (users) in it.
#[derive(Clone, Copy)]
pub struct Log {
    pub events: i64,
    pub stories: i64,
}

/// Writes the template and copies it until the log holds about `total` events.
pub async fn plaintext(pool: &PgPool, template: &Template, total: i64) -> Log {
    for row in &template.rows {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.aggregate_type)
        .bind(&row.aggregate_id)
        .bind(row.sequence)
        .bind(&row.event_type)
        .bind(&row.event_version)
        .bind(&row.payload)
        .bind(&row.metadata)
        .execute(pool)
        .await
        .expect("template row");
    }
    let per_story = template.rows.len() as i64;
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(pool)
        .await
        .expect("template end");
    let stories = (total / per_story).max(1);
    // 4,000 stories per statement and transaction.
    let chunk = 4000;
    let mut done = 1;
    let ids = &template.ids;
    while done < stories {
        let n = chunk.min(stories - done);
        // Every template id, the key hash and the email replaced by this copy's own.
        let fresh = |expr: &str| {
            format!(
                "replace(replace(replace(replace(replace(replace({expr}, $3, id.u), $4, id.k),
                 $5, id.v), $6, id.i), $8, id.h), $9, id.email)"
            )
        };
        sqlx::query(&format!(
            "WITH template AS (SELECT * FROM events WHERE global_position <= $7)
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             SELECT t.aggregate_type, {}, t.sequence, t.event_type, t.event_version,
                    ({})::jsonb, ({})::jsonb
               FROM generate_series($1::bigint, $1 + $2 - 1) g
              CROSS JOIN template t
              CROSS JOIN LATERAL (
                    SELECT md5('u' || g)::uuid::text AS u, md5('k' || g)::uuid::text AS k,
                           md5('v' || g)::uuid::text AS v, md5('i' || g)::uuid::text AS i,
                           md5('h' || g) || md5('H' || g) AS h,
                           'bench' || g || '@example.com' AS email) id
              ORDER BY g, t.global_position",
            fresh("t.aggregate_id"),
            fresh("t.payload::text"),
            fresh("t.metadata::text"),
        ))
        .bind(done)
        .bind(n)
        .bind(ids.user.to_string())
        .bind(ids.key.to_string())
        .bind(ids.video.to_string())
        .bind(ids.image.to_string())
        .bind(last)
        .bind(&ids.key_hash)
        .bind(EMAIL)
        .execute(pool)
        .await
        .expect("multiply");
        done += n;
    }
    compact(pool).await;
    Log {
        events: per_story * stories,
        stories,
    }
}

/// Seals the plaintext log in place (`framegate events seal`: `Pii::seal` per batch, a data
/// key made for each user); checks that no plaintext is left and every user has a key.
pub async fn seal(pool: &PgPool, log: Log) {
    let started = Instant::now();
    let report = pii::current()
        .seal_in_place(pool, 5000)
        .await
        .expect("seal in place");
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM events WHERE {}",
        plaintext_predicate()
    ))
    .fetch_one(pool)
    .await
    .expect("plaintext left");
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE wrapped_key IS NOT NULL")
            .fetch_one(pool)
            .await
            .expect("keys");
    assert_eq!(left, 0, "rows still in plaintext after sealing");
    assert_eq!(keys, log.stories, "one data key per copied user");
    assert!(
        report.erased == 0 && report.left_in_clear == 0,
        "{report:?}"
    );
    compact(pool).await;
    println!(
        "sealed {} rows in place under {keys} users' data keys in {:.1} s",
        report.sealed,
        started.elapsed().as_secs_f64()
    );
}

/// Rewrites the table in log order and analyzes it. Both logs get it: sealing in place
/// leaves the updated rows scattered behind dead ones, where a log sealed on append would be
/// as compact and ordered as the plaintext one.
async fn compact(pool: &PgPool) {
    for sql in [
        "CLUSTER events USING events_log_order_idx",
        "ANALYZE events",
    ] {
        sqlx::query(sql).execute(pool).await.expect("compact");
    }
}

//! The floor of (a): the rows a video request writes, written by hand. One transaction per
//! request, as few statements as the rows allow: the two events in one `INSERT`, the
//! account's reservation, its ledger row and the video's row. No aggregate is loaded, no
//! domain code runs, nothing is checked: what any implementation of the same request on the
//! same schema (8 indexes on `events` for the log, streams and audit; the read models the
//! API answers from, inline) costs Postgres at the least.
//!
//! Its streams and accounts are its own (aggregate types no projector follows, accounts no
//! event names), so the projectors running beside it have nothing to do with it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{load, Figures, PROMPT};

/// One hand-written request on `account`, its reservation at `sequence`.
async fn request(pool: &PgPool, account: Uuid, sequence: i64) -> Result<(), sqlx::Error> {
    let video = Uuid::now_v7();
    let metadata = json!({
        "actor": format!("user:{account}"), "correlation_id": Uuid::now_v7().to_string(),
        "request_id": Uuid::now_v7().to_string(), "ip": "127.0.0.1", "user_agent": "bench",
    });
    let reserved = json!({"CreditsReserved": {"video_id": video, "amount": 1}});
    let requested = json!({"VideoRequested": {"video_id": video, "spec": {
        "owner": account, "prompt": PROMPT, "provider": "auto", "model": "simulator-v1",
        "duration_seconds": 1, "aspect_ratio": "16:9", "resolution": "480p",
        "estimated_cost": 1}}});
    let mut tx = pool.begin().await?;
    let (position, at): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                              $6::jsonb[], $7::jsonb[])
         RETURNING global_position, recorded_at",
    )
    .bind(["BenchAccount", "BenchVideo"])
    .bind([account.to_string(), video.to_string()])
    .bind([sequence, 1])
    .bind(["CreditsReserved", "VideoRequested"])
    .bind(["1", "1"])
    .bind([reserved, requested])
    .bind([metadata.clone(), metadata])
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE credit_accounts SET reserved = reserved + 1, updated_at = $2, version = $3
          WHERE user_id = $1 AND version = $3 - 1",
    )
    .bind(account)
    .bind(at)
    .bind(sequence)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO credit_ledger (global_position, user_id, kind, balance_change,
                                    reserved_change, video_id, actor, recorded_at)
         VALUES ($1, $2, 'reserved', 0, 1, $3, $4, $5)",
    )
    .bind(position)
    .bind(account)
    .bind(video)
    .bind(format!("user:{account}"))
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO videos (id, owner_id, status, provider_preference, model, prompt,
                             duration_seconds, aspect_ratio, resolution, estimated_cost,
                             created_at, updated_at, version)
         VALUES ($1, $2, 'queued', 'auto', 'simulator-v1', $3, 1, '16:9', '480p', 1, $4, $4, 1)",
    )
    .bind(video)
    .bind(account)
    .bind(PROMPT)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// `concurrency` clients, each with an account of its own, for `seconds`.
pub async fn by_hand(pool: &PgPool, concurrency: usize, seconds: u64) -> Figures {
    let mut accounts = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let account = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO credit_accounts (user_id, balance, reserved, updated_at, version)
             VALUES ($1, 1000000000, 0, now(), 0)",
        )
        .bind(account)
        .execute(pool)
        .await
        .expect("bench account");
        accounts.push((account, Arc::new(AtomicI64::new(0))));
    }
    let (pool, accounts) = (pool.clone(), Arc::new(accounts));
    load(concurrency, seconds, move |client| {
        let (pool, accounts) = (pool.clone(), accounts.clone());
        async move {
            let (account, sequence) = &accounts[client];
            let sequence = sequence.fetch_add(1, Ordering::Relaxed) + 1;
            request(&pool, *account, sequence)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
}

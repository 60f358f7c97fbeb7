//! The data key store: one AES-256 key per user in `data_keys`, wrapped by a master key
//! (migrations/0026_data_keys.sql), with a cache of unwrapped keys.
//!
//! Writers read their user's key row under a share lock in the writing transaction (so an
//! erasure waits for the writes in flight and the writes after it see the tombstone).
//! Readers ask the table which of a batch's users still have a key (one query per batch, so
//! an erasure shows at once in every process). Both use the cache only to skip unwrapping,
//! and never cache a key their own transaction made (it may still roll back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::{PgConnection, PgPool};

use super::crypto::SecretKey;
use super::keyring::Keyring;
use super::PiiError;

/// Unwrapped keys kept in memory at most (a replay touches every user once per batch).
const CACHE_LIMIT: usize = 100_000;

/// A key row: wrapped key, master key version (both `None` for a tombstone), and whether
/// this transaction made it.
type KeyRow = (Option<Vec<u8>>, Option<i32>, bool);

/// A [`KeyRow`] with its user.
type UserKeyRow = (String, Option<Vec<u8>>, Option<i32>, bool);

/// A user's key row, read under a share lock.
async fn locked(conn: &mut PgConnection, user: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT wrapped_key, master_key_version, created_at = transaction_timestamp()
           FROM public.data_keys WHERE user_id = $1 FOR SHARE",
    )
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// A user's key as a reader finds it.
#[derive(Debug, Clone)]
pub enum KeyState {
    Live(Arc<SecretKey>),
    /// The user was erased: the key is gone for good.
    Erased,
    /// The user never had a key (everything of theirs was written before encryption).
    Absent,
}

struct Cached {
    master_version: i32,
    wrapped: Vec<u8>,
    key: Arc<SecretKey>,
}

#[derive(Default)]
pub struct DataKeys {
    cache: Mutex<HashMap<String, Cached>>,
}

impl DataKeys {
    fn remember(&self, user: &str, master_version: i32, wrapped: Vec<u8>, key: Arc<SecretKey>) {
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(
            user.to_owned(),
            Cached {
                master_version,
                wrapped,
                key,
            },
        );
    }

    /// Forgets every unwrapped key (after a rotation or an erasure).
    pub fn forget(&self, user: Option<&str>) {
        let mut cache = lock(&self.cache);
        match user {
            Some(user) => {
                cache.remove(user);
            }
            None => cache.clear(),
        }
    }

    /// The key to seal `user`'s data with, made on first use; `Erased` for an erased user
    /// (whose tombstone forbids a new key).
    ///
    /// Every write reads its user's key row under a share lock, in the writing transaction:
    /// an erasure (which updates the row) waits for the writes in flight, so its scrubs see
    /// what they committed, and a write after it finds the tombstone. A key made here is
    /// not cached: the transaction may still roll back, and data sealed under a key that was
    /// never committed could never be opened. The cache only saves the unwrapping.
    pub async fn for_write(
        &self,
        keyring: &Keyring,
        conn: &mut PgConnection,
        user: &str,
    ) -> Result<KeyState, PiiError> {
        let mut row = locked(&mut *conn, user).await?;
        if row.is_none() {
            let fresh = SecretKey::generate();
            sqlx::query(
                "INSERT INTO public.data_keys (user_id, wrapped_key, master_key_version)
                 VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user)
            .bind(fresh.wrap(keyring.current(), user))
            .bind(keyring.current_version() as i32)
            .execute(&mut *conn)
            .await?;
            row = locked(&mut *conn, user).await?;
        }
        let Some((wrapped, version, mine)) = row else {
            return Ok(KeyState::Absent);
        };
        let (Some(wrapped), Some(version)) = (wrapped, version) else {
            return Ok(KeyState::Erased);
        };
        Ok(KeyState::Live(
            self.unwrapped(keyring, user, wrapped, version, !mine)?,
        ))
    }

    /// `user`'s key from the cache if it holds these wrapped bytes, else unwrapped (and
    /// remembered if `keep`).
    fn unwrapped(
        &self,
        keyring: &Keyring,
        user: &str,
        wrapped: Vec<u8>,
        version: i32,
        keep: bool,
    ) -> Result<Arc<SecretKey>, PiiError> {
        let hit = lock(&self.cache)
            .get(user)
            .filter(|c| c.master_version == version && c.wrapped == wrapped)
            .map(|c| Arc::clone(&c.key));
        if let Some(key) = hit {
            return Ok(key);
        }
        let key = Arc::new(unwrap(keyring, &wrapped, version, user)?);
        if keep {
            self.remember(user, version, wrapped, Arc::clone(&key));
        }
        Ok(key)
    }

    /// The state of each of `users`' keys, in one query.
    pub async fn for_read<'c>(
        &self,
        keyring: &Keyring,
        db: impl sqlx::PgExecutor<'c>,
        users: &[String],
    ) -> Result<HashMap<String, KeyState>, PiiError> {
        // `mine`: made by this very transaction, which may still roll back: not cached.
        let rows: Vec<UserKeyRow> = sqlx::query_as(
            "SELECT user_id, wrapped_key, master_key_version,
                    created_at = transaction_timestamp()
               FROM public.data_keys
              WHERE user_id = ANY($1)",
        )
        .bind(users)
        .fetch_all(db)
        .await?;
        let mut states: HashMap<String, KeyState> = users
            .iter()
            .map(|user| (user.clone(), KeyState::Absent))
            .collect();
        for (user, wrapped, version, mine) in rows {
            let (Some(wrapped), Some(version)) = (wrapped, version) else {
                states.insert(user, KeyState::Erased);
                continue;
            };
            let key = self.unwrapped(keyring, &user, wrapped, version, !mine)?;
            states.insert(user, KeyState::Live(key));
        }
        Ok(states)
    }

    /// Destroys `user`'s key for good (a tombstone stays) and releases their email claim.
    pub async fn destroy(&self, conn: &mut PgConnection, user: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO data_keys (user_id, wrapped_key, master_key_version, erased_at)
             VALUES ($1, NULL, NULL, now())
             ON CONFLICT (user_id) DO UPDATE
                SET wrapped_key = NULL, master_key_version = NULL, erased_at = now()",
        )
        .bind(user)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM email_claims WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        self.forget(Some(user));
        Ok(())
    }

    /// Re-wraps every data key not wrapped by the current master key, in batches, each in a
    /// transaction of its own. Returns how many were re-wrapped.
    ///
    /// A batch waits for the rows that writes hold (each write reads its user's key under a
    /// share lock until it commits) instead of skipping them: a skipped row would keep its old
    /// wrapping while the count said the rotation was done, and the old master key could not
    /// be dropped. A batch that deadlocks with writes (one touching two users' keys) is run
    /// again. It ends when no key under another master key is left.
    pub async fn rotate(&self, keyring: &Keyring, pool: &PgPool) -> Result<u64, PiiError> {
        let mut rotated = 0;
        let mut deadlocks = 0;
        loop {
            match rotate_batch(keyring, pool).await {
                // Rows another rotation took while this batch waited drop out of it: done
                // only when none is left at all.
                Ok(0) if remaining(keyring, pool).await? == 0 => break,
                Ok(done) => rotated += done,
                Err(PiiError::Database(error))
                    if is_deadlock(&error) && deadlocks < MAX_DEADLOCK_RETRIES =>
                {
                    deadlocks += 1;
                    tracing::warn!(%error, "a rotation batch deadlocked with writes; again");
                }
                Err(error) => return Err(error),
            }
        }
        self.forget(None);
        Ok(rotated)
    }
}

/// How often a batch of [`DataKeys::rotate`] is run again after a deadlock before the
/// rotation gives up (it can be run again: it is idempotent).
const MAX_DEADLOCK_RETRIES: u32 = 20;

/// Postgres's SQLSTATE for a deadlock.
const DEADLOCK_DETECTED: &str = "40P01";

pub(crate) fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(DEADLOCK_DETECTED))
}

/// How many live keys are wrapped by another master key than the current one.
async fn remaining(keyring: &Keyring, pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM data_keys WHERE wrapped_key IS NOT NULL AND master_key_version <> $1",
    )
    .bind(keyring.current_version() as i32)
    .fetch_one(pool)
    .await
}

/// Re-wraps up to 500 keys not under the current master key, waiting for rows that writes
/// hold; returns how many.
async fn rotate_batch(keyring: &Keyring, pool: &PgPool) -> Result<u64, PiiError> {
    let current = keyring.current_version() as i32;
    let mut tx = pool.begin().await?;
    // No SKIP LOCKED: see `DataKeys::rotate`. A row another rotation re-wrapped while this
    // one waited is checked again and left out (its version is current by then).
    let rows: Vec<(String, Vec<u8>, i32)> = sqlx::query_as(
        "SELECT user_id, wrapped_key, master_key_version FROM data_keys
          WHERE wrapped_key IS NOT NULL AND master_key_version <> $1
          ORDER BY user_id LIMIT 500 FOR UPDATE",
    )
    .bind(current)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut users = Vec::with_capacity(rows.len());
    let mut wrapped = Vec::with_capacity(rows.len());
    for (user, old, version) in rows {
        let key = unwrap(keyring, &old, version, &user)?;
        wrapped.push(key.wrap(keyring.current(), &user));
        users.push(user);
    }
    let done = sqlx::query(
        "UPDATE data_keys d SET wrapped_key = r.wrapped, master_key_version = $3,
                rotated_at = now()
           FROM unnest($1::text[], $2::bytea[]) AS r(user_id, wrapped)
          WHERE d.user_id = r.user_id",
    )
    .bind(&users)
    .bind(&wrapped)
    .bind(current)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

fn unwrap(
    keyring: &Keyring,
    wrapped: &[u8],
    version: i32,
    user: &str,
) -> Result<SecretKey, PiiError> {
    let master = u32::try_from(version)
        .ok()
        .and_then(|version| keyring.master(version))
        .ok_or(PiiError::UnknownMasterKey(version))?;
    SecretKey::unwrap(wrapped, master, user).ok_or_else(|| PiiError::Unwrap(user.to_owned()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

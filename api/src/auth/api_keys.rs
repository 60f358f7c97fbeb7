//! API keys: `fg_` + 32 random bytes, shown once, stored as SHA-256.
//!
//! The secret has full entropy, so a fast hash is enough and allows a lookup by hash. The
//! api_keys read model answers "which key is this"; revocation is applied by its projector
//! before the revoking request returns, so it takes effect immediately.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use framegate_domain::{hash_token, ApiKeyHash, Role};
use framegate_projections::read_models::api_keys::{self, KeyOwner};
use uuid::Uuid;

use super::refresh::generate_secret;
use super::{Credential, Principal};
use crate::error::ApiError;
use crate::state::AppState;

pub const KEY_PREFIX: &str = "fg_";

/// How often a key's last use is written at most.
const USAGE_WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// A newly minted key.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
    pub hash: ApiKeyHash,
}

pub fn generate() -> NewKey {
    let secret = generate_secret(KEY_PREFIX);
    // Enough of the key to recognise it in a list, far too little to guess the rest.
    let prefix: String = secret.chars().take(KEY_PREFIX.len() + 8).collect();
    let hash = ApiKeyHash::new(hash_token(&secret).into_inner());
    NewKey {
        secret,
        prefix,
        hash,
    }
}

pub async fn authenticate(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    let key = owner(state, hash_token(secret).as_str())
        .await?
        .ok_or_else(|| ApiError::unauthenticated("invalid_api_key", "the API key is not valid"))?;
    if key.revoked {
        return Err(ApiError::unauthenticated(
            "api_key_revoked",
            "the API key has been revoked",
        ));
    }
    if key.disabled {
        return Err(ApiError::unauthenticated(
            "account_disabled",
            "this account is disabled",
        ));
    }
    if state.key_usage.should_record(key.key_id) {
        sqlx::query(
            "INSERT INTO api_key_usage (key_id, last_used_at) VALUES ($1, now())
             ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
        )
        .bind(key.key_id)
        .execute(&state.pool)
        .await?;
    }
    Ok(Principal {
        user_id: framegate_domain::UserId::from_uuid(key.user_id),
        role: if key.role == "admin" {
            Role::Admin
        } else {
            Role::User
        },
        credential: Credential::ApiKey {
            key_id: key.key_id,
            scopes: key.scopes,
        },
    })
}

/// Whether the key `secret` is known to the cache, as a key or as no key: authenticating it
/// costs no lookup in the store.
pub fn resolved_without_lookup(state: &AppState, secret: &str) -> bool {
    let hash = hash_token(secret);
    state.credentials.key(hash.as_str()).is_some()
        || state.credentials.is_unknown_key(hash.as_str())
}

/// The key with this hash and its owner's state, from the cache or the read model. Unknown
/// hashes are remembered briefly (a guesser repeating one costs nothing), and the lookup of a
/// new one is charged to the caller's IP before it is made (`rate_limit::layer`).
async fn owner(state: &AppState, key_hash: &str) -> Result<Option<KeyOwner>, ApiError> {
    if let Some(cached) = state.credentials.key(key_hash) {
        return Ok(Some(cached));
    }
    if state.credentials.is_unknown_key(key_hash) {
        return Ok(None);
    }
    let seen = state.credentials.generation();
    state.credentials.count_key_lookup();
    let found = api_keys::find_owner_by_hash(&state.pool, key_hash).await?;
    match &found {
        Some(owner) => state.credentials.keep_key(key_hash, owner, seen),
        None => state.credentials.keep_unknown_key(key_hash),
    }
    Ok(found)
}

/// Remembers when each key's use was last written, so a busy key costs one write a minute
/// rather than one per request.
#[derive(Default)]
pub struct UsageTracker {
    written: Mutex<HashMap<Uuid, Instant>>,
}

impl UsageTracker {
    pub fn should_record(&self, key_id: Uuid) -> bool {
        let Ok(mut written) = self.written.lock() else {
            return true;
        };
        let now = Instant::now();
        match written.get(&key_id) {
            Some(last) if now.duration_since(*last) < USAGE_WRITE_INTERVAL => false,
            _ => {
                written.insert(key_id, now);
                true
            }
        }
    }
}

//! What authenticating a request looked up, kept in memory while Postgres promises to say
//! when it changes.
//!
//! Every authenticated request needs its caller's current state: for an API key the key and
//! its owner (one join), for an access token the user's role and whether they are disabled.
//! Read from Postgres each time, that lookup costs as much as the request's own work. The
//! account projectors announce each change that matters (a key revoked, a user disabled, a
//! role changed) on [`CREDENTIALS_CHANNEL`] inside the transaction that makes it visible, and
//! [`spawn_listener`] drops the user's entries when the announcement arrives.
//!
//! The cache answers only while that listener is connected: before it has subscribed, after
//! its connection broke (announcements may have been missed) and in a process that never
//! started it, every lookup goes to Postgres. A lookup that raced an announcement is not
//! kept (the generation counter), entries expire after [`TTL`] as a last resort, and each map
//! is bounded. The process that executes a change also forgets locally before it answers, so
//! its caller sees the change at once; other API processes see it when the announcement
//! arrives, one notification delivery after the projector's commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use framegate_projections::read_models::api_keys::KeyOwner;
use framegate_projections::read_models::{CREDENTIALS_ALL, CREDENTIALS_CHANNEL};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The longest an entry is used, announcements or not.
pub const TTL: Duration = Duration::from_secs(60);

/// Entries per map; a full map is emptied rather than tracked per entry.
const CAPACITY: usize = 10_000;

/// The longest wait between attempts to reconnect the listener (it starts at 100 ms and is
/// reset by every subscription that worked).
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// A user's state as authorisation needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserState {
    pub admin: bool,
    pub disabled: bool,
}

/// A value read at a known generation: [`CredentialCache::keep_key`] and
/// [`CredentialCache::keep_user`] store it only if nothing was forgotten since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

struct Entry<T> {
    value: T,
    stored: Instant,
}

#[derive(Default)]
pub struct CredentialCache {
    /// Whether the listener is subscribed: the cache answers only then.
    live: AtomicBool,
    /// Bumped by every forget, so a lookup that started before one is not kept.
    generation: AtomicU64,
    /// By the SHA-256 of the presented key.
    keys: Mutex<HashMap<String, Entry<KeyOwner>>>,
    users: Mutex<HashMap<Uuid, Entry<UserState>>>,
}

impl CredentialCache {
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The generation to pass to `keep_*` after a lookup started now.
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    pub fn key(&self, key_hash: &str) -> Option<KeyOwner> {
        if !self.is_live() {
            return None;
        }
        fresh(&self.keys, key_hash)
    }

    pub fn user(&self, user_id: Uuid) -> Option<UserState> {
        if !self.is_live() {
            return None;
        }
        fresh(&self.users, &user_id)
    }

    pub fn keep_key(&self, key_hash: &str, owner: &KeyOwner, seen: Generation) {
        self.keep(&self.keys, key_hash.to_owned(), owner.clone(), seen);
    }

    pub fn keep_user(&self, user_id: Uuid, state: UserState, seen: Generation) {
        self.keep(&self.users, user_id, state, seen);
    }

    /// Drops everything cached about `user_id` (their keys and their state).
    pub fn forget_user(&self, user_id: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut keys) = self.keys.lock() {
            keys.retain(|_, entry| entry.value.user_id != user_id);
        }
        if let Ok(mut users) = self.users.lock() {
            users.remove(&user_id);
        }
    }

    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
        if let Ok(mut users) = self.users.lock() {
            users.clear();
        }
    }

    /// Applies one announcement's payload: a user id, or `*` for everything. Anything else
    /// is treated as `*`: forgetting too much only costs lookups.
    pub fn apply(&self, payload: &str) {
        match Uuid::parse_str(payload) {
            Ok(user_id) => self.forget_user(user_id),
            Err(_) => {
                if payload != CREDENTIALS_ALL {
                    tracing::warn!(payload, "unexpected credentials announcement");
                }
                self.forget_all();
            }
        }
    }

    /// Starts answering (the listener has just subscribed); anything older is dropped, since
    /// announcements sent before the subscription were not heard.
    pub fn go_live(&self) {
        self.forget_all();
        self.live.store(true, Ordering::Release);
    }

    /// Stops answering and drops everything (the listener lost its connection).
    pub fn suspend(&self) {
        self.live.store(false, Ordering::Release);
        self.forget_all();
    }

    fn keep<K, V>(&self, map: &Mutex<HashMap<K, Entry<V>>>, key: K, value: V, seen: Generation)
    where
        K: std::hash::Hash + Eq,
    {
        if !self.is_live() {
            return;
        }
        let Ok(mut map) = map.lock() else {
            return;
        };
        // Checked under the lock: a forget that bumps the generation after this check
        // takes the same lock afterwards and removes the entry.
        if self.generation() != seen {
            return;
        }
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                value,
                stored: Instant::now(),
            },
        );
    }
}

fn fresh<K, Q, V>(map: &Mutex<HashMap<K, Entry<V>>>, key: &Q) -> Option<V>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    V: Clone,
{
    let map = map.lock().ok()?;
    map.get(key)
        .filter(|entry| entry.stored.elapsed() < TTL)
        .map(|entry| entry.value.clone())
}

/// Listens on [`CREDENTIALS_CHANNEL`] until `shutdown` flips, keeping `cache` live while
/// subscribed and delivering, and reconnecting with backoff when the connection breaks.
pub fn spawn_listener(
    pool: PgPool,
    cache: std::sync::Arc<CredentialCache>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run_listener(pool, cache, HEARTBEAT, shutdown))
}

/// How often the listener checks, by notifying itself, that its connection still delivers.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Payloads that start with this are the listeners' own heartbeats, not announcements.
const PING_PREFIX: &str = "ping:";

/// [`spawn_listener`]'s loop, with the heartbeat interval as a parameter (tests shorten it).
pub async fn run_listener(
    pool: PgPool,
    cache: std::sync::Arc<CredentialCache>,
    heartbeat: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let went_live = AtomicBool::new(false);
        tokio::select! {
            outcome = listen(&pool, &cache, heartbeat, &went_live) => {
                cache.suspend();
                match outcome {
                    Ok(()) => tracing::warn!("credentials listener lost its connection; cache off until it is back"),
                    Err(error) => tracing::warn!(%error, "credentials listener failed; cache off until it is back"),
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => {
                cache.suspend();
                return;
            }
        }
        // A subscription that worked starts the backoff over.
        if went_live.load(Ordering::Acquire) {
            delay = Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

/// One subscription: returns when the connection is lost, or when it stops delivering (a
/// heartbeat did not come back within three intervals: a connection can die without closing).
async fn listen(
    pool: &PgPool,
    cache: &CredentialCache,
    heartbeat: Duration,
    went_live: &AtomicBool,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends this subscription (`try_recv` says so with `None`); the caller
    // connects afresh and goes live only once subscribed again.
    listener.eager_reconnect(false);
    listener.listen(CREDENTIALS_CHANNEL).await?;
    cache.go_live();
    went_live.store(true, Ordering::Release);
    let ping = format!("{PING_PREFIX}{}", Uuid::new_v4());
    let started = Instant::now();
    // Milliseconds after `started` when our own ping last came back.
    let last_pong = AtomicU64::new(0);
    let receive = async {
        while let Some(notification) = listener.try_recv().await? {
            let payload = notification.payload();
            if payload == ping {
                let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                last_pong.store(now, Ordering::Release);
            } else if !payload.starts_with(PING_PREFIX) {
                cache.apply(payload);
            }
        }
        Ok::<(), sqlx::Error>(())
    };
    let watch = async {
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let silent_for = started
                .elapsed()
                .saturating_sub(Duration::from_millis(last_pong.load(Ordering::Acquire)));
            if silent_for > heartbeat * 3 {
                tracing::warn!(?silent_for, "credentials listener hears nothing back");
                return Ok::<(), sqlx::Error>(());
            }
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CREDENTIALS_CHANNEL)
                .bind(&ping)
                .execute(pool)
                .await?;
        }
    };
    // Whichever ends first ends the subscription; the listener is dropped with it.
    tokio::select! {
        outcome = receive => outcome,
        outcome = watch => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(user_id: Uuid) -> KeyOwner {
        KeyOwner {
            key_id: Uuid::new_v4(),
            user_id,
            scopes: vec!["credits:read".to_owned()],
            revoked: false,
            role: "user".to_owned(),
            disabled: false,
        }
    }

    fn live() -> CredentialCache {
        let cache = CredentialCache::default();
        cache.go_live();
        cache
    }

    #[test]
    fn answers_only_while_live() {
        let cache = CredentialCache::default();
        let user = Uuid::new_v4();
        cache.keep_key("h", &owner(user), cache.generation());
        assert_eq!(cache.key("h"), None, "kept before the listener subscribed");

        cache.go_live();
        cache.keep_key("h", &owner(user), cache.generation());
        assert!(cache.key("h").is_some());

        cache.suspend();
        assert_eq!(cache.key("h"), None, "answered after the connection broke");
        cache.go_live();
        assert_eq!(cache.key("h"), None, "an entry survived the outage");
    }

    #[test]
    fn a_lookup_that_raced_a_forget_is_not_kept() {
        let cache = live();
        let user = Uuid::new_v4();
        let seen = cache.generation();
        cache.forget_user(Uuid::new_v4());
        cache.keep_key("h", &owner(user), seen);
        cache.keep_user(
            user,
            UserState {
                admin: false,
                disabled: false,
            },
            seen,
        );
        assert_eq!(cache.key("h"), None);
        assert_eq!(cache.user(user), None);
    }

    #[test]
    fn an_announcement_drops_that_users_keys_and_state_only() {
        let cache = live();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let state = UserState {
            admin: true,
            disabled: false,
        };
        let seen = cache.generation();
        cache.keep_key("alice-1", &owner(alice), seen);
        cache.keep_key("alice-2", &owner(alice), seen);
        cache.keep_key("bob", &owner(bob), seen);
        cache.keep_user(alice, state, seen);
        cache.keep_user(bob, state, seen);

        cache.apply(&alice.to_string());
        assert_eq!(cache.key("alice-1"), None);
        assert_eq!(cache.key("alice-2"), None);
        assert_eq!(cache.user(alice), None);
        assert!(cache.key("bob").is_some());
        assert_eq!(cache.user(bob), Some(state));

        cache.apply(CREDENTIALS_ALL);
        assert_eq!(cache.key("bob"), None);
        assert_eq!(cache.user(bob), None);
    }

    #[test]
    fn a_full_map_starts_over() {
        let cache = live();
        let seen = cache.generation();
        for n in 0..CAPACITY {
            cache.keep_key(&n.to_string(), &owner(Uuid::new_v4()), seen);
        }
        assert!(cache.key("0").is_some());
        cache.keep_key("one more", &owner(Uuid::new_v4()), seen);
        assert_eq!(cache.key("0"), None);
        assert!(cache.key("one more").is_some());
    }
}

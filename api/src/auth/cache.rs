//! What authenticating a request looked up, kept in memory while Postgres promises to say
//! when it changes.
//!
//! Every authenticated request needs its caller's current state: for an API key the key and
//! its owner (one join), for an access token the user's role, whether they are disabled and
//! whether the token's session is still live.
//! Read from Postgres each time, that lookup costs as much as the request's own work. The
//! account projectors announce each change that matters (a key revoked, a user disabled, a
//! role changed), and ending a session announces itself, on [`CREDENTIALS_CHANNEL`] inside the transaction that makes it visible, and
//! [`spawn_follower`] drops the user's entries when the process's shared listener
//! (`framegate_projections::notify`) hears the announcement.
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

use framegate_commands::sessions::SessionState;
use framegate_projections::notify::{Event, Heard, Notifications};
use framegate_projections::read_models::api_keys::KeyOwner;
use framegate_projections::read_models::{CREDENTIALS_ALL, CREDENTIALS_CHANNEL};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The longest an entry is used, announcements or not.
pub const TTL: Duration = Duration::from_secs(60);

/// Entries per map; a full map is emptied rather than tracked per entry.
const CAPACITY: usize = 10_000;

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
    /// Sessions access tokens named, by session id, with their user (dropped with the user's
    /// other entries when a session of theirs ends).
    sessions: Mutex<HashMap<Uuid, Entry<SessionState>>>,
    /// Hashes of presented keys no key has, for [`UNKNOWN_TTL`]: a guesser repeating a key
    /// costs no lookup. Independent of the listener: a key is never issued with a hash that
    /// somebody presented before (the secret has 256 random bits).
    unknown: Mutex<HashMap<String, Instant>>,
    /// Lookups of keys in the store, since start (for tests and operators).
    key_lookups: AtomicU64,
}

/// How long a presented key that no key has is remembered as unknown.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(30);

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

    /// Whether `key_hash` was looked up lately and no key has it.
    pub fn is_unknown_key(&self, key_hash: &str) -> bool {
        let Ok(unknown) = self.unknown.lock() else {
            return false;
        };
        unknown
            .get(key_hash)
            .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
    }

    /// Remembers that no key has `key_hash`.
    pub fn keep_unknown_key(&self, key_hash: &str) {
        let Ok(mut unknown) = self.unknown.lock() else {
            return;
        };
        if unknown.len() >= CAPACITY {
            unknown.retain(|_, at| at.elapsed() < UNKNOWN_TTL);
            if unknown.len() >= CAPACITY {
                unknown.clear();
            }
        }
        unknown.insert(key_hash.to_owned(), Instant::now());
    }

    /// Counts one lookup of a key in the store.
    pub fn count_key_lookup(&self) {
        self.key_lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// How many keys were looked up in the store since start.
    pub fn key_lookups(&self) -> u64 {
        self.key_lookups.load(Ordering::Relaxed)
    }

    pub fn user(&self, user_id: Uuid) -> Option<UserState> {
        if !self.is_live() {
            return None;
        }
        fresh(&self.users, &user_id)
    }

    pub fn session(&self, session_id: Uuid) -> Option<SessionState> {
        if !self.is_live() {
            return None;
        }
        fresh(&self.sessions, &session_id)
    }

    /// How many sessions are cached (for tests).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map_or(0, |sessions| sessions.len())
    }

    pub fn keep_session(&self, session_id: Uuid, state: SessionState, seen: Generation) {
        self.keep(&self.sessions, session_id, state, seen);
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
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, entry| entry.value.user_id != user_id);
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
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.clear();
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

/// Keeps `cache` in step with what the process's shared listener hears until `shutdown`
/// flips: live while the listener is subscribed and delivering, emptied and off whenever it
/// is not (announcements may have been missed), and each announcement applied as it comes.
pub fn spawn_follower(
    cache: std::sync::Arc<CredentialCache>,
    notifications: &Notifications,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(follow(cache, notifications.subscribe(), shutdown))
}

async fn follow(
    cache: std::sync::Arc<CredentialCache>,
    mut heard: Heard,
    mut shutdown: watch::Receiver<bool>,
) {
    // Subscribed before asking: a change after this arrives as an event.
    if heard.is_live() {
        cache.go_live();
    }
    loop {
        let event = tokio::select! {
            event = heard.recv() => event,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match event {
            Event::Notification { channel, payload } if channel == CREDENTIALS_CHANNEL => {
                cache.apply(&payload);
            }
            Event::Notification { .. } => {}
            Event::Missed => cache.go_live(),
            Event::Down => {
                tracing::warn!("credentials listener is down; cache off until it is back");
                cache.suspend();
            }
        }
    }
    cache.suspend();
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

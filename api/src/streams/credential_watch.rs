//! Tells open event streams that their user's credentials may have changed, so that a
//! revoked key or a disabled user stops receiving video states (and fresh signed links) at
//! once instead of at the end of the stream.
//!
//! The account projectors announce such changes on `CREDENTIALS_CHANNEL` (the payload is a
//! user id, or `*` for everyone; see `auth::cache`). [`CredentialWatch::run`] hears them on
//! the process's shared listener and bumps the counter of that user's streams, which then
//! authenticate their request again. It first makes the credential cache forget the user
//! itself: the cache's own follower hears the same announcement on another receiver, in no
//! particular order with this one, and a stream must not authenticate against an entry the
//! announcement was about to drop. When announcements may have been missed (the listener
//! reconnected or fell behind) every stream authenticates again, spread over
//! [`EVERYONE_SPREAD`] so that they do not all look their callers up at the same instant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use framegate_projections::notify::{Event, Heard};
use framegate_projections::read_models::CREDENTIALS_CHANNEL;
use tokio::sync::watch;
use uuid::Uuid;

use crate::auth::cache::CredentialCache;

/// Over how long the streams spread their checks when everyone's credentials may have changed.
pub const EVERYONE_SPREAD: Duration = Duration::from_secs(2);

/// What a stream's counter says about the last change: whether it concerned everyone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    pub everyone: bool,
}

/// One counter per user with open streams.
#[derive(Default)]
pub struct CredentialWatch {
    users: Mutex<HashMap<Uuid, watch::Sender<Change>>>,
}

/// Users kept before the map is swept of users without streams.
const SWEEP_AT: usize = 1024;

impl CredentialWatch {
    /// A receiver that changes whenever `user`'s credentials may have.
    pub fn watch(&self, user: Uuid) -> watch::Receiver<Change> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if users.len() >= SWEEP_AT && !users.contains_key(&user) {
            users.retain(|_, sender| sender.receiver_count() > 0);
        }
        users
            .entry(user)
            .or_insert_with(|| watch::channel(Change::default()).0)
            .subscribe()
    }

    fn changed(&self, user: Option<Uuid>) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users.retain(|_, sender| sender.receiver_count() > 0);
        match user {
            Some(user) => {
                if let Some(sender) = users.get(&user) {
                    sender.send_replace(Change { everyone: false });
                }
            }
            None => {
                for sender in users.values() {
                    sender.send_replace(Change { everyone: true });
                }
            }
        }
    }

    /// Follows the announcements `heard` hears until `shutdown` flips.
    pub async fn run(
        self: Arc<Self>,
        cache: Arc<CredentialCache>,
        mut heard: Heard,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                event = heard.recv() => event,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match event {
                Event::Notification { channel, payload } if channel == CREDENTIALS_CHANNEL => {
                    cache.apply(&payload);
                    self.changed(Uuid::parse_str(&payload).ok());
                }
                Event::Missed => {
                    cache.forget_all();
                    self.changed(None);
                }
                // While the listener is down the cache answers nothing (every check reads
                // Postgres) and the streams' periodic checks go on.
                Event::Notification { .. } | Event::Down => {}
            }
        }
    }
}

//! Aggregate states kept in memory between commands (docs/adr/0022-request-path-round-trips.md).
//!
//! Every video request decides a reservation against its owner's credit account, and loading
//! that account is a read of its snapshot and the events after it, decoded: the most
//! expensive statement of a request. Within one process the commands on an account already
//! queue on its lock (`store::Aggregates::lock`), so the state one command committed is the
//! state the next one needs: the command that holds the lock *takes* the entry and *returns*
//! it only once its events committed. A state is therefore never shared nor cloned, a command
//! that failed leaves nothing behind (the next load reads the store), and a state another
//! process moved on is caught by the append's optimistic check: the conflict is retried
//! against a fresh load, as every credit command is.
//!
//! A cache, nothing more: bounded, and losing any entry at any time is always safe.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many aggregates one process keeps (a credit account's state grows by ~90 bytes per
/// video its user ever made).
pub const CAPACITY: usize = 4096;

/// The committed states of some aggregates of one type, with their sequences.
pub struct StateCache<A> {
    entries: Mutex<HashMap<String, (A, usize)>>,
    capacity: usize,
}

impl<A> Default for StateCache<A> {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl<A> StateCache<A> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (A, usize)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the state of `id` and its sequence out of the cache, if it is there.
    pub fn take(&self, id: &str) -> Option<(A, usize)> {
        self.entries().remove(id)
    }

    /// Keeps `state` of `id` as committed at `sequence`, unless a later one is kept already.
    /// A full cache drops an arbitrary entry first.
    pub fn put(&self, id: &str, state: A, sequence: usize) {
        let mut entries = self.entries();
        if entries.get(id).is_some_and(|(_, kept)| *kept > sequence) {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(id) {
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(id.to_owned(), (state, sequence));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_state_is_gone_until_it_is_put_back() {
        let cache = StateCache::with_capacity(4);
        cache.put("a", 10, 3);
        assert_eq!(cache.take("a"), Some((10, 3)));
        assert_eq!(cache.take("a"), None);
    }

    #[test]
    fn an_older_state_never_replaces_a_newer_one() {
        let cache = StateCache::with_capacity(4);
        cache.put("a", 20, 5);
        cache.put("a", 10, 4);
        assert_eq!(cache.take("a"), Some((20, 5)));
    }

    #[test]
    fn a_full_cache_stays_within_its_capacity() {
        let cache = StateCache::with_capacity(2);
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.put(id, i, 1);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.take("d"), Some((3, 1)));
    }
}

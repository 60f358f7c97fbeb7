//! How many event streams are open, per user and in all. A [`Slot`] is one open stream: it is
//! taken before the stream starts and given back when the stream is dropped, however it ends
//! (finished, lifetime, revocation, client gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use uuid::Uuid;

/// What a refused stream is told to wait before trying again when the user holds too many:
/// their streams end at the latest after the lifetime, usually much sooner (a video finishes).
pub const USER_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The same when the process holds too many; another process may have room sooner.
pub const PROCESS_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user holds `max_per_user` streams already.
    User,
    /// The process holds `max_total` streams already.
    Process,
}

#[derive(Default)]
struct Counts {
    total: u32,
    per_user: HashMap<Uuid, u32>,
}

/// The open streams of this process.
pub struct StreamSlots {
    max_per_user: u32,
    max_total: u32,
    counts: Mutex<Counts>,
}

impl StreamSlots {
    pub fn new(max_per_user: u32, max_total: u32) -> Arc<Self> {
        Arc::new(Self {
            max_per_user,
            max_total,
            counts: Mutex::default(),
        })
    }

    /// Takes a slot for one more stream of `user`, or says which cap refuses it.
    pub fn acquire(self: &Arc<Self>, user: Uuid) -> Result<Slot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.per_user.get(&user).copied().unwrap_or(0);
        if held >= self.max_per_user {
            return Err(Refusal::User);
        }
        if counts.total >= self.max_total {
            return Err(Refusal::Process);
        }
        counts.total += 1;
        counts.per_user.insert(user, held + 1);
        Ok(Slot {
            slots: self.clone(),
            user,
        })
    }

    /// Streams open now: in all, and of `user`.
    pub fn open(&self, user: Uuid) -> (u32, u32) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (
            counts.total,
            counts.per_user.get(&user).copied().unwrap_or(0),
        )
    }

    fn release(&self, user: Uuid) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.per_user.get_mut(&user) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.per_user.remove(&user);
            }
        }
    }
}

/// One open stream; dropping it frees its place.
pub struct Slot {
    slots: Arc<StreamSlots>,
    user: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_and_the_process_have_a_cap_and_dropped_slots_free_their_place() {
        let slots = StreamSlots::new(2, 3);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = slots.acquire(alice).expect("1st");
        let _a2 = slots.acquire(alice).expect("2nd");
        assert_eq!(slots.acquire(alice).err(), Some(Refusal::User));
        let _b1 = slots.acquire(bob).expect("bob");
        assert_eq!(slots.acquire(bob).err(), Some(Refusal::Process));
        assert_eq!(slots.open(alice), (3, 2));
        drop(a1);
        assert_eq!(slots.open(alice), (2, 1));
        let _b2 = slots.acquire(bob).expect("room again");
        assert_eq!(slots.open(bob), (3, 2));
    }
}

//! Which commands may be re-run after an optimistic-concurrency conflict.
//!
//! cqrs-es loads the aggregate, decides, and appends at the next sequence; a concurrent
//! writer that appended first makes the insert fail. Re-running is safe when the command is
//! decided afresh against the new state and cannot do twice what was meant once: a
//! reservation checks the new available balance, a capture is idempotent per video. It is not
//! safe for commands that create the aggregate (a conflict there means the id or the email is
//! taken, and retrying would only hide that).

use std::time::Duration;

use framegate_domain::{CreditCommand, ImageCommand, UserCommand, VideoCommand, WebhookCommand};
use rand::Rng;

/// How many times a conflicting command that is safe to re-run is retried.
pub const MAX_CONFLICT_RETRIES: u32 = 8;

pub trait RetryPolicy {
    fn retry_on_conflict(&self) -> bool;
}

impl RetryPolicy for UserCommand {
    fn retry_on_conflict(&self) -> bool {
        !matches!(self, UserCommand::Register { .. })
    }
}

impl RetryPolicy for CreditCommand {
    fn retry_on_conflict(&self) -> bool {
        // Every credit command is decided against the current balance and reservations, and
        // purchases are idempotent per payment reference.
        true
    }
}

impl RetryPolicy for WebhookCommand {
    fn retry_on_conflict(&self) -> bool {
        // A rotation writes its secret beside the event: decided again, it would record a
        // second fingerprint for one secret. Creation conflicts mean the id is taken.
        matches!(
            self,
            WebhookCommand::Update { .. }
                | WebhookCommand::Disable { .. }
                | WebhookCommand::Delete { .. }
        )
    }
}

impl RetryPolicy for VideoCommand {
    fn retry_on_conflict(&self) -> bool {
        !matches!(self, VideoCommand::Request { .. })
    }
}

impl RetryPolicy for ImageCommand {
    fn retry_on_conflict(&self) -> bool {
        // Re-deciding an upload that lost a race yields `AlreadyUploaded`, which is the
        // answer the loser needs; deleting twice is refused as already deleted.
        true
    }
}

static CONFLICTS_RETRIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many optimistic-concurrency conflicts this process has retried since it started: a
/// figure for operators (a steady rise means contended aggregates) and for tests.
pub fn conflicts_retried() -> u64 {
    CONFLICTS_RETRIED.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn count_retried_conflict() {
    CONFLICTS_RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Jittered exponential backoff before retry `attempt` (1-based): spreads contending writers
/// apart so they do not collide again in lock step.
pub fn conflict_backoff(attempt: u32) -> Duration {
    let base_ms = 2u64.saturating_pow(attempt.min(8)).min(200);
    let jitter_ms = rand::thread_rng().gen_range(0..=base_ms);
    Duration::from_millis(base_ms / 2 + jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..=20 {
            let delay = conflict_backoff(attempt);
            let base = 2u64.saturating_pow(attempt.min(8)).min(200);
            assert!(delay >= Duration::from_millis(base / 2));
            assert!(delay <= Duration::from_millis(base / 2 + base));
        }
    }
}

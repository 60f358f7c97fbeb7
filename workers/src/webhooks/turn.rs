//! A queue's turn (ADR 0034): the run a claim gave the sender, then the runs behind it, for
//! as long as every row is delivered and the turn is under [`RUN_BUDGET`].
//!
//! The turn keeps one run ahead and one run behind the run it sends, so the endpoint, not
//! the database, sets its pace: while a full run is sent, the run behind it is leased
//! ([`claim::next_run`]), and the run sent before it is recorded. Runs are recorded in order:
//! a run's record starts only once the record before it has committed, and if one cannot be
//! recorded the turn stops with the runs after it unrecorded, so their leases lapse and all
//! of them are sent again from the first, in order (at least once; receivers deduplicate by
//! `webhook-id`). Rows leased ahead but never sent are given back unattempted.

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use super::claim::{self, Claimed, RUN_ROWS};
use super::outcome::{self, Attempted};
use super::sender::{lease, BoxError, Sender, RUN_BUDGET};

/// What sending a run came to.
pub(super) enum Sent {
    /// Nothing was attempted: the endpoint is off (the rows were closed).
    Closed,
    Attempted {
        attempted: Vec<Attempted>,
        /// Rows not attempted (behind a failure, past the budget, or put back).
        unsent: Vec<Claimed>,
        /// Every row of the run was attempted and delivered.
        whole: bool,
    },
}

/// Takes a queue's turn, starting with `run` (claimed, in the queue's order).
pub(super) async fn take(sender: &Sender, run: Vec<Claimed>) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut secrets = None;
    let mut rows = run;
    let mut recording: Option<JoinHandle<Result<bool, sqlx::Error>>> = None;
    loop {
        // Only a full run can have more rows right behind it; a short one ends the turn.
        let ahead = (rows.len() as i64 == RUN_ROWS).then(|| lease_ahead(sender, &rows));
        let sent = sender.send_run(rows, &mut secrets, started).await;
        let before = finish(recording.take()).await;
        let ahead = match ahead {
            Some(leasing) => match leasing.await {
                Ok(Ok(rows)) => rows,
                Ok(Err(error)) => {
                    // Whatever it may have leased lapses.
                    warn!(%error, "webhooks: cannot lease the next run");
                    Vec::new()
                }
                Err(error) => {
                    give_back(sender, &sent, &[]).await;
                    return Err(error.into());
                }
            },
            None => Vec::new(),
        };
        if let Err(error) = before {
            // The run before this one is not recorded, so neither is this one: its leases
            // lapse and both are sent again, in order (the unrecorded run still holds the
            // queue's head). What was never attempted goes back now, uncounted.
            give_back(sender, &sent, &ahead).await;
            return Err(error);
        }
        let (attempted, unsent, whole) = match sent {
            Ok(Sent::Attempted {
                attempted,
                unsent,
                whole,
            }) => (attempted, unsent, whole),
            Ok(Sent::Closed) => {
                claim::release(&sender.pool, &ahead).await?;
                return Ok(());
            }
            Err(error) => {
                claim::release(&sender.pool, &ahead).await?;
                return Err(error);
            }
        };
        let go_on =
            whole && unsent.is_empty() && !ahead.is_empty() && started.elapsed() < RUN_BUDGET;
        if !go_on {
            let unsent: Vec<Claimed> = unsent.into_iter().chain(ahead).collect();
            return sender.record_last(&attempted, &unsent).await;
        }
        // Every row delivered: nothing to disable, so the record can go on behind.
        let (pool, config) = (sender.pool.clone(), sender.config.clone());
        recording = Some(tokio::spawn(async move {
            outcome::record(&pool, &config, &attempted, &[]).await
        }));
        rows = ahead;
    }
}

/// Leases the run behind `rows` in the background.
fn lease_ahead(sender: &Sender, rows: &[Claimed]) -> JoinHandle<Result<Vec<Claimed>, sqlx::Error>> {
    let last = rows.last().expect("a run has rows");
    let (pool, queue, after) = (sender.pool.clone(), last.queue.clone(), last.seq);
    let lease = lease(&sender.config);
    tokio::spawn(async move { claim::next_run(&pool, &queue, after, lease).await })
}

/// Gives back, uncounted, the rows of a turn that stops unrecorded and were never attempted:
/// `sent`'s unsent rows and the run leased `ahead`. Best effort: what it cannot give back
/// lapses with its lease.
async fn give_back(sender: &Sender, sent: &Result<Sent, BoxError>, ahead: &[Claimed]) {
    let unsent = match sent {
        Ok(Sent::Attempted { unsent, .. }) => unsent.as_slice(),
        _ => &[],
    };
    let rows: Vec<Claimed> = unsent.iter().chain(ahead).cloned().collect();
    if let Err(error) = claim::release(&sender.pool, &rows).await {
        warn!(%error, "webhooks: cannot give back unsent rows; their leases lapse");
    }
}

/// Waits for the record of the run before, if one is under way.
async fn finish(recording: Option<JoinHandle<Result<bool, sqlx::Error>>>) -> Result<(), BoxError> {
    match recording {
        Some(recording) => {
            recording.await??;
            Ok(())
        }
        None => Ok(()),
    }
}

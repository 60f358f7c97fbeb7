//! A queue's turn (ADR 0034): the run a claim gave the sender, then the runs behind it, for
//! as long as every row is delivered and the turn is under [`RUN_BUDGET`].
//!
//! The queue is held as a whole for the turn, so the run behind is only read, not leased:
//! while a full run is sent, the run behind it is read ([`claim::next_run`]) and the run
//! sent before it is recorded, so the endpoint, not the database, sets the pace. Runs are
//! recorded in order, each moving the queue's cursor: a run's record starts only once the
//! record before it has committed, and if one cannot be recorded the turn lets go of the
//! queue with its cursor where the last record left it, so everything after it is sent again
//! from the first row, in order (at least once; receivers deduplicate by `webhook-id`).

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;
use uuid::Uuid;

use super::claim::{self, Ahead, Claimed, Hold, Run, RUN_ROWS};
use super::outcome::{self, Attempted, End, Recorded};
use super::sender::{BoxError, Sender, OUR_FAILURE_DELAY, RUN_BUDGET};

/// What sending a run came to.
pub(super) enum Sent {
    /// Nothing was attempted: the endpoint is off, and the rows are to be closed.
    Off { why: String, rows: Vec<Claimed> },
    Attempted {
        attempted: Vec<Attempted>,
        /// Rows not attempted (behind a failure, past the budget, or postponed).
        unsent: Vec<Claimed>,
        /// Every row of the run was attempted and delivered.
        whole: bool,
        /// We could not prepare a row (our failure): the rest waits a little.
        postponed: bool,
    },
}

/// Takes a turn with `run` (claimed, in its queue's order).
pub(super) async fn take(sender: &Sender, run: Run) -> Result<(), BoxError> {
    let Run {
        hold,
        mut to,
        mut rows,
    } = run;
    let started = Instant::now();
    let mut secrets = None;
    let mut recording: Option<JoinHandle<Result<Recorded, sqlx::Error>>> = None;
    loop {
        // Only a full run of a held queue can have more rows right behind it.
        let ahead = match &hold {
            Hold::Queue { queue, lease } if rows.len() as i64 == RUN_ROWS => {
                Some(read_ahead(sender, queue, *lease, &rows))
            }
            _ => None,
        };
        let sent = sender.send_run(&to, rows, &mut secrets, started).await;
        let before = finish(recording.take()).await;
        let ahead = match ahead {
            Some(reading) => match reading.await {
                Ok(Ok(ahead)) => ahead,
                Ok(Err(error)) => {
                    warn!(%error, "webhooks: cannot read the next run");
                    None
                }
                Err(error) => {
                    let_go(sender, &hold, &sent).await;
                    return Err(error.into());
                }
            },
            None => None,
        };
        if let Err(error) = before {
            // The run before this one is not recorded, so neither is this one: the queue is
            // let go with its cursor before both, and both are sent again, in order.
            let_go(sender, &hold, &sent).await;
            return Err(error);
        }
        let (attempted, unsent, whole, postponed) = match sent {
            Sent::Attempted {
                attempted,
                unsent,
                whole,
                postponed,
            } => (attempted, unsent, whole, postponed),
            Sent::Off { why, rows } => {
                // Closed only now that the run before is recorded: the close moves the cursor
                // and lets go of the queue, which that record needs to find held.
                outcome::close(&sender.pool, &sender.config, &hold, &rows, &why).await?;
                framegate_commands::metrics::webhook_skipped(rows.len() as u64);
                return Ok(());
            }
        };
        let go_on = whole && unsent.is_empty() && started.elapsed() < RUN_BUDGET;
        let Some(ahead) = ahead.filter(|_| go_on) else {
            let not_before = postponed.then(|| {
                Utc::now() + chrono::Duration::from_std(OUR_FAILURE_DELAY).unwrap_or_default()
            });
            return sender
                .record_last(&hold, &to, &attempted, &unsent, not_before)
                .await;
        };
        // Every row delivered: nothing to disable, so the record can go on behind.
        let (pool, config, held) = (sender.pool.clone(), sender.config.clone(), hold.clone());
        let endpoint = to.endpoint_id;
        recording = Some(tokio::spawn(async move {
            outcome::record(
                &pool,
                &config,
                &held,
                endpoint,
                &attempted,
                &[],
                End::Continue,
            )
            .await
        }));
        Ahead { to, rows } = ahead;
    }
}

/// Reads the run behind `rows` in the background.
fn read_ahead(
    sender: &Sender,
    queue: &str,
    lease: Uuid,
    rows: &[Claimed],
) -> JoinHandle<Result<Option<Ahead>, sqlx::Error>> {
    let after = rows.last().expect("a run has rows").seq;
    let (pool, queue) = (sender.pool.clone(), queue.to_owned());
    tokio::spawn(async move { claim::next_run(&pool, &queue, lease, after).await })
}

/// Lets go of a turn's hold unrecorded, so whoever claims it next sends its rows again from
/// the cursor (a retried row: itself). Best effort: what it cannot let go lapses with its
/// lease.
async fn let_go(sender: &Sender, hold: &Hold, sent: &Sent) {
    let rows: Vec<Claimed> = match sent {
        Sent::Attempted {
            attempted, unsent, ..
        } => attempted
            .iter()
            .map(|a| a.claimed.clone())
            .chain(unsent.iter().cloned())
            .collect(),
        Sent::Off { rows, .. } => rows.clone(),
    };
    if let Err(error) = claim::let_go(&sender.pool, hold, &rows).await {
        warn!(%error, "webhooks: cannot let go of a run; its lease lapses");
    }
}

/// Waits for the record of the run before, if one is under way.
async fn finish(
    recording: Option<JoinHandle<Result<Recorded, sqlx::Error>>>,
) -> Result<(), BoxError> {
    match recording {
        Some(recording) => match recording.await?? {
            Recorded::Held { .. } => Ok(()),
            Recorded::Lost => Err("the queue's lease was lost".into()),
        },
        None => Ok(()),
    }
}

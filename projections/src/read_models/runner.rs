//! Running the read-model projectors: each as a named subscription, drained once
//! (tests, the dev server's start) or run until shutdown, plus read-your-writes waiting.
//!
//! Every projector is its own subscription with its own checkpoint, so one that stops on a
//! bad event holds back only its own table, and each can be rebuilt alone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::{
    api_keys, credit_accounts, credit_ledger, credit_purchases, images, users, videos,
    webhook_endpoints,
};
use super::{
    ApiKeysProjector, CreditAccountsProjector, CreditLedgerProjector, CreditPurchasesProjector,
    ImagesProjector, UsersProjector, VideosProjector, WebhookEndpointsProjector,
};
use crate::log::LogPosition;
use crate::notify::Notifications;
use crate::subscription::{EventHandler, Subscription, SubscriptionError};

/// The subscription names of the read-model projectors.
pub const READ_MODELS: [&str; 8] = [
    users::SUBSCRIPTION,
    api_keys::SUBSCRIPTION,
    credit_accounts::SUBSCRIPTION,
    credit_ledger::SUBSCRIPTION,
    credit_purchases::SUBSCRIPTION,
    videos::SUBSCRIPTION,
    images::SUBSCRIPTION,
    webhook_endpoints::SUBSCRIPTION,
];

/// The first pause of a poll loop, doubled up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Every read-model projector with its subscription, in `READ_MODELS` order.
pub fn all(pool: &PgPool) -> Vec<(Subscription, Arc<dyn EventHandler>)> {
    let handlers: [Arc<dyn EventHandler>; 8] = [
        Arc::new(UsersProjector),
        Arc::new(ApiKeysProjector),
        Arc::new(CreditAccountsProjector),
        Arc::new(CreditLedgerProjector),
        Arc::new(CreditPurchasesProjector),
        Arc::new(VideosProjector),
        Arc::new(ImagesProjector),
        Arc::new(WebhookEndpointsProjector),
    ];
    READ_MODELS
        .into_iter()
        .zip(handlers)
        .map(|(name, handler)| {
            let subscription = Subscription::new(name, pool.clone()).gathering(GATHER);
            (subscription, handler)
        })
        .collect()
}

/// How long the projectors let events gather after a wake-up. Every read model is also
/// written inline, so nothing waits on them; without it each would run a transaction of its
/// own for every commit a busy API makes.
pub const GATHER: Duration = Duration::from_millis(200);

/// Drains every projector up to everything committed before the call; returns how many
/// events they handled in total.
///
/// A single `catch_up` is not enough for that: it stops at the oldest transaction running
/// anywhere in the cluster, which may be another process's. So each projector is stepped
/// until its checkpoint reaches the last event visible when the call began, pausing while
/// the horizon holds it back. Do not call it from inside an open transaction that has
/// written anything: that transaction holds the horizon back until it ends.
///
/// A projector that fails does not stop the others; the first failure is returned.
pub async fn catch_up_all(pool: &PgPool) -> Result<u64, SubscriptionError> {
    let mut total = 0;
    let mut first_error = None;
    for (subscription, handler) in all(pool) {
        match subscription.drain(handler.as_ref()).await {
            Ok(handled) => total += handled,
            Err(failure) => {
                error!(subscription = subscription.name(), error = %failure, "projector stopped");
                first_error.get_or_insert(failure);
            }
        }
    }
    first_error.map_or(Ok(total), Err)
}

/// Starts every projector on its own task, each running until `shutdown` becomes true (or
/// its sender is dropped), woken by one listener of their own. A projector that stops on an
/// error logs it and returns it.
pub fn spawn_all(
    pool: PgPool,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<(), SubscriptionError>>> {
    let (notifications, _listener) = Notifications::spawn(pool.clone(), shutdown.clone());
    spawn_all_with(pool, &notifications, shutdown)
}

/// [`spawn_all`] woken by the process's shared listener.
pub fn spawn_all_with(
    pool: PgPool,
    notifications: &Notifications,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<Result<(), SubscriptionError>>> {
    all(&pool)
        .into_iter()
        .map(|(subscription, handler)| {
            let subscription = subscription.with_notifications(notifications.clone());
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let stop = async move {
                    // A dropped sender can never say "stop" any more: treat it as the signal.
                    let _ = shutdown.wait_for(|stop| *stop).await;
                };
                let result = subscription.run(handler.as_ref(), stop).await;
                match &result {
                    Ok(()) => info!(subscription = subscription.name(), "projector stopped"),
                    Err(failure) => error!(
                        subscription = subscription.name(),
                        error = %failure,
                        "projector stopped on an error"
                    ),
                }
                result
            })
        })
        .collect()
}

/// Read-your-writes: waits until every named subscription has handled `position` (the
/// position a command returned). True once they all have, false if `timeout` passes first.
/// A subscription that has never run counts as not there yet.
pub async fn wait_for(
    pool: &PgPool,
    subscriptions: &[&str],
    position: LogPosition,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let names: Vec<&str> = subscriptions
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        let reached: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM subscription_checkpoints
              WHERE name = ANY($1)
                AND (last_tx_id, last_position) >= ($2::bigint::text::xid8, $3)",
        )
        .bind(&names)
        .bind(position.tx_id)
        .bind(position.global_position)
        .fetch_one(pool)
        .await?;
        if reached == names.len() as i64 {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

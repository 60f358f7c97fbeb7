//! The notification subscription: turns the log into the mails users opted into (issue 13.6).
//!
//! A named subscription on the ordered log (`process.notifications`, docs/adr/0033). For a
//! `VideoCompleted` or `VideoFailed`, and for a credit event that took the available balance
//! below the user's threshold (`framegate_projections::credits_low`, the rule the
//! `credits.low` webhook shares), it records a mail in the outbox (`mail::outbox`) through
//! the subscription's own transaction: the row commits with the checkpoint that says the event
//! was handled, so each event is mailed about exactly once whatever crashes, and nothing is
//! ever sent inside a request. The outbox's sender delivers it.
//!
//! Whether a user is mailed follows their preferences as of the event
//! (`framegate_projections::preferences`), so a lagging or restarted subscription neither mails
//! someone who opted out before the event nor someone who opted in after it. The address is
//! the account's current one, and only a verified address of an account that is not disabled
//! is mailed: opting in must not turn an unverified sign-up into a way to mail strangers.
//! It runs in the API role, beside the sender.

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_domain::{CreditAccount, UserId, Video, VideoEvent, VideoId};
use framegate_projections::notify::Notifications;
use framegate_projections::read_models::{users, videos};
use framegate_projections::subscription::BoxError;
use framegate_projections::{
    credits_low, preferences, EventHandler, StoredEvent, Subscription, SubscriptionError, Transient,
};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, instrument};
use uuid::Uuid;

use crate::mail::notices::Notice;
use crate::mail::outbox::{self, Outgoing};

/// The subscription's name (its checkpoint row; migration 0019 starts it at the end of an
/// existing log).
pub const SUBSCRIPTION: &str = "process.notifications";

/// Records the notification mails an event calls for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

#[async_trait]
impl EventHandler for Notifier {
    #[instrument(skip_all, fields(subscription = SUBSCRIPTION, event_id = %event.event_id))]
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        let decided = match event.aggregate_type.as_str() {
            Video::TYPE => video_notice(conn, event).await?,
            CreditAccount::TYPE => credit_notice(conn, event).await?,
            _ => None,
        };
        let Some((to, notice)) = decided else {
            return Ok(());
        };
        info!(kind = notice.kind(), "notification recorded");
        outbox::enqueue(conn, &Outgoing::Notice { to, notice }).await?;
        Ok(())
    }
}

/// The subscription `Notifier` runs on (tests drain it by hand).
pub fn subscription(pool: PgPool) -> Subscription {
    Subscription::new(SUBSCRIPTION, pool)
}

/// Runs the subscription until `shutdown` flips, woken by the process's shared listener.
pub fn spawn(
    pool: PgPool,
    notifications: &Notifications,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<Result<(), SubscriptionError>> {
    let subscription = subscription(pool).with_notifications(notifications.clone());
    tokio::spawn(async move {
        subscription
            .run(&Notifier, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    })
}

/// A completed or failed video whose owner wanted to hear of it.
async fn video_notice(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<(String, Notice)>, BoxError> {
    if !matches!(event.event_type.as_str(), "VideoCompleted" | "VideoFailed") {
        return Ok(None);
    }
    let video_id: VideoId = event.aggregate_id.parse()?;
    let payload: VideoEvent = event.decode()?;
    // Written inline with the request, so only a store without inline models leaves it out.
    let Some(video) = videos::get(&mut *conn, video_id).await? else {
        return Err(
            Transient(format!("video {video_id} is not in the videos read model").into()).into(),
        );
    };
    let wanted = preferences::as_of(conn, video.owner_id, event.position()).await?;
    let notice = match payload {
        VideoEvent::VideoCompleted { .. } if wanted.video_completed => Notice::VideoCompleted {
            video_id: video.id,
            prompt: video.prompt,
        },
        VideoEvent::VideoFailed { code, .. } if wanted.video_failed => Notice::VideoFailed {
            video_id: video.id,
            prompt: video.prompt,
            code,
        },
        _ => return Ok(None),
    };
    Ok(recipient(conn, video.owner_id)
        .await?
        .map(|to| (to, notice)))
}

/// A credit event that took the available balance below the threshold of an owner who
/// asked to hear of it.
async fn credit_notice(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<(String, Notice)>, BoxError> {
    // Most credit events raise the balance or hold it: no lookup for those.
    if credits_low::available_delta(event)?.is_none_or(|delta| delta >= 0) {
        return Ok(None);
    }
    let owner = Uuid::parse_str(&event.aggregate_id)?;
    let wanted = preferences::as_of(conn, owner, event.position()).await?;
    if !wanted.credits_low {
        return Ok(None);
    }
    let Some(low) = credits_low::crossing(conn, event, wanted.credits_low_threshold).await? else {
        return Ok(None);
    };
    let notice = Notice::CreditsLow {
        available: low.after.value(),
        threshold: low.threshold.value(),
    };
    Ok(recipient(conn, owner).await?.map(|to| (to, notice)))
}

/// The address to mail `user` at: their verified address, unless the account is disabled.
async fn recipient(conn: &mut PgConnection, user: Uuid) -> Result<Option<String>, BoxError> {
    let Some(row) = users::get(&mut *conn, UserId::from_uuid(user)).await? else {
        return Err(Transient(format!("user {user} is not in the users read model").into()).into());
    };
    Ok((row.email_verified && !row.disabled).then_some(row.email))
}

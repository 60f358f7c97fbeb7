//! The sender: claims due deliveries and sends them, at most `concurrency` runs at once per
//! process and one at a time per queue, so a slow or dead endpoint holds one slot and never
//! delays another endpoint.
//!
//! The loop is a state machine over two states, its checkpoint being the outbox itself:
//! **Claiming** takes as many runs as there are free slots (a run: the first rows of a due
//! queue from its cursor, the queue leased as a whole; or one row retried by hand, `claim`)
//! and starts one task each, which takes the queue's turn: it sends the run's rows in order, stops at the first that is not delivered (it is retried later, and
//! nothing behind it goes before it) or after [`RUN_BUDGET`], and records them in one
//! transaction; **Waiting** sleeps until a notification on `WEBHOOK_CHANNEL` (a new or
//! re-queued delivery), a run ending (its queue may have more), the next head falling due, or
//! [`POLL`] at the latest. Claims use `FOR UPDATE SKIP LOCKED` and a lease: two senders never
//! send one queue at once, and the rows a sender died sending are sent again when its lease
//! lapses (at least once; receivers deduplicate by `webhook-id`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use framegate_commands::blobs::Blobs;
use framegate_commands::trace_context::{self, TraceContext};
use framegate_commands::webhook_deliveries::WEBHOOK_CHANNEL;
use framegate_commands::webhook_signature::Signer;
use framegate_commands::EventStore;
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{UserId, WebhookEndpointId};
use framegate_projections::notify::{Event, Heard, Notifications};
use framegate_projections::video_object::VideoResponse;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{debug, info_span, warn, Instrument as _};

use super::attempt::{self, Signed};
use super::claim::{self, Claimed, Destination, Hold, Run};
use super::http::{self, Client, Target};
use super::outcome::{self, Attempted, End, Recorded};
use super::turn::{self, Sent};
use super::WebhookConfig;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest the sender sleeps without looking for due deliveries.
pub const POLL: Duration = Duration::from_secs(1);

/// A run stops taking its next row after this long: what it sent is recorded at least this
/// often, and a sender that dies resends at most this much.
pub const RUN_BUDGET: Duration = Duration::from_secs(1);

/// How long deliveries wait when we could not prepare them (our database or blob store
/// failing): not an attempt, and not held against the endpoint.
pub const OUR_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// How long a claim holds a delivery: the attempt's budget plus time to record it. A sender
/// that has not recorded by then is taken for dead and the delivery is sent again.
pub(super) fn lease(config: &WebhookConfig) -> Duration {
    config.timeout * 3 + Duration::from_secs(30)
}

#[derive(Clone)]
pub struct Sender {
    pub(super) pool: PgPool,
    store: EventStore,
    client: Arc<Client>,
    pub(super) config: Arc<WebhookConfig>,
    /// Signs the download links of `video.completed` deliveries at each attempt.
    blobs: Option<Blobs>,
}

/// Where the loop is.
enum State {
    Claiming,
    Waiting { until: Instant },
}

impl Sender {
    pub fn new(
        pool: PgPool,
        store: EventStore,
        config: WebhookConfig,
        blobs: Option<Blobs>,
    ) -> Result<Self, http::BuildError> {
        Ok(Self {
            client: Arc::new(Client::new(config.allow_private)?),
            pool,
            store,
            config: Arc::new(config),
            blobs,
        })
    }

    /// Sends until `stopped` flips, then lets the attempts in flight finish.
    pub async fn run(
        self,
        notifications: Option<Notifications>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut heard = notifications.as_ref().map(Notifications::subscribe);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut state = State::Claiming;
        loop {
            state = match state {
                State::Claiming => {
                    while in_flight.try_join_next().is_some() {}
                    let free = self.config.concurrency.saturating_sub(in_flight.len());
                    self.claim_and_start(free, &mut in_flight).await
                }
                State::Waiting { until } => tokio::select! {
                    () = woken(&mut heard) => State::Claiming,
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => State::Claiming,
                    () = tokio::time::sleep_until(until) => State::Claiming,
                    _ = stopped.wait_for(|stop| *stop) => break,
                },
            };
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims up to `free` runs and starts them; says how long to wait next.
    async fn claim_and_start(&self, free: usize, in_flight: &mut JoinSet<()>) -> State {
        let poll = Instant::now() + POLL;
        if free == 0 {
            return State::Waiting { until: poll };
        }
        let runs = match claim::claim(&self.pool, free, lease(&self.config)).await {
            Ok(runs) => runs,
            Err(error) => {
                warn!(%error, "webhooks: cannot claim deliveries");
                return State::Waiting { until: poll };
            }
        };
        let full = runs.len() == free;
        for run in runs {
            let sender = self.clone();
            in_flight.spawn(async move { sender.deliver(run).await });
        }
        if full {
            // Every slot is taken: the next chance is a run ending.
            return State::Waiting { until: poll };
        }
        match claim::next_due(&self.pool).await {
            Ok(Some(due)) => {
                let wait = (due - Utc::now()).to_std().unwrap_or_default();
                State::Waiting {
                    until: (Instant::now() + wait).min(poll),
                }
            }
            Ok(None) => State::Waiting { until: poll },
            Err(error) => {
                warn!(%error, "webhooks: cannot read the next due delivery");
                State::Waiting { until: poll }
            }
        }
    }

    /// One turn (`turn`), its runs recorded.
    async fn deliver(&self, run: Run) {
        let head = run.rows[0].delivery_id;
        if let Err(error) = turn::take(self, run).await {
            // The queue is let go (or its lease lapses) and its rows are tried again, in order.
            warn!(delivery = %head, %error, "webhooks: run not recorded");
        }
    }

    /// Sends the rows of a run in order until one is not delivered or the turn that began
    /// at `turn` has taken [`RUN_BUDGET`]. Rows whose endpoint is off are not sent (the turn
    /// closes them once the run before is recorded); rows we cannot prepare are postponed.
    pub(super) async fn send_run(
        &self,
        to: &Destination,
        run: Vec<Claimed>,
        secrets: &mut Option<Signer>,
        turn: Instant,
    ) -> Sent {
        let head = &run[0];
        let (Some(url), None) = (&to.url, &to.endpoint_off) else {
            let why = to.endpoint_off.as_deref().unwrap_or("deleted");
            return Sent::Off {
                why: format!("the endpoint is {why}"),
                rows: run,
            };
        };
        let url = Target::parse(url);
        let secrets = match secrets {
            Some(secrets) => secrets,
            None => match self.secrets(to).await {
                Ok(read) => secrets.insert(read),
                Err(error) => {
                    // Our failure, not the endpoint's: no attempt is counted against it.
                    warn!(delivery = %head.delivery_id, %error, "webhooks: cannot read the signing secrets");
                    return Sent::Attempted {
                        attempted: Vec::new(),
                        unsent: run,
                        whole: false,
                        postponed: true,
                    };
                }
            },
        };
        let mut attempted: Vec<Attempted> = Vec::with_capacity(run.len());
        let mut rows = run.into_iter();
        let mut whole = true;
        while let Some(mut claimed) = rows.next() {
            let body = match self.body(&mut claimed).await {
                Ok(body) => body,
                Err(error) => {
                    warn!(delivery = %claimed.delivery_id, %error, "webhooks: cannot prepare the body");
                    let rest: Vec<Claimed> =
                        std::iter::once(claimed).chain(rows.by_ref()).collect();
                    return Sent::Attempted {
                        attempted,
                        unsent: rest,
                        whole: false,
                        postponed: true,
                    };
                }
            };
            let (started_at, answer) = self.attempt(&claimed, &url, body, secrets).await;
            let stop = !answer.delivered() || turn.elapsed() >= RUN_BUDGET;
            whole &= answer.delivered();
            attempted.push(Attempted {
                claimed,
                started_at,
                answer,
            });
            if stop {
                break;
            }
        }
        Sent::Attempted {
            attempted,
            unsent: rows.collect(),
            whole,
            postponed: false,
        }
    }

    /// Records the run that ends a turn (a failure, a 410, the budget spent, the queue's
    /// end), letting go of its hold (due no sooner than `not_before` if rows wait), and
    /// disables its endpoint if its answers say so.
    pub(super) async fn record_last(
        &self,
        hold: &Hold,
        to: &Destination,
        attempted: &[Attempted],
        unsent: &[Claimed],
        not_before: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), BoxError> {
        if let Some(last) = attempted.last().filter(|last| last.answer.gone()) {
            // Whether or not it can be disabled (deleted meanwhile, say), the run is recorded:
            // its deliveries were made.
            if let Err(error) = outcome::disable(
                &self.pool,
                &self.store,
                to,
                DisabledReason::Gone,
                &last.answer,
                &self.config,
            )
            .await
            {
                warn!(delivery = %last.claimed.delivery_id, %error, "webhooks: cannot disable a gone endpoint");
            }
        }
        let end = End::Release { not_before };
        let endpoint = to.endpoint_id;
        match outcome::record(
            &self.pool,
            &self.config,
            hold,
            endpoint,
            attempted,
            unsent,
            end,
        )
        .await?
        {
            Recorded::Lost => Err("the queue's lease was lost".into()),
            Recorded::Held {
                failing_too_long: false,
            } => Ok(()),
            Recorded::Held {
                failing_too_long: true,
            } => {
                let last = attempted.last().expect("a failure was attempted");
                outcome::disable(
                    &self.pool,
                    &self.store,
                    to,
                    DisabledReason::Failing,
                    &last.answer,
                    &self.config,
                )
                .await
            }
        }
    }

    /// One attempt of `claimed`, in its delivery's trace.
    async fn attempt(
        &self,
        claimed: &Claimed,
        url: &Result<Target, String>,
        body: Bytes,
        signer: &Signer,
    ) -> (chrono::DateTime<Utc>, attempt::Answer) {
        let started_at = Utc::now();
        let request = Signed {
            url,
            message_id: &claimed.message_id,
            body,
            signer,
        };
        // Each attempt is a span in the trace of its delivery's event.
        let trace = claimed
            .traceparent
            .as_deref()
            .and_then(|parent| TraceContext::parse(parent, claimed.tracestate.as_deref()));
        let span = trace_context::continued(
            info_span!(
                "webhook.delivery",
                delivery = %claimed.delivery_id,
                attempt = claimed.attempts,
                trace_id = Empty
            ),
            trace.as_ref(),
        );
        let answer = attempt::post(&self.client, self.config.timeout, request)
            .instrument(span)
            .await;
        debug!(delivery = %claimed.delivery_id, status = ?answer.status, error = ?answer.error, "webhooks: attempt");
        framegate_commands::metrics::webhook_attempt(
            answer.status,
            answer.delivered(),
            answer.latency,
        );
        (started_at, answer)
    }

    /// The secrets that sign a turn's deliveries now (looked up once per turn).
    async fn secrets(&self, to: &Destination) -> Result<Signer, BoxError> {
        let secrets = match to.endpoint_id {
            Some(id) => {
                framegate_commands::webhooks::signing_secrets(
                    &self.pool,
                    WebhookEndpointId::from_uuid(id),
                )
                .await
            }
            None => match self.pool.acquire().await {
                Ok(mut conn) => framegate_commands::webhooks::default_secret(
                    &mut conn,
                    UserId::from_uuid(to.owner_id),
                )
                .await
                .map(|secret| vec![secret]),
                Err(error) => Err(error),
            },
        }?;
        let signer = Signer::new(&secrets);
        if signer.is_empty() {
            return Err("the endpoint has no signing secret".into());
        }
        Ok(signer)
    }

    /// The body to send (with fresh links if it has some). The stored body moves into the
    /// request: nothing reads it after the attempt (a row sent again is read again).
    async fn body(&self, claimed: &mut Claimed) -> Result<Bytes, String> {
        match (&self.blobs, claimed.event_type.as_str()) {
            (Some(blobs), "video.completed") => with_links(&claimed.body, blobs, &self.config)
                .await
                .map(Bytes::from)
                .map_err(|error| error.to_string()),
            _ => Ok(Bytes::from(std::mem::take(&mut claimed.body))),
        }
    }
}

/// A stored video body, as the subscription wrote it.
#[derive(Serialize, Deserialize)]
struct VideoBody {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: chrono::DateTime<Utc>,
    data: VideoResponse,
}

/// `body` with download links valid for the configured lifetime from now: links signed when
/// the event happened would have expired by a retry a day later.
async fn with_links(body: &str, blobs: &Blobs, config: &WebhookConfig) -> Result<String, BoxError> {
    let mut stored: VideoBody = serde_json::from_str(body)?;
    stored.data = stored.data.with_links(blobs, config.link_ttl).await?;
    Ok(serde_json::to_string(&stored)?)
}

/// Waits for a notification on [`WEBHOOK_CHANNEL`] (or a hint that some were missed); never
/// returns without a listener.
async fn woken(heard: &mut Option<Heard>) {
    let Some(heard) = heard else {
        return std::future::pending().await;
    };
    loop {
        match heard.recv().await {
            Event::Notification { channel, .. } if channel == WEBHOOK_CHANNEL => return,
            Event::Missed => return,
            _ => {}
        }
    }
}

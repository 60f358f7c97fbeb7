//! Provider workers taking `VideoRequested` from Kafka through a consumer group.
//!
//! With brokers configured, every worker process joins one consumer group on the video topic
//! instead of following the Postgres log itself, so the partitions (and with them the jobs)
//! are shared out among the processes and moved when one joins, leaves or dies. A message is
//! handled to the end — the dispatcher has recorded the submission, its failure or the wait
//! for a provider — before its offset is committed; after a crash or a rebalance the next
//! owner of the partition receives it again. That redelivery starts nothing twice upstream:
//! the dispatcher holds a per-video lock through the provider call and decides from the
//! video's own events, so a video already submitted is left alone and one caught mid-
//! submission is looked up at the provider before anything is sent again (pipeline.rs).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument as _};
use uuid::Uuid;

use framegate_commands::trace_context::{TraceContext, TRACEPARENT, TRACESTATE};
use framegate_domain::VideoId;
use framegate_projections::subscription::BoxError;

use super::config::KafkaConfig;
use super::message::ce_type;
use super::relay::create_topics;
use crate::pipeline::{dispatch_span, Dispatcher};

/// Logs partition assignments, so an operator sees how the jobs are shared.
pub struct JobContext;

impl ClientContext for JobContext {}

impl ConsumerContext for JobContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                info!(partitions = %describe(partitions), "Kafka job partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                info!(partitions = %describe(partitions), "Kafka job partitions revoked");
            }
            Rebalance::Error(error) => warn!(%error, "Kafka rebalance failed"),
        }
    }
}

fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|p| format!("{}[{}]", p.topic(), p.partition()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One worker's membership of the job group.
pub struct JobConsumer {
    consumer: StreamConsumer<JobContext>,
    dispatcher: Arc<Dispatcher>,
    requested: String,
}

/// What a message asks of this worker.
#[derive(Debug, PartialEq)]
enum Job {
    Dispatch {
        video: VideoId,
        requested_at: DateTime<Utc>,
        event_id: Uuid,
        correlation: Option<String>,
        /// The request's trace, from the `traceparent` header the relay copied.
        trace: Option<TraceContext>,
    },
    /// Another event of the video topic: nothing to do.
    Ignore,
}

impl JobConsumer {
    /// Joins `config.worker_group` on the video topic. Offsets are committed by hand, after
    /// each job; a group without committed offsets starts at the oldest message (a video
    /// requested before the first worker started is still a job).
    pub async fn new(
        config: &KafkaConfig,
        dispatcher: Arc<Dispatcher>,
    ) -> Result<Self, KafkaError> {
        let topic = config.topic("Video");
        // A consumer that subscribes before its topic exists learns of it only at the next
        // metadata refresh (minutes): make sure it exists, as the relay would.
        let admin: AdminClient<DefaultClientContext> = config.client().create()?;
        create_topics(&admin, config, std::slice::from_ref(&topic)).await?;
        let mut client = config.client();
        for (name, default) in [
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "2000"),
        ] {
            if !config.properties.contains_key(name) {
                client.set(name, default);
            }
        }
        let consumer: StreamConsumer<JobContext> = client
            .set("group.id", &config.worker_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(JobContext)?;
        consumer.subscribe(&[&topic])?;
        info!(%topic, group = %config.worker_group, "taking video jobs from Kafka");
        Ok(Self {
            consumer,
            dispatcher,
            requested: ce_type("Video", "VideoRequested"),
        })
    }

    /// Takes jobs until `shutdown` flips. A job whose dispatch fails (the database away) is
    /// retried with backoff and its offset stays uncommitted meanwhile: jobs of its partition
    /// wait behind it rather than overtake it and commit past it.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut broker_backoff = Duration::from_millis(100);
        loop {
            let received = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                received = self.consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => {
                    broker_backoff = Duration::from_millis(100);
                    message
                }
                Err(error) => {
                    warn!(%error, "Kafka consumer error; retrying");
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(broker_backoff) => {}
                    }
                    broker_backoff = (broker_backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if !self.handle(&message, &mut shutdown).await {
                // Shutting down before the job's outcome was recorded: leave it uncommitted
                // for whoever owns the partition next.
                break;
            }
            if let Err(error) = self.consumer.commit_message(&message, CommitMode::Async) {
                // Redelivered later, which the dispatcher absorbs.
                warn!(%error, offset = message.offset(), "could not commit a job's offset");
            }
        }
        // Whatever the last asynchronous commits still carry goes out before leaving the group.
        if let Ok(Some(position)) = self.committable() {
            if let Err(error) = self.consumer.commit(&position, CommitMode::Sync) {
                warn!(%error, "could not commit job offsets on shutdown");
            }
        }
    }

    /// The consumed position of the assigned partitions (everything handled: the loop
    /// handles each message before it reads the next).
    fn committable(&self) -> Result<Option<TopicPartitionList>, KafkaError> {
        let position = self.consumer.position()?;
        let any = position
            .elements()
            .iter()
            .any(|p| matches!(p.offset(), rdkafka::Offset::Offset(_)));
        Ok(any.then_some(position))
    }

    /// Handles one message until its outcome is recorded; false if shutdown came first.
    async fn handle(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let job = match parse(message, &self.requested) {
            Ok(job) => job,
            Err(problem) => {
                // Nothing a retry could change; the sweep still finds a queued video.
                warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    %problem,
                    "skipping an unreadable message on the video topic"
                );
                return true;
            }
        };
        let Job::Dispatch {
            video,
            requested_at,
            event_id,
            correlation,
            trace,
        } = job
        else {
            return true;
        };
        // A child of the request whose event the message carries.
        let span = dispatch_span(video, trace.as_ref());
        let meta = span.in_scope(|| self.dispatcher.caused_by(correlation.as_deref(), event_id));
        let mut backoff = Duration::from_millis(200);
        loop {
            let dispatched = self
                .dispatcher
                .dispatch(video, requested_at, &meta)
                .instrument(span.clone())
                .await;
            match dispatched {
                Ok(()) => {
                    debug!(%video, partition = message.partition(), offset = message.offset(), "job handled");
                    return true;
                }
                Err(error) => {
                    warn!(%video, %error, "could not dispatch a video from Kafka; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// Reads a message of the video topic: its `ce_type`, the video id (the key) and time.
fn parse(message: &BorrowedMessage<'_>, requested: &str) -> Result<Job, BoxError> {
    let header = |name: &str| -> Option<String> {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        })
    };
    if header("ce_type").as_deref() != Some(requested) {
        return Ok(Job::Ignore);
    }
    let key = message
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or("a VideoRequested message without a UTF-8 key")?;
    let video: VideoId = key.parse()?;
    let event_id: Uuid = header("ce_id").ok_or("no ce_id header")?.parse()?;
    let requested_at = header("ce_time")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    let trace = header(TRACEPARENT)
        .and_then(|parent| TraceContext::parse(&parent, header(TRACESTATE).as_deref()));
    Ok(Job::Dispatch {
        video,
        requested_at,
        event_id,
        correlation: header("ce_correlationid"),
        trace,
    })
}

//! Requesting a video: reserve the estimated cost and record the request, in one transaction.
//!
//! Both decisions are made against the aggregates' current state (the account's available
//! credits, the video id not yet taken) and appended in one unit of work, each stream with
//! its own optimistic check, so there is never a reservation without a video or a video
//! without its reservation: 50 concurrent requests against credits for 10 get exactly 10 of
//! each. The inline read models (the video row, the account's balance) commit with them, and
//! so does whatever the caller adds through [`WithinRequest`] (the API's Idempotency-Key
//! record with its response).

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_domain::{
    CreditAccount, CreditCommand, CreditError, Video, VideoCommand, VideoError, VideoId, VideoSpec,
};
use sqlx::PgConnection;

use crate::error::{BoxError, CommandError};
use crate::idempotency::LeaseLost;
use crate::metadata::CommandMetadata;
use crate::metrics::{self, CommandOutcome};
use crate::store::EventStore;
use crate::stored::StoredEvent;
use crate::unit::{serialize, AppendError};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Credits(CommandError<CreditError>),
    #[error(transparent)]
    Video(CommandError<VideoError>),
}

impl RequestError {
    /// Whether the same request may succeed if decided again (a lost optimistic race, the
    /// store unreachable): [`CommandError::is_transient`] of whichever stream refused it.
    pub fn is_transient(&self) -> bool {
        match self {
            RequestError::Credits(error) => error.is_transient(),
            RequestError::Video(error) => error.is_transient(),
        }
    }
}

/// Statements that must commit together with the request, run in its transaction after its
/// events were appended and projected inline.
#[async_trait]
pub trait WithinRequest: Send + Sync {
    /// Returns whether it marked the running request's Idempotency-Key record committed
    /// (storing the response does), which the commit then need not do again.
    async fn run(&self, conn: &mut PgConnection, written: &[StoredEvent])
        -> Result<bool, BoxError>;
}

fn store_error(error: AppendError) -> RequestError {
    RequestError::Video(error.into())
}

/// Reserves `spec.estimated_cost` on the owner's account and records the request, atomically.
/// Returns the events as committed (the reservation first). `video_id` is one just made (a
/// UUIDv7): its stream is not read, and should it exist after all, the request fails with a
/// conflict.
#[tracing::instrument(name = "command", skip_all, fields(aggregate = Video::TYPE, id = %video_id))]
pub async fn request_video(
    store: &EventStore,
    video_id: VideoId,
    spec: VideoSpec,
    metadata: &CommandMetadata,
    within: Option<&dyn WithinRequest>,
) -> Result<Vec<StoredEvent>, RequestError> {
    let started = std::time::Instant::now();
    let result = reserve_and_request(store, video_id, spec, metadata, within).await;
    let outcome = match &result {
        Ok(_) => CommandOutcome::Ok,
        Err(RequestError::Credits(CommandError::Domain(_)))
        | Err(RequestError::Video(CommandError::Domain(_) | CommandError::AccountErased)) => {
            CommandOutcome::Rejected
        }
        Err(RequestError::Credits(CommandError::Conflict))
        | Err(RequestError::Video(CommandError::Conflict)) => CommandOutcome::Conflict,
        Err(_) => CommandOutcome::Error,
    };
    // Labelled like the unit's conflicts: the two streams it appends to.
    metrics::command("CreditAccount+Video", outcome, started.elapsed());
    result
}

async fn reserve_and_request(
    store: &EventStore,
    video_id: VideoId,
    spec: VideoSpec,
    metadata: &CommandMetadata,
    within: Option<&dyn WithinRequest>,
) -> Result<Vec<StoredEvent>, RequestError> {
    let account = spec.owner.to_string();
    let video = video_id.to_string();
    let reserve = CreditCommand::Reserve {
        video_id,
        amount: spec.estimated_cost,
    };
    let request = VideoCommand::Request { video_id, spec };
    // Requests of one user in this process queue on the account instead of conflicting.
    let _account = store.credits().lock(&account).await;
    let mut attempt = 0;
    loop {
        let reserved = store
            .credits()
            .decide(&account, reserve.clone())
            .await
            .map_err(RequestError::Credits)?;
        // The id was just made: there is no stream to read.
        let requested = store
            .videos()
            .decide_new(request.clone())
            .await
            .map_err(RequestError::Video)?;
        let mut events = serialize::<CreditAccount>(
            &account,
            reserved.current_sequence,
            &reserved.events,
            metadata,
        )
        .map_err(|e| store_error(e.into()))?;
        events.extend(
            serialize::<Video>(
                &video,
                requested.current_sequence,
                &requested.events,
                metadata,
            )
            .map_err(|e| store_error(e.into()))?,
        );
        // Both streams in one statement, each with its optimistic check. The video's id is
        // new, so a conflict is the account's (another process moved it, or this process's
        // kept state is behind): decide again against its state in the store.
        let Some(mut unit) = store
            .append_or_retry(&events, &mut attempt)
            .await
            .map_err(store_error)?
        else {
            continue;
        };
        if let Some(within) = within {
            let written = unit.written().to_vec();
            let marked = within.run(unit.conn(), &written).await.map_err(|e| {
                RequestError::Video(if e.is::<LeaseLost>() {
                    CommandError::Conflict
                } else {
                    CommandError::Internal(e)
                })
            })?;
            if marked {
                unit.claim_marked();
            }
        }
        let committed = unit.commit().await.map_err(store_error)?;
        // This process holds the account's lock: its next command starts from this state.
        let sequence = reserved.current_sequence + reserved.events.len();
        store.credits().remember(&account, reserved.state, sequence);
        return Ok(committed);
    }
}

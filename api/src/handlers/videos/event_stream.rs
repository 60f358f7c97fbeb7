//! `GET /v1/videos/{id}/events`: a video's states as Server-Sent Events, bounded.
//!
//! The stream never queries Postgres for changes: it follows the process's [`VideoWatch`],
//! which reads all watched videos at once when events are appended (`streams`). It holds a
//! [`Slot`] (per-user and per-process caps, 429/503 with `Retry-After` when full), lives at
//! most `max_lifetime` and then ends with a `retry:` hint, and authenticates its request
//! again whenever its user's credentials may have changed (and every `reauthenticate`
//! regardless), ending with an `error` event when that fails. Each `video` event's id is the
//! video's version (the sequence of the last event its row reflects), so a client that
//! reconnects with `Last-Event-ID` is not sent again the state it has.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use rand::Rng as _;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::response::{is_terminal, respond};
use crate::auth::{authenticate, Access, Principal};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use crate::streams::credential_watch::{Change, EVERYONE_SPREAD};
use crate::streams::slots::{PROCESS_RETRY_AFTER, USER_RETRY_AFTER};
use crate::streams::{Refusal, Slot, Snapshot, Watching};

/// The header a reconnecting EventSource sends with the id of the last event it received.
const LAST_EVENT_ID: &str = "last-event-id";

/// The reconnection delay a stream ending at its lifetime suggests: spread, so that streams
/// opened together do not all come back at the same instant.
const RETRY_HINT_MS: std::ops::RangeInclusive<u64> = 1_000..=5_000;

/// Server-Sent Events: a `video` event (id: the video's version; data: the video resource)
/// now and at every change of status or progress, comments as keep-alives, and the end of
/// the stream after the terminal state (completed, failed or cancelled). With
/// `Last-Event-ID`, states up to that version are not sent again; a finished video the
/// client has seen answers 204 (an EventSource stops reconnecting). The stream ends after
/// `FRAMEGATE_SSE_MAX_LIFETIME_SECONDS` with a `retry:` hint (reconnect with
/// `Last-Event-ID`), and with an `error` event (data: `{code, detail}`) once its credentials
/// no longer authenticate (key revoked, user disabled, token expired).
#[utoipa::path(get, path = "/v1/videos/{id}/events", tag = "videos",
    params(("id" = Uuid, Path, description = "video id"),
           ("Last-Event-ID" = Option<String>, Header, description = "the last event id received; its state and older ones are not sent again")),
    responses((status = 200, description = "text/event-stream of `video` events (data: VideoResponse)"),
              (status = 204, description = "the video has finished and Last-Event-ID says the client has its final state"),
              (status = 404, description = "not_found"),
              (status = 429, description = "too_many_streams: the caller holds FRAMEGATE_SSE_MAX_STREAMS_PER_USER streams already; Retry-After"),
              (status = 503, description = "streams_at_capacity: this server holds FRAMEGATE_SSE_MAX_STREAMS streams; Retry-After")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let videos = state.streams.videos.clone();
    if !videos.is_running() {
        return Err(ApiError::Unavailable("video event streams".to_owned()));
    }
    // Registered before the credentials are checked again: an announcement the check could
    // not see yet reaches the stream (`streams::credential_watch`), and one that came before
    // (between the extractor's check and now) is seen by the check.
    let user = principal.user_id.as_uuid();
    let credentials = state.streams.credentials.watch(user);
    authenticated_as(&state, &headers, &principal).await?;
    let mut watching = videos.watch(id);
    let first = videos
        .current(&state.pool, id, &mut watching)
        .await?
        // Another user's video, or a deleted one, is indistinguishable from a missing one.
        .filter(|video| {
            video.row.owner_id == principal.user_id.as_uuid() && video.row.deleted_at.is_none()
        })
        .ok_or(ApiError::NotFound)?;
    // An id beyond the video's version is not one we sent: the client gets the current state.
    let resumed_at = last_event_id(&headers).filter(|seen| *seen <= first.version);
    if resumed_at.is_some_and(|seen| seen >= first.version) && is_terminal(&first.row.status) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let slot = state.streams.slots.acquire(user).map_err(refused)?;
    let config = state.config.streams;
    let now = Instant::now();
    let stream = VideoEvents {
        credentials,
        first: Some(first),
        sent: Sent {
            version: resumed_at.unwrap_or(i64::MIN),
            state: None,
        },
        ends_at: now + config.max_lifetime,
        reauthenticate_at: now + config.reauthenticate,
        credentials_open: true,
        done: false,
        watching,
        headers,
        principal,
        state,
        _slot: slot,
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), stream))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(config.keep_alive))
        .into_response())
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::User => ApiError::Busy {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_streams",
            message: "you have as many event streams open as allowed; close one or retry later"
                .to_owned(),
            retry_after: USER_RETRY_AFTER,
        },
        Refusal::Process => ApiError::Busy {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "streams_at_capacity",
            message: "this server holds as many event streams as it can; retry later".to_owned(),
            retry_after: PROCESS_RETRY_AFTER,
        },
    }
}

/// The version in `Last-Event-ID`; anything else counts as no header (the client is then
/// sent the current state, as on a first connection).
fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers
        .get(LAST_EVENT_ID)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What the client has: the version of the last state it was sent (or resumed from), and
/// that state's (status, progress) when this stream sent it.
struct Sent {
    version: i64,
    state: Option<(String, i16)>,
}

/// One open stream.
struct VideoEvents {
    state: AppState,
    principal: Principal,
    /// The request's own headers, to authenticate it again as it was.
    headers: HeaderMap,
    watching: Watching,
    credentials: watch::Receiver<Change>,
    /// Whether the credential watcher is there to tell of changes (it stops at shutdown).
    credentials_open: bool,
    /// The state read when the stream was opened, not sent yet.
    first: Option<Arc<Snapshot>>,
    sent: Sent,
    ends_at: Instant,
    reauthenticate_at: Instant,
    done: bool,
    /// Frees the stream's place in the caps when the stream is dropped.
    _slot: Slot,
}

impl VideoEvents {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            if let Some(event) = self.render(&first).await {
                return Some(event);
            }
            if self.done {
                return None;
            }
        }
        loop {
            // In this order: a credentials change pending beside a new state is handled
            // first, so a revoked caller is not sent one more state (with fresh links).
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(self.ends_at) => {
                    self.done = true;
                    return Some(reconnect("the stream reached its lifetime; reconnect with Last-Event-ID"));
                }
                () = tokio::time::sleep_until(self.reauthenticate_at) => {
                    match authenticated_as(&self.state, &self.headers, &self.principal).await {
                        Ok(()) => {}
                        Err(error) if refuses(&error) => {
                            self.done = true;
                            return Some(refusal_event(&error));
                        }
                        // Postgres unavailable, say: the watcher cannot read new states
                        // either, so nothing is sent meanwhile; the next check decides.
                        Err(error) => tracing::warn!(%error, "video events: could not authenticate again"),
                    }
                    self.reauthenticate_at = Instant::now() + self.state.config.streams.reauthenticate;
                }
                changed = self.credentials.changed(), if self.credentials_open => match changed {
                    Ok(()) => {
                        let change = *self.credentials.borrow_and_update();
                        let delay = if change.everyone {
                            rand::thread_rng().gen_range(std::time::Duration::ZERO..=EVERYONE_SPREAD)
                        } else {
                            std::time::Duration::ZERO
                        };
                        self.reauthenticate_at = self.reauthenticate_at.min(Instant::now() + delay);
                    }
                    // Shutting down: the periodic check goes on until the stream ends.
                    Err(_) => self.credentials_open = false,
                },
                changed = self.watching.changed() => {
                    if changed.is_err() {
                        // The watcher stopped (shutdown): the client resumes elsewhere.
                        self.done = true;
                        return Some(reconnect("the server is shutting down; reconnect with Last-Event-ID"));
                    }
                    let latest = self.watching.borrow_and_update().clone();
                    if let Some(latest) = latest {
                        if let Some(event) = self.render(&latest).await {
                            return Some(event);
                        }
                    }
                    if self.done {
                        return None;
                    }
                }
            }
        }
    }

    /// The `video` event for `video` if the client does not have its state; marks the
    /// stream done after a terminal state.
    async fn render(&mut self, video: &Snapshot) -> Option<Event> {
        if video.version <= self.sent.version {
            return None;
        }
        if video.row.deleted_at.is_some() {
            // Deleted meanwhile: nothing more to show.
            self.done = true;
            return None;
        }
        let state = (video.row.status.clone(), video.row.progress);
        if self.sent.state.as_ref() == Some(&state) {
            // A change the stream does not show (another field): the client's state stands.
            return None;
        }
        let terminal = is_terminal(&video.row.status);
        let body = match respond(&self.state, video.row.clone()).await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, video = %video.row.id, "video events: could not render a state");
                // A final state that cannot be shown ends the stream (and frees its slot):
                // the client reconnects and reads it afresh.
                self.done = terminal;
                return None;
            }
        };
        let event = Event::default()
            .event("video")
            .id(video.version.to_string())
            .json_data(&body)
            .unwrap_or_else(|_| Event::default().event("error"));
        self.sent = Sent {
            version: video.version,
            state: Some(state),
        };
        self.done = terminal;
        Some(event)
    }
}

/// Authenticates the stream's request again, as the extractor did when it opened: the same
/// user, still allowed to read videos.
async fn authenticated_as(
    state: &AppState,
    headers: &HeaderMap,
    principal: &Principal,
) -> Result<(), ApiError> {
    let now = authenticate(state, headers)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("unauthenticated", "no credentials"))?;
    if now.user_id != principal.user_id {
        return Err(ApiError::unauthenticated(
            "invalid_credentials",
            "the credentials now name another user",
        ));
    }
    now.check_access(Access::Scope("videos:read"))
}

/// An event without data that sets the client's reconnection delay, then the end.
fn reconnect(why: &'static str) -> Event {
    let delay = rand::thread_rng().gen_range(RETRY_HINT_MS);
    Event::default()
        .retry(std::time::Duration::from_millis(delay))
        .comment(why)
}

/// Whether `error` says the credentials no longer authenticate or authorise (401, 403).
fn refuses(error: &ApiError) -> bool {
    matches!(
        error.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    )
}

/// The `error` event that ends a stream whose credentials no longer authenticate.
fn refusal_event(error: &ApiError) -> Event {
    let problem = error.problem();
    let data = serde_json::json!({"code": problem.code, "detail": problem.detail});
    Event::default().event("error").data(data.to_string())
}

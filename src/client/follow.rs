//! `--wait`: follows a video to its end over `GET /v1/videos/{id}/events` and shows where it
//! is. On a terminal an indicatif bar (status, percent, elapsed); elsewhere one plain line per
//! change on stderr; with `--json` nothing until the end.
//!
//! The stream sends a `video` event (id: the video's version, data: the video) at every
//! change of status or progress and ends after the terminal state. It may also end early:
//! at its lifetime or a server shutdown (with a `retry:` hint), or with an `error` event when
//! the credentials stop working (an expired access token is renewed here and the stream
//! resumed). Resuming sends `Last-Event-ID`, and a finished video the client has seen
//! answers 204. If the server has no stream to spare (429/503), the video is polled instead.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::ACCEPT;
use serde_json::Value;

use super::api::Api;
use super::error::ClientError;
use super::output::Output;
use super::sse::SseParser;

/// A stream silent this long (keep-alives included) is taken as lost and opened again.
const SILENCE: Duration = Duration::from_secs(90);
/// How often the video is read when no stream can be had.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Reconnections in a row that bring nothing new before the client gives up.
const MAX_EMPTY_RECONNECTS: u32 = 5;

pub fn is_terminal(video: &Value) -> bool {
    matches!(
        video["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

/// Where the waiting is shown.
pub enum Progress {
    Bar(ProgressBar),
    Lines {
        started: Instant,
        last: Option<(String, i64)>,
    },
    Silent,
}

impl Progress {
    pub fn new(output: Output) -> Progress {
        if output.interactive() {
            let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{spinner} {msg:<10} [{bar:30}] {pos:>3}%  {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress::Bar(bar)
        } else if output.is_json() {
            Progress::Silent
        } else {
            Progress::Lines {
                started: Instant::now(),
                last: None,
            }
        }
    }

    pub fn show(&mut self, video: &Value) {
        let status = video["status"].as_str().unwrap_or("?").to_owned();
        let percent = video["progress"].as_i64().unwrap_or(0).clamp(0, 100);
        let percent = if status == "completed" { 100 } else { percent };
        match self {
            Progress::Bar(bar) => {
                bar.set_message(status);
                bar.set_position(u64::try_from(percent).unwrap_or(0));
            }
            Progress::Lines { started, last } => {
                // A line per status, and per tenth of the way: enough for a log, not a flood.
                let news = match last {
                    Some((seen, seen_percent)) => {
                        *seen != status || percent / 10 > *seen_percent / 10
                    }
                    None => true,
                };
                if news {
                    eprintln!("{status} {percent:>3}%  {}s", started.elapsed().as_secs());
                    *last = Some((status, percent));
                }
            }
            Progress::Silent => {}
        }
    }

    /// Stops drawing, leaving the last state on screen (and the cursor on the next line).
    pub fn stop(&self) {
        if let Progress::Bar(bar) = self {
            bar.abandon();
            eprintln!();
        }
    }
}

/// Follows video `id` until it has finished; returns its final state. The latest state seen
/// is kept in `latest` (what an interrupted wait reports).
pub async fn until_finished(
    api: &mut Api,
    id: &str,
    progress: &mut Progress,
    latest: &mut Option<Value>,
) -> Result<Value, ClientError> {
    let url = api.url(&format!("/v1/videos/{id}/events"));
    let mut last_event_id: Option<String> = None;
    let mut empty_reconnects = 0;
    loop {
        let resumed = last_event_id.clone();
        let opened = api
            .send(|http| {
                let request = http.get(&url).header(ACCEPT, "text/event-stream");
                match &resumed {
                    Some(id) => request.header("Last-Event-ID", id),
                    None => request,
                }
            })
            .await;
        let mut response = match opened {
            Ok(response) if response.status() == reqwest::StatusCode::NO_CONTENT => {
                // Finished, and we have seen its last state: read it once more (links).
                let video = api.get(&format!("/v1/videos/{id}")).await?;
                progress.show(&video);
                return Ok(video);
            }
            Ok(response) => response,
            Err(error)
                if matches!(
                    error.code(),
                    Some("too_many_streams" | "streams_at_capacity")
                ) =>
            {
                return poll(api, id, progress, latest).await;
            }
            Err(error) => return Err(error),
        };
        let mut parser = SseParser::default();
        let mut retry = Duration::from_secs(1);
        let mut news = false;
        loop {
            let chunk = match tokio::time::timeout(SILENCE, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                // The stream ended, broke off or went silent: resume it.
                Ok(Ok(None) | Err(_)) | Err(_) => break,
            };
            for event in parser.feed(&chunk) {
                if let Some(ms) = event.retry {
                    retry = Duration::from_millis(ms.min(60_000));
                }
                match event.event.as_str() {
                    "video" => {
                        let video: Value = serde_json::from_str(&event.data).map_err(|e| {
                            ClientError::Network(format!("a video event is not JSON: {e}"))
                        })?;
                        last_event_id = event.id.clone().or(last_event_id);
                        news = true;
                        progress.show(&video);
                        let finished = is_terminal(&video);
                        *latest = Some(video);
                        if finished {
                            return latest.clone().ok_or_else(|| {
                                ClientError::Network("lost the final state".to_owned())
                            });
                        }
                    }
                    "error" => {
                        let problem: Value = serde_json::from_str(&event.data).unwrap_or_default();
                        let code = problem["code"]
                            .as_str()
                            .unwrap_or("stream_error")
                            .to_owned();
                        if code == "token_expired" && api.refresh().await.is_ok() {
                            news = true;
                            break;
                        }
                        return Err(ClientError::Api {
                            status: 401,
                            detail: problem["detail"]
                                .as_str()
                                .unwrap_or("the event stream ended")
                                .to_owned(),
                            code,
                            errors: Vec::new(),
                            request_id: None,
                        });
                    }
                    _ => {}
                }
            }
        }
        empty_reconnects = if news { 0 } else { empty_reconnects + 1 };
        if empty_reconnects > MAX_EMPTY_RECONNECTS {
            return Err(ClientError::Network(format!(
                "the event stream of video {id} keeps ending without news"
            )));
        }
        tokio::time::sleep(retry).await;
    }
}

/// Reads the video every [`POLL_EVERY`] until it has finished.
async fn poll(
    api: &mut Api,
    id: &str,
    progress: &mut Progress,
    latest: &mut Option<Value>,
) -> Result<Value, ClientError> {
    loop {
        let video = api.get(&format!("/v1/videos/{id}")).await?;
        progress.show(&video);
        let finished = is_terminal(&video);
        *latest = Some(video.clone());
        if finished {
            return Ok(video);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

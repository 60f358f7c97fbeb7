//! `--wait`: follow a video to its end, then download the MP4; and Ctrl-C meanwhile.
//!
//! Ctrl-C detaches: the client stops following and says that the video keeps running on the
//! server and how to follow it again; nothing is cancelled. With `--cancel-on-interrupt` it
//! cancels the video instead (the server releases its reserved credits) and says so. Either
//! way the command ends with exit code 130.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Value};

use super::api::Api;
use super::download;
use super::error::{ClientError, Exit};
use super::follow::{self, Progress};
use super::output::{cell, Output};
use super::videos::path_id;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Follow the video until it ends (progress bar on a terminal), then download the MP4.
    #[arg(long)]
    pub wait: bool,
    /// Where --wait saves the MP4 [default: <id>.mp4].
    #[arg(long, short, requires = "wait")]
    pub output: Option<PathBuf>,
    /// Ctrl-C during --wait cancels the video (its reserved credits are released) instead
    /// of leaving it running.
    #[arg(long, requires = "wait")]
    pub cancel_on_interrupt: bool,
}

pub async fn follow(
    api: &mut Api,
    video: Value,
    args: &WaitArgs,
    output: Output,
) -> Result<Exit, ClientError> {
    let id = path_id(video["id"].as_str().unwrap_or_default())?.to_owned();
    let mut interrupt = Interrupt::listen()?;
    output.note(format_args!(
        "Following video {id}; Ctrl-C {}.",
        if args.cancel_on_interrupt {
            "cancels it"
        } else {
            "detaches (the video is not cancelled)"
        }
    ));
    let mut progress = Progress::new(output);
    progress.show(&video);
    let mut latest = Some(video);
    let outcome = tokio::select! {
        result = follow::until_finished(api, &id, &mut progress, &mut latest) => Some(result),
        () = interrupt.recv() => None,
    };
    progress.stop();
    match outcome {
        None => interrupted(api, &id, latest, args, output).await,
        Some(Err(error)) => Err(error),
        Some(Ok(video)) => finished(api, video, args, output).await,
    }
}

async fn finished(
    api: &mut Api,
    video: Value,
    args: &WaitArgs,
    output: Output,
) -> Result<Exit, ClientError> {
    let id = cell(&video, "id");
    if video["status"] != json!("completed") {
        let ended = json!({ "video": video });
        output.result(&ended, |ended| {
            let video = &ended["video"];
            match video["status"].as_str() {
                Some("failed") => format!(
                    "Video {id} failed: {} ({}); {}.",
                    video["error"]["message"]
                        .as_str()
                        .unwrap_or("no reason given"),
                    video["error"]["code"].as_str().unwrap_or("?"),
                    if video["error"]["charged"] == json!(true) {
                        "it was charged"
                    } else {
                        "its credits were released"
                    }
                ),
                _ => format!("Video {id} was cancelled."),
            }
        });
        return Ok(Exit::VideoFailed);
    }
    let target = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{id}.mp4")));
    let bytes = download::fetch(api, &id, "video", &target, output).await?;
    let done = json!({
        "video": video,
        "output": target.display().to_string(),
        "bytes": bytes,
    });
    output.result(&done, |done| {
        format!(
            "Video {id} completed ({} credits). Saved to {} ({bytes} bytes).",
            cell(&done["video"], "final_cost"),
            target.display()
        )
    });
    Ok(Exit::Success)
}

async fn interrupted(
    api: &mut Api,
    id: &str,
    latest: Option<Value>,
    args: &WaitArgs,
    output: Output,
) -> Result<Exit, ClientError> {
    if !args.cancel_on_interrupt {
        let result =
            json!({ "video": latest, "interrupted": true, "detached": true, "cancelled": false });
        output.result(&result, |_| {
            format!(
                "Interrupted: stopped following video {id}; it keeps running on the server (not cancelled).\n\
                 Follow it again with `framegate client videos get {id} --wait`, \
                 or cancel it with `framegate client videos cancel {id}`."
            )
        });
        return Ok(Exit::Interrupted);
    }
    let cancelled = api
        .call(
            Method::POST,
            &format!("/v1/videos/{id}/cancel"),
            Some(&json!({ "reason": "interrupted while waiting (framegate client)" })),
        )
        .await;
    let video = match cancelled {
        Ok(video) => video,
        Err(error) if error.code() == Some("video_finished") => {
            let video = api.get(&format!("/v1/videos/{id}")).await?;
            let result = json!({ "video": video, "interrupted": true, "detached": false, "cancelled": false });
            output.result(&result, |_| {
                format!(
                    "Interrupted: video {id} had already finished ({}); nothing to cancel.",
                    cell(&video, "status")
                )
            });
            return Ok(Exit::Interrupted);
        }
        Err(error) => return Err(error),
    };
    let result =
        json!({ "video": video, "interrupted": true, "detached": false, "cancelled": true });
    output.result(&result, |_| {
        format!("Interrupted: video {id} {}", cancel_outcome(&video))
    });
    Ok(Exit::Interrupted)
}

/// What a cancel answer means for the video and its credits.
pub fn cancel_outcome(video: &Value) -> String {
    match (video["status"].as_str(), video["cancellation"]["charged"].as_bool()) {
        (Some("cancelled"), Some(true)) => {
            "cancelled; the provider had accepted it and could not stop it, so it was charged."
                .to_owned()
        }
        (Some("cancelled"), _) => "cancelled; its reserved credits are released.".to_owned(),
        _ => "cancellation requested; the server releases its reserved credits once the provider has stopped it."
            .to_owned(),
    }
}

/// Ctrl-C (SIGINT), listened for from the moment the wait starts: the default action (the
/// process dies) would leave no word about the video.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn listen() -> Result<Self, ClientError> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| ClientError::local("listening for Ctrl-C", e))?;
            Ok(Interrupt { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

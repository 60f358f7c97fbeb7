//! Media handling with ffmpeg: the simulator's real MP4 rendering and the post-processing every
//! generated video goes through (ffprobe validation, poster frame, thumbnail).
//!
//! Everything here shells out to the `ffmpeg` and `ffprobe` binaries rather than linking the
//! libraries: the binaries are what operators can install and upgrade (`scripts/install-ffmpeg.sh`),
//! and a crashing decoder takes down a child process, not the worker. Every call runs with
//! explicit arguments (never a shell), a timeout, `kill_on_drop` and captured stderr.
//!
//! Nothing a user controls reaches ffmpeg's filter-graph syntax: the prompt goes to a text file
//! that `drawtext` reads without expansion, the font is copied next to it under a fixed name,
//! and input files are passed as `file:` arguments restricted to a whitelist of demuxers (so a
//! crafted "video" cannot pull in playlists, concat lists or other local files).

mod frames;
mod mp4;
mod probe;
mod render;
mod still;
mod tools;

use std::process::ExitStatus;
use std::time::Duration;

pub use frames::{extract_poster, extract_stills, make_thumbnail, thumbnail_size, Stills};
pub use probe::{probe, probe_with_ffprobe, validate_video, Expectation, ProbeReport};
pub use render::{dimensions, render_simulated, RenderRequest, DEFAULT_FPS, MAX_RENDER_SECONDS};
pub use still::{prepare_start_image, StartImage};
pub use tools::{MediaTools, DEFAULT_FONT, DEFAULT_TIMEOUT};

/// Where to send whoever finds ffmpeg missing.
const INSTALL_HINT: &str = "run scripts/install-ffmpeg.sh (Debian package `ffmpeg`, with \
                            `fonts-dejavu-core`) or point FRAMEGATE_FFMPEG / FRAMEGATE_FFPROBE at \
                            the binaries";

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The binary (or a feature of it, such as libx264 or the font) is not available.
    #[error("{tool} is not available: {hint}")]
    ToolMissing { tool: String, hint: String },
    /// The tool ran and exited unsuccessfully.
    #[error("{tool} failed ({status}): {stderr_tail}")]
    Failed {
        tool: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    /// The tool ran longer than `MediaTools::timeout` and was killed.
    #[error("{tool} did not finish within {after:?} and was killed")]
    TimedOut { tool: String, after: Duration },
    /// The file is not a usable video (unreadable, empty, no video stream, wrong duration...).
    #[error("invalid video: {0}")]
    InvalidVideo(String),
    #[error("media I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The caller asked for something we will not render (odd sizes, zero duration...).
    #[error("invalid media request: {0}")]
    InvalidRequest(String),
    /// A `FRAMEGATE_*` media setting is malformed.
    #[error("invalid media configuration: {0}")]
    InvalidConfig(String),
}

impl MediaError {
    /// A stable, machine-readable code (recorded on failed videos, shown to operators).
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::ToolMissing { .. } => "media_tool_missing",
            MediaError::Failed { .. } => "media_tool_failed",
            MediaError::TimedOut { .. } => "media_timed_out",
            MediaError::InvalidVideo(_) => "invalid_video",
            MediaError::Io(_) => "media_io_error",
            MediaError::InvalidRequest(_) => "invalid_media_request",
            MediaError::InvalidConfig(_) => "invalid_media_config",
        }
    }

    /// Whether trying the same thing again later could succeed. A broken upstream file or a
    /// request we refuse will not get better; a missing tool, a slow machine or a full disk may.
    pub fn is_retryable(&self) -> bool {
        match self {
            MediaError::ToolMissing { .. }
            | MediaError::TimedOut { .. }
            | MediaError::Io(_)
            | MediaError::InvalidConfig(_) => true,
            MediaError::Failed { .. }
            | MediaError::InvalidVideo(_)
            | MediaError::InvalidRequest(_) => false,
        }
    }
}

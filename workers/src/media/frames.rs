//! Still frames from a video: the full-size poster shown before playback and the small
//! thumbnail used in listings, both JPEG.

use std::ffi::OsString;
use std::path::Path;

use super::probe::{probe, ProbeReport};
use super::tools::{args, file_url, MediaTools, PendingOutput, Tool};
use super::MediaError;

/// Demuxers a video may be decoded with here: the containers providers deliver.
const VIDEO_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm";

/// Writes the frame at `at_seconds` as a full-size JPEG. Times past the end take the last
/// moment of the video (a poster is wanted even when a provider delivered a shorter clip).
#[tracing::instrument(skip_all, fields(video = %video.display(), at_seconds))]
pub async fn extract_poster(
    tools: &MediaTools,
    video: &Path,
    at_seconds: f64,
    output_jpeg: &Path,
) -> Result<(), MediaError> {
    if !at_seconds.is_finite() || at_seconds < 0.0 {
        return Err(MediaError::InvalidRequest(format!(
            "a poster time must be a non-negative number of seconds, not {at_seconds}"
        )));
    }
    let report = probe(tools, video).await?;
    let at = clamp_to_video(at_seconds, &report);
    grab_frame(tools, video, at, None, output_jpeg).await
}

/// Writes a JPEG of the video's middle frame whose longest side is at most `max_side`, aspect
/// ratio kept; smaller videos are not scaled up.
#[tracing::instrument(skip_all, fields(video = %video.display(), max_side))]
pub async fn make_thumbnail(
    tools: &MediaTools,
    video: &Path,
    max_side: u32,
    output_jpeg: &Path,
) -> Result<(), MediaError> {
    if max_side == 0 {
        return Err(MediaError::InvalidRequest(
            "a thumbnail needs a positive size".to_owned(),
        ));
    }
    let report = probe(tools, video).await?;
    let size = thumbnail_size(report.width, report.height, max_side);
    let middle = report.duration_ms as f64 / 2_000.0;
    grab_frame(
        tools,
        video,
        clamp_to_video(middle, &report),
        Some(size),
        output_jpeg,
    )
    .await
}

/// The size of a `width`x`height` frame scaled so its longest side is at most `max_side`.
pub fn thumbnail_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side || longest == 0 {
        return (width, height);
    }
    let scale = |side: u32| {
        let scaled =
            (u64::from(side) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest);
        u32::try_from(scaled).unwrap_or(max_side).max(1)
    };
    (scale(width), scale(height))
}

/// Seeking to the very end yields no frame; stay one short frame (100 ms) before it.
fn clamp_to_video(at_seconds: f64, report: &ProbeReport) -> f64 {
    if report.duration_ms == 0 {
        return 0.0;
    }
    let last = report.duration_ms.saturating_sub(100) as f64 / 1_000.0;
    at_seconds.min(last)
}

async fn grab_frame(
    tools: &MediaTools,
    video: &Path,
    at_seconds: f64,
    size: Option<(u32, u32)>,
    output_jpeg: &Path,
) -> Result<(), MediaError> {
    let pending = PendingOutput::beside(output_jpeg)?;
    let mut command = args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-y",
    ]);
    // Before -i: seek the input (decoding from the preceding keyframe to the exact time).
    command.extend(args(["-ss"]));
    command.push(OsString::from(format!("{at_seconds:.3}")));
    command.extend(args([
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        VIDEO_FORMATS,
        "-i",
    ]));
    command.push(file_url(video)?);
    if let Some((width, height)) = size {
        command.extend(args(["-vf"]));
        command.push(OsString::from(format!("scale={width}:{height},setsar=1")));
    }
    command.extend(args([
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-an",
        "-q:v",
        "3",
        "-f",
        "mjpeg",
    ]));
    command.push(pending.url()?);
    tools
        .run(Tool::Ffmpeg, command, None)
        .await
        .map_err(|error| match error {
            MediaError::Failed { stderr_tail, .. } => MediaError::InvalidVideo(format!(
                "no frame at {at_seconds:.3} s of {}: {stderr_tail}",
                video.display()
            )),
            other => other,
        })?;
    pending.commit("ffmpeg").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_ratio_and_never_upscale() {
        assert_eq!(thumbnail_size(1280, 720, 320), (320, 180));
        assert_eq!(thumbnail_size(720, 1280, 320), (180, 320));
        assert_eq!(thumbnail_size(1080, 1080, 256), (256, 256));
        assert_eq!(thumbnail_size(854, 480, 100), (100, 56));
        assert_eq!(thumbnail_size(200, 100, 320), (200, 100));
        assert_eq!(thumbnail_size(4000, 2, 100), (100, 1));
    }
}

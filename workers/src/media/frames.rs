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

/// What [`extract_stills`] writes: the poster (full size, at `poster_at_seconds`) and the
/// thumbnail (the middle frame, longest side at most `thumbnail_max_side`).
#[derive(Debug, Clone, Copy)]
pub struct Stills<'a> {
    pub poster_at_seconds: f64,
    pub poster_jpeg: &'a Path,
    pub thumbnail_max_side: u32,
    pub thumbnail_jpeg: &'a Path,
}

/// The poster and the thumbnail of `video` in one ffmpeg run, from the probe report the
/// caller already has (no second probe): the same two files [`extract_poster`] and
/// [`make_thumbnail`] write, at a third of their cost.
#[tracing::instrument(skip_all, fields(video = %video.display()))]
pub async fn extract_stills(
    tools: &MediaTools,
    video: &Path,
    report: &ProbeReport,
    stills: &Stills<'_>,
) -> Result<(), MediaError> {
    if !stills.poster_at_seconds.is_finite() || stills.poster_at_seconds < 0.0 {
        return Err(MediaError::InvalidRequest(format!(
            "a poster time must be a non-negative number of seconds, not {}",
            stills.poster_at_seconds
        )));
    }
    if stills.thumbnail_max_side == 0 {
        return Err(MediaError::InvalidRequest(
            "a thumbnail needs a positive size".to_owned(),
        ));
    }
    let middle = report.duration_ms as f64 / 2_000.0;
    let frames = [
        Frame {
            at_seconds: clamp_to_video(stills.poster_at_seconds, report),
            size: None,
            output_jpeg: stills.poster_jpeg,
        },
        Frame {
            at_seconds: clamp_to_video(middle, report),
            size: Some(thumbnail_size(
                report.width,
                report.height,
                stills.thumbnail_max_side,
            )),
            output_jpeg: stills.thumbnail_jpeg,
        },
    ];
    grab_frames(tools, video, &frames).await
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

/// One still to take from a video: the time, an optional size, where the JPEG goes.
struct Frame<'a> {
    at_seconds: f64,
    size: Option<(u32, u32)>,
    output_jpeg: &'a Path,
}

async fn grab_frame(
    tools: &MediaTools,
    video: &Path,
    at_seconds: f64,
    size: Option<(u32, u32)>,
    output_jpeg: &Path,
) -> Result<(), MediaError> {
    let frame = Frame {
        at_seconds,
        size,
        output_jpeg,
    };
    grab_frames(tools, video, &[frame]).await
}

/// Takes every frame in one ffmpeg run: the video is opened once per frame, each input
/// seeking on its own (decoding from the preceding keyframe to the exact time), and each
/// output maps its own input.
async fn grab_frames(
    tools: &MediaTools,
    video: &Path,
    frames: &[Frame<'_>],
) -> Result<(), MediaError> {
    let mut pending = Vec::with_capacity(frames.len());
    let mut command = args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-y",
    ]);
    for frame in frames {
        // Before -i: seek the input.
        command.extend(args(["-ss"]));
        command.push(OsString::from(format!("{:.3}", frame.at_seconds)));
        command.extend(args([
            "-protocol_whitelist",
            "file",
            "-format_whitelist",
            VIDEO_FORMATS,
            "-i",
        ]));
        command.push(file_url(video)?);
    }
    for (input, frame) in frames.iter().enumerate() {
        let output = PendingOutput::beside(frame.output_jpeg)?;
        command.extend(args(["-map"]));
        command.push(OsString::from(format!("{input}:v:0")));
        if let Some((width, height)) = frame.size {
            command.extend(args(["-vf"]));
            command.push(OsString::from(format!("scale={width}:{height},setsar=1")));
        }
        command.extend(args(["-frames:v", "1", "-an", "-q:v", "3", "-f", "mjpeg"]));
        command.push(output.url()?);
        pending.push(output);
    }
    tools
        .run(Tool::Ffmpeg, command, None)
        .await
        .map_err(|error| match error {
            MediaError::Failed { stderr_tail, .. } => {
                let times: Vec<String> = frames
                    .iter()
                    .map(|f| format!("{:.3} s", f.at_seconds))
                    .collect();
                MediaError::InvalidVideo(format!(
                    "no frame at {} of {}: {stderr_tail}",
                    times.join(" and "),
                    video.display()
                ))
            }
            other => other,
        })?;
    for output in pending {
        output.commit("ffmpeg").await?;
    }
    Ok(())
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

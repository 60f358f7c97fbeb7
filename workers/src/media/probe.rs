//! What a media file is, according to ffprobe, and whether a generated video is what we asked
//! for. Every provider's output passes through [`validate_video`] before it is stored: a file
//! that is empty, not a video, or of the wrong length fails the job with `invalid_video`
//! instead of reaching a user.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::mp4;
use super::tools::{args, file_url, MediaTools, Tool};
use super::MediaError;

/// Demuxers ffprobe may use: the containers providers deliver, plus still images so posters
/// and thumbnails can be checked too. Playlists, concat lists and raw formats stay out.
const PROBE_FORMATS: &str =
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,image2,png_pipe,jpeg_pipe,webp_pipe";
/// Still-image demuxers among [`PROBE_FORMATS`]: never a valid video.
const STILL_FORMATS: [&str; 4] = ["image2", "png_pipe", "jpeg_pipe", "webp_pipe"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The first video stream's codec, as ffprobe names it (`h264`, `hevc`, `mjpeg`...).
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// 0 when the file has no duration (a still image).
    pub duration_ms: u64,
    pub has_audio: bool,
    pub bytes: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// ffprobe's demuxer name, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format_name: String,
}

impl ProbeReport {
    fn is_still_image(&self) -> bool {
        STILL_FORMATS.contains(&self.format_name.as_str())
    }
}

/// Reads a file's streams and format (in-process for a plain MP4, else with ffprobe), and
/// hashes it.
#[tracing::instrument(skip_all, fields(file = %file.display()))]
pub async fn probe(tools: &MediaTools, file: &Path) -> Result<ProbeReport, MediaError> {
    let metadata = tokio::fs::metadata(file).await?;
    if !metadata.is_file() {
        return Err(MediaError::InvalidVideo(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    if metadata.len() == 0 {
        return Err(MediaError::InvalidVideo(format!(
            "{} is empty",
            file.display()
        )));
    }
    // A plain MP4, the container every provider delivers, is read in-process; anything
    // else (or anything unusual about it) goes to ffprobe.
    let native = {
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || mp4::read(&file))
    };
    let (native, hashed) = tokio::join!(native, hash_file(file));
    if let Ok(Some(facts)) = native {
        let (bytes, sha256) = hashed?;
        return Ok(ProbeReport {
            codec: facts.codec.to_owned(),
            width: facts.width,
            height: facts.height,
            duration_ms: facts.duration_ms,
            has_audio: facts.has_audio,
            bytes,
            sha256,
            format_name: mp4::FORMAT_NAME.to_owned(),
        });
    }
    ffprobe(tools, file, hashed?).await
}

/// What ffprobe alone reports on `file` (never the in-process MP4 reader): the reference
/// the in-process reader is tested against.
pub async fn probe_with_ffprobe(
    tools: &MediaTools,
    file: &Path,
) -> Result<ProbeReport, MediaError> {
    let hashed = hash_file(file).await?;
    ffprobe(tools, file, hashed).await
}

/// The report of ffprobe on `file`, whose size and hash are known.
async fn ffprobe(
    tools: &MediaTools,
    file: &Path,
    (bytes, sha256): (u64, String),
) -> Result<ProbeReport, MediaError> {
    let mut command = args([
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        PROBE_FORMATS,
        "-print_format",
        "json",
        "-show_streams",
        "-show_format",
    ]);
    command.push(file_url(file)?);
    let stdout = tools
        .run(Tool::Ffprobe, command, None)
        .await
        .map_err(|error| match error {
            // ffprobe refusing the file is a verdict on the file, not on ffprobe.
            MediaError::Failed { stderr_tail, .. } => MediaError::InvalidVideo(format!(
                "ffprobe cannot read {} as a video: {stderr_tail}",
                file.display()
            )),
            other => other,
        })?;
    let output: FfprobeOutput = serde_json::from_slice(&stdout).map_err(|error| {
        MediaError::InvalidVideo(format!(
            "ffprobe printed unreadable JSON for {}: {error}",
            file.display()
        ))
    })?;
    report(output, bytes, sha256)
        .map_err(|reason| MediaError::InvalidVideo(format!("{}: {reason}", file.display())))
}

/// What a generated video must look like. Empty `codecs` accepts any video codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub min_duration_ms: u64,
    pub max_duration_ms: u64,
    pub codecs: Vec<String>,
    /// Exact frame size, when the provider promises one.
    pub size: Option<(u32, u32)>,
    pub max_bytes: Option<u64>,
}

impl Expectation {
    /// A video of `seconds` give or take `tolerance_ms`, any codec, any size.
    pub fn duration(seconds: u32, tolerance_ms: u64) -> Expectation {
        let target = u64::from(seconds) * 1_000;
        Expectation {
            min_duration_ms: target.saturating_sub(tolerance_ms),
            max_duration_ms: target.saturating_add(tolerance_ms),
            codecs: Vec::new(),
            size: None,
            max_bytes: None,
        }
    }

    fn check(&self, report: &ProbeReport) -> Result<(), String> {
        if report.is_still_image() {
            return Err(format!(
                "a still image ({}), not a video",
                report.format_name
            ));
        }
        if report.duration_ms == 0 {
            return Err("the video has no duration".to_owned());
        }
        if !(self.min_duration_ms..=self.max_duration_ms).contains(&report.duration_ms) {
            return Err(format!(
                "lasts {} ms, expected {} to {} ms",
                report.duration_ms, self.min_duration_ms, self.max_duration_ms
            ));
        }
        if !self.codecs.is_empty() && !self.codecs.contains(&report.codec) {
            return Err(format!(
                "codec {} is not one of {}",
                report.codec,
                self.codecs.join(", ")
            ));
        }
        if let Some((width, height)) = self.size {
            if (report.width, report.height) != (width, height) {
                return Err(format!(
                    "is {}x{}, expected {width}x{height}",
                    report.width, report.height
                ));
            }
        }
        if let Some(max_bytes) = self.max_bytes {
            if report.bytes > max_bytes {
                return Err(format!(
                    "is {} bytes, more than the {max_bytes} allowed",
                    report.bytes
                ));
            }
        }
        Ok(())
    }
}

/// Probes `file` and checks it against `expected`; any mismatch is `InvalidVideo`.
#[tracing::instrument(skip_all, fields(file = %file.display()))]
pub async fn validate_video(
    tools: &MediaTools,
    file: &Path,
    expected: &Expectation,
) -> Result<ProbeReport, MediaError> {
    let report = probe(tools, file).await?;
    expected
        .check(&report)
        .map_err(|reason| MediaError::InvalidVideo(format!("{}: {reason}", file.display())))?;
    Ok(report)
}

async fn hash_file(file: &Path) -> Result<(u64, String), MediaError> {
    let mut reader = tokio::fs::File::open(file).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut bytes = 0_u64;
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}

#[derive(Debug, Deserialize)]
struct FfprobeOutput {
    #[serde(default)]
    streams: Vec<FfprobeStream>,
    format: Option<FfprobeFormat>,
}

#[derive(Debug, Deserialize)]
struct FfprobeStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    disposition: Disposition,
}

#[derive(Debug, Default, Deserialize)]
struct Disposition {
    /// Cover art in an audio file shows up as a one-frame "video" stream.
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Debug, Deserialize)]
struct FfprobeFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

fn report(output: FfprobeOutput, bytes: u64, sha256: String) -> Result<ProbeReport, String> {
    let is = |stream: &FfprobeStream, kind: &str| stream.codec_type.as_deref() == Some(kind);
    let video = output
        .streams
        .iter()
        .find(|s| is(s, "video") && s.disposition.attached_pic == 0)
        .ok_or("no video stream")?;
    let codec = video
        .codec_name
        .clone()
        .ok_or("the video codec is unknown")?;
    let (width, height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err("the video stream has no frame size".to_owned()),
    };
    let format = output.format.ok_or("no container format")?;
    let duration_ms = format
        .duration
        .as_deref()
        .and_then(seconds_to_ms)
        .or_else(|| video.duration.as_deref().and_then(seconds_to_ms))
        .unwrap_or(0);
    Ok(ProbeReport {
        codec,
        width,
        height,
        duration_ms,
        has_audio: output.streams.iter().any(|s| is(s, "audio")),
        bytes,
        sha256,
        format_name: format.format_name.unwrap_or_default(),
    })
}

/// ffprobe's "12.345000" (or "N/A") as milliseconds.
fn seconds_to_ms(seconds: &str) -> Option<u64> {
    let seconds: f64 = seconds.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1_000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ProbeReport, String> {
        report(
            serde_json::from_str(json).expect("json"),
            10,
            "ab".to_owned(),
        )
    }

    #[test]
    fn an_mp4_with_video_and_audio_is_reported() {
        let report = parse(
            r#"{"streams":[{"codec_type":"video","codec_name":"h264","width":320,"height":180,
                "duration":"2.000000","disposition":{"attached_pic":0}},
               {"codec_type":"audio","codec_name":"aac","duration":"2.000000"}],
               "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"2.000000"}}"#,
        )
        .expect("report");
        assert_eq!(
            report,
            ProbeReport {
                codec: "h264".into(),
                width: 320,
                height: 180,
                duration_ms: 2_000,
                has_audio: true,
                bytes: 10,
                sha256: "ab".into(),
                format_name: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            }
        );
    }

    #[test]
    fn cover_art_in_an_audio_file_is_not_a_video_stream() {
        let error = parse(
            r#"{"streams":[{"codec_type":"audio","codec_name":"aac"},
               {"codec_type":"video","codec_name":"mjpeg","width":500,"height":500,
                "disposition":{"attached_pic":1}}],
               "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"3.0"}}"#,
        )
        .expect_err("audio only");
        assert_eq!(error, "no video stream");
    }

    #[test]
    fn a_missing_format_duration_falls_back_to_the_stream() {
        let report = parse(
            r#"{"streams":[{"codec_type":"video","codec_name":"vp9","width":2,"height":2,
                "duration":"1.5"}],"format":{"format_name":"matroska,webm","duration":"N/A"}}"#,
        )
        .expect("report");
        assert_eq!(report.duration_ms, 1_500);
    }

    #[test]
    fn expectations_reject_still_images_wrong_codecs_sizes_and_lengths() {
        let good = ProbeReport {
            codec: "h264".into(),
            width: 1280,
            height: 720,
            duration_ms: 8_020,
            has_audio: true,
            bytes: 1_000,
            sha256: String::new(),
            format_name: "mov,mp4,m4a,3gp,3g2,mj2".into(),
        };
        let expected = Expectation {
            codecs: vec!["h264".into(), "hevc".into()],
            size: Some((1280, 720)),
            max_bytes: Some(10_000),
            ..Expectation::duration(8, 250)
        };
        assert_eq!(expected.check(&good), Ok(()));
        let bad = [
            ProbeReport {
                format_name: "jpeg_pipe".into(),
                ..good.clone()
            },
            ProbeReport {
                duration_ms: 4_000,
                ..good.clone()
            },
            ProbeReport {
                codec: "mpeg4".into(),
                ..good.clone()
            },
            ProbeReport {
                width: 720,
                height: 1280,
                ..good.clone()
            },
            ProbeReport {
                bytes: 10_001,
                ..good.clone()
            },
        ];
        for report in bad {
            assert!(expected.check(&report).is_err(), "{report:?}");
        }
    }
}

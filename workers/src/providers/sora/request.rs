//! What `POST /videos` sends: the job checked against what the format can express, the
//! negative prompt folded into the prompt, and the start image fitted to the output size.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ImageFormat, ImageReader};
use reqwest::multipart::Part;

use super::wire::{wire_string, VideoObject};
use crate::provider::{codes, Job, JobImage, ProviderFailure};

const MAX_PROMPT_CHARS: usize = 32_000;
const JPEG_QUALITY: u8 = 90;

/// An output size as the spec names it and in pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size {
    pub(super) wire: &'static str,
    width: u32,
    height: u32,
}

/// The fields of `POST /videos`, as sent.
pub(super) struct CreateVideo {
    pub(super) prompt: String,
    pub(super) model: String,
    pub(super) seconds: &'static str,
    pub(super) size: Size,
}

impl CreateVideo {
    /// Checks the job against what the format can express, before anything is sent.
    pub(super) fn from_job(job: &Job) -> Result<Self, ProviderFailure> {
        let size = match (job.aspect_ratio.as_str(), job.resolution.as_str()) {
            ("16:9", "720p") => ("1280x720", 1280, 720),
            ("9:16", "720p") => ("720x1280", 720, 1280),
            ("16:9", "1080p") => ("1792x1024", 1792, 1024),
            ("9:16", "1080p") => ("1024x1792", 1024, 1792),
            (aspect, resolution) => {
                return Err(invalid(format!(
                    "sora renders 16:9 or 9:16 at 720p or 1080p, not {aspect} at {resolution}"
                )))
            }
        };
        let seconds = match job.duration_seconds {
            4 => "4",
            8 => "8",
            12 => "12",
            other => return Err(invalid(format!("sora renders 4, 8 or 12 s, not {other} s"))),
        };
        let prompt = match job.negative_prompt.as_deref().map(str::trim) {
            Some(negative) if !negative.is_empty() => {
                format!("{}\n\nAvoid: {negative}", job.prompt)
            }
            _ => job.prompt.clone(),
        };
        let chars = prompt.chars().count();
        if chars == 0 || chars > MAX_PROMPT_CHARS {
            return Err(invalid(format!(
                "the prompt (with the negative prompt) must have 1 to {MAX_PROMPT_CHARS} \
                 characters, not {chars}"
            )));
        }
        Ok(Self {
            prompt,
            model: job.model.clone(),
            seconds,
            size: Size {
                wire: size.0,
                width: size.1,
                height: size.2,
            },
        })
    }

    /// Whether `video` is what this request creates.
    pub(super) fn made(&self, video: &VideoObject) -> bool {
        video.prompt.as_deref() == Some(self.prompt.as_str())
            && video.size.as_deref() == Some(self.size.wire)
            && video.seconds.as_ref().and_then(wire_string).as_deref() == Some(self.seconds)
            && video.model.as_deref().is_some_and(|model| {
                // Providers may answer with the dated snapshot: `sora-2-2025-10-06`.
                model == self.model
                    || model
                        .strip_prefix(self.model.as_str())
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
    }
}

/// The start image as an `input_reference` file part of exactly `size`.
pub(super) async fn reference_part(image: &JobImage, size: Size) -> Result<Part, ProviderFailure> {
    let (format, file_name) = match image.content_type.as_str() {
        "image/jpeg" => (ImageFormat::Jpeg, "input_reference.jpg"),
        "image/png" => (ImageFormat::Png, "input_reference.png"),
        other => {
            return Err(invalid(format!(
                "start images must be JPEG or PNG, not {other}"
            )))
        }
    };
    let bytes = image.bytes.clone();
    let fitted = tokio::task::spawn_blocking(move || cover(&bytes, format, size))
        .await
        .map_err(|e| invalid(format!("the start image could not be prepared: {e}")))?
        .map_err(|e| invalid(format!("the start image could not be prepared: {e}")))?;
    Part::bytes(fitted)
        .file_name(file_name)
        .mime_str(&image.content_type)
        .map_err(|e| invalid(format!("start image type: {e}")))
}

/// Scales the image to cover `size`, crops the overflow evenly from both sides and encodes
/// it again in `format`. An image already of that size is sent unchanged.
fn cover(bytes: &[u8], format: ImageFormat, size: Size) -> Result<Vec<u8>, image::ImageError> {
    let dimensions = ImageReader::with_format(Cursor::new(bytes), format).into_dimensions()?;
    if dimensions == (size.width, size.height) {
        return Ok(bytes.to_vec());
    }
    let image = image::load_from_memory_with_format(bytes, format)?;
    let fitted = image.resize_to_fill(size.width, size.height, FilterType::Lanczos3);
    let mut encoded = Vec::new();
    if format == ImageFormat::Jpeg {
        JpegEncoder::new_with_quality(&mut encoded, JPEG_QUALITY)
            .encode_image(&fitted.to_rgb8())?;
    } else {
        fitted.write_to(&mut Cursor::new(&mut encoded), format)?;
    }
    Ok(encoded)
}

fn invalid(message: String) -> ProviderFailure {
    ProviderFailure::new(codes::INVALID_REQUEST, message, false, false)
}

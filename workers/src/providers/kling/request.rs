//! What a creation request carries, and the refusals Kling would answer found before asking
//! it: prompt length, resolution and aspect ratio, and the start image's rules.

use std::io::Cursor;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::provider::{codes, Job, JobImage, ProviderFailure};

/// The catalog's default Kling model, used when a job names none.
const DEFAULT_MODEL: &str = "kling-v2-6";
const MAX_PROMPT_CHARS: usize = 2500;
const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
const MIN_IMAGE_SIDE: u32 = 300;

#[derive(Serialize)]
struct CreateTask<'a> {
    model_name: &'a str,
    /// image2video only: raw standard base64, no `data:` prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    prompt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    negative_prompt: Option<&'a str>,
    mode: &'static str,
    /// text2video only.
    #[serde(skip_serializing_if = "Option::is_none")]
    aspect_ratio: Option<&'a str>,
    /// A string, as Kling wants it: `"5"` or `"10"`.
    duration: String,
    external_task_id: String,
}

/// The creation body, or the refusal Kling would answer, found without asking it.
pub(super) fn create_body(job: &Job) -> Result<Value, ProviderFailure> {
    let invalid =
        |message: String| ProviderFailure::new(codes::INVALID_REQUEST, message, false, false);
    let negative_prompt = job.negative_prompt.as_deref().filter(|p| !p.is_empty());
    for text in std::iter::once(job.prompt.as_str()).chain(negative_prompt) {
        if text.chars().count() > MAX_PROMPT_CHARS {
            return Err(invalid(format!(
                "kling takes prompts of at most {MAX_PROMPT_CHARS} characters"
            )));
        }
    }
    let mode = match job.resolution.as_str() {
        "720p" => "std",
        "1080p" => "pro",
        other => return Err(invalid(format!("kling renders 720p or 1080p, not {other}"))),
    };
    let image = match &job.image {
        Some(image) => {
            check_image(image)?;
            Some(base64::engine::general_purpose::STANDARD.encode(&image.bytes))
        }
        None => None,
    };
    let aspect_ratio = match (&image, job.aspect_ratio.as_str()) {
        (Some(_), _) => None,
        (None, ratio @ ("16:9" | "9:16" | "1:1")) => Some(ratio),
        (None, other) => {
            return Err(invalid(format!(
                "kling renders 16:9, 9:16 or 1:1, not {other}"
            )))
        }
    };
    let body = CreateTask {
        model_name: if job.model.is_empty() {
            DEFAULT_MODEL
        } else {
            &job.model
        },
        image,
        prompt: &job.prompt,
        negative_prompt,
        mode,
        aspect_ratio,
        duration: job.duration_seconds.to_string(),
        external_task_id: job.video_id.to_string(),
    };
    serde_json::to_value(body).map_err(|e| invalid(format!("cannot encode the kling request: {e}")))
}

/// Kling's image rules: JPEG or PNG by content, at most 10 MB, both sides at least 300 px,
/// aspect ratio between 1:2.5 and 2.5:1.
fn check_image(image: &JobImage) -> Result<(), ProviderFailure> {
    let refuse = |why: String| {
        ProviderFailure::new(
            codes::INVALID_REQUEST,
            format!("kling refuses this start image: {why}"),
            false,
            false,
        )
    };
    let bytes = &image.bytes[..];
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(refuse(format!("{} bytes is over 10 MB", bytes.len())));
    }
    let format = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        image::ImageFormat::Jpeg
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        image::ImageFormat::Png
    } else {
        return Err(refuse("it is neither JPEG nor PNG".into()));
    };
    let (width, height) = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| refuse(format!("unreadable: {e}")))?;
    let (short, long) = (width.min(height), width.max(height));
    if short < MIN_IMAGE_SIDE {
        return Err(refuse(format!(
            "{width}x{height} has a side under {MIN_IMAGE_SIDE} px"
        )));
    }
    if u64::from(long) * 2 > u64::from(short) * 5 {
        return Err(refuse(format!(
            "{width}x{height} is wider than 2.5:1 or 1:2.5"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;

    fn encoded(width: u32, height: u32, format: image::ImageFormat) -> JobImage {
        let mut bytes = Cursor::new(Vec::new());
        image::RgbImage::new(width, height)
            .write_to(&mut bytes, format)
            .expect("encode");
        let content_type = match format {
            image::ImageFormat::Png => "image/png",
            _ => "image/jpeg",
        };
        JobImage {
            bytes: bytes.into_inner().into(),
            content_type: content_type.into(),
        }
    }

    #[test]
    fn start_images_must_follow_klings_rules() {
        use image::ImageFormat::{Jpeg, Png, WebP};
        let accepted = [
            (300, 300, Png),
            (300, 750, Jpeg),
            (750, 300, Png),
            (1280, 720, Jpeg),
        ];
        for (width, height, format) in accepted {
            assert_eq!(
                check_image(&encoded(width, height, format)),
                Ok(()),
                "{width}x{height}"
            );
        }
        let refused = [
            (299, 600, Png),
            (600, 299, Jpeg),
            (300, 751, Png),
            (751, 300, Jpeg),
            (640, 360, WebP),
        ];
        for (width, height, format) in refused {
            let failure = check_image(&encoded(width, height, format)).expect_err("refused");
            assert_eq!(
                (failure.code.as_str(), failure.retryable),
                (codes::INVALID_REQUEST, false)
            );
        }
        let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
        huge.resize(MAX_IMAGE_BYTES + 1, 0);
        let huge = JobImage {
            bytes: huge.into(),
            content_type: "image/png".into(),
        };
        assert!(check_image(&huge).is_err());
    }
}

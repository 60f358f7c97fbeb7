//! The `predictLongRunning` request body, as both Google APIs take it.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::provider::{codes, Job, ProviderFailure};

/// The `predictLongRunning` body; refuses what Veo would refuse, before sending anything.
pub(super) fn request_body(job: &Job, output_uri: Option<&str>) -> Result<Value, ProviderFailure> {
    let invalid =
        |message: String| ProviderFailure::new(codes::INVALID_REQUEST, message, false, false);
    let mut instance = json!({ "prompt": job.prompt });
    if let Some(image) = &job.image {
        if !matches!(image.content_type.as_str(), "image/jpeg" | "image/png") {
            return Err(invalid(format!(
                "Veo accepts JPEG or PNG start images, not {}",
                image.content_type
            )));
        }
        instance["image"] = json!({
            "bytesBase64Encoded": base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            "mimeType": image.content_type,
        });
    }
    let mut parameters = json!({
        "aspectRatio": job.aspect_ratio,
        "resolution": job.resolution,
        "durationSeconds": job.duration_seconds,
        "sampleCount": 1,
    });
    if let Some(negative) = job.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        parameters["negativePrompt"] = json!(negative);
    }
    if let Some(seed) = job.seed {
        let seed = u32::try_from(seed)
            .map_err(|_| invalid(format!("Veo seeds are 0 to {}, not {seed}", u32::MAX)))?;
        parameters["seed"] = json!(seed);
    }
    if let Some(uri) = output_uri {
        parameters["storageUri"] = json!(uri);
    }
    Ok(json!({ "instances": [instance], "parameters": parameters }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use framegate_domain::VideoId;

    use crate::provider::JobImage;

    use super::*;

    fn job() -> Job {
        Job {
            video_id: VideoId::from_uuid(uuid::Uuid::now_v7()),
            model: String::new(),
            prompt: "a fox".into(),
            negative_prompt: None,
            duration_seconds: 8,
            aspect_ratio: "16:9".into(),
            resolution: "1080p".into(),
            seed: None,
            image: None,
        }
    }

    #[test]
    fn the_request_body_has_the_documented_fields_and_types() {
        let job = Job {
            negative_prompt: Some("blur".into()),
            seed: Some(42),
            image: Some(JobImage {
                bytes: Bytes::from_static(b"\x89PNG"),
                content_type: "image/png".into(),
            }),
            ..job()
        };
        let body = request_body(&job, Some("gs://b/out/")).expect("body");
        assert_eq!(
            body,
            json!({
                "instances": [{"prompt": "a fox",
                    "image": {"bytesBase64Encoded": "iVBORw==", "mimeType": "image/png"}}],
                "parameters": {"aspectRatio": "16:9", "resolution": "1080p", "durationSeconds": 8,
                    "sampleCount": 1, "negativePrompt": "blur", "seed": 42,
                    "storageUri": "gs://b/out/"}
            })
        );
    }

    #[test]
    fn what_veo_would_refuse_is_refused_before_sending() {
        let webp = Job {
            image: Some(JobImage {
                bytes: Bytes::from_static(b"RIFF"),
                content_type: "image/webp".into(),
            }),
            ..job()
        };
        let big_seed = Job {
            seed: Some(u64::from(u32::MAX) + 1),
            ..job()
        };
        for job in [webp, big_seed] {
            let failure = request_body(&job, None).expect_err("refused");
            assert_eq!(failure.code, codes::INVALID_REQUEST);
            assert!(!failure.retryable && !failure.charged);
        }
    }
}

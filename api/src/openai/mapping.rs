//! OpenAI's request vocabulary in ours: `model` names a provider and model, `seconds` is the
//! duration, `size` (`WIDTHxHEIGHT`) an aspect ratio and a resolution; and back, for the
//! video object. Validation against the model's capabilities stays the catalog's (through
//! `video_requests::price`); here only the words are translated, and the fields its errors
//! name become OpenAI's parameters.

use framegate_domain::catalog::Catalog;
use framegate_domain::ProviderKind;

use crate::error::{ApiError, FieldError};

/// The model when a request names none: OpenAI's default.
pub const DEFAULT_MODEL: &str = "sora-2";
/// The size when a request names none: OpenAI's default (portrait 720p).
pub const DEFAULT_SIZE: &str = "720x1280";
/// The duration when a request names none, if the model offers it (else its shortest).
pub const DEFAULT_SECONDS: u32 = 4;

/// Sizes and what they mean here. OpenAI's four come first, so a video is shown by them when
/// one fits (its 1792x1024 and 1024x1792 stand for our 1080p); the others are the frame sizes
/// our models render, for shapes OpenAI has no name for.
const SIZES: &[(&str, &str, &str)] = &[
    ("720x1280", "9:16", "720p"),
    ("1280x720", "16:9", "720p"),
    ("1024x1792", "9:16", "1080p"),
    ("1792x1024", "16:9", "1080p"),
    ("1080x1920", "9:16", "1080p"),
    ("1920x1080", "16:9", "1080p"),
    ("480x854", "9:16", "480p"),
    ("854x480", "16:9", "480p"),
    ("2160x3840", "9:16", "4k"),
    ("3840x2160", "16:9", "4k"),
    ("480x480", "1:1", "480p"),
    ("720x720", "1:1", "720p"),
    ("1080x1080", "1:1", "1080p"),
    ("2160x2160", "1:1", "4k"),
];

/// The provider and model `model` names: a model of the catalog (`sora-2`,
/// `veo-3.1-generate-001`, `kling-v2-6`, `simulator-v1`, ...) or `provider/model`.
pub fn model(catalog: &Catalog, model: Option<&str>) -> Result<(ProviderKind, String), ApiError> {
    let name = model.unwrap_or(DEFAULT_MODEL);
    let unknown = || {
        let known: Vec<&str> = catalog.models.iter().map(|m| m.model.as_str()).collect();
        ApiError::field(
            "model",
            "unsupported_model",
            format!(
                "unknown model {name:?}; allowed: {}, or `provider/model`",
                known.join(", ")
            ),
        )
    };
    let found = match name.split_once('/') {
        Some((provider, model)) => {
            let provider: ProviderKind = provider.parse().map_err(|_| unknown())?;
            catalog.models_of(provider).find(|m| m.model == model)
        }
        None => catalog.models.iter().find(|m| m.model == name),
    };
    found
        .map(|m| (m.provider, m.model.clone()))
        .ok_or_else(unknown)
}

/// The duration `seconds` asks for (a whole number of seconds, as a string or a number);
/// without one, [`DEFAULT_SECONDS`] if the model offers it, else its shortest.
pub fn seconds(
    catalog: &Catalog,
    provider: ProviderKind,
    model: &str,
    seconds: Option<&str>,
) -> Result<u32, ApiError> {
    match seconds {
        Some(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                ApiError::field(
                    "seconds",
                    "invalid_seconds",
                    format!("{text:?} is not a whole number of seconds"),
                )
            }),
        None => {
            let durations = catalog
                .model(provider, Some(model))
                .map(|m| m.durations.clone())
                .unwrap_or_default();
            Ok(
                if durations.contains(&DEFAULT_SECONDS) || durations.is_empty() {
                    DEFAULT_SECONDS
                } else {
                    durations.iter().copied().min().unwrap_or(DEFAULT_SECONDS)
                },
            )
        }
    }
}

/// The aspect ratio and resolution `size` names (default [`DEFAULT_SIZE`]).
pub fn size(size: Option<&str>) -> Result<(&'static str, &'static str), ApiError> {
    let size = size.unwrap_or(DEFAULT_SIZE);
    SIZES
        .iter()
        .find(|(name, _, _)| *name == size)
        .map(|(_, aspect, resolution)| (*aspect, *resolution))
        .ok_or_else(|| {
            let known: Vec<&str> = SIZES.iter().map(|(name, _, _)| *name).collect();
            ApiError::field(
                "size",
                "unsupported_size",
                format!("unknown size {size:?}; allowed: {}", known.join(", ")),
            )
        })
}

/// How a video of `aspect_ratio` at `resolution` is shown as a size.
pub fn size_of(aspect_ratio: &str, resolution: &str) -> String {
    SIZES
        .iter()
        .find(|(_, aspect, res)| *aspect == aspect_ratio && *res == resolution)
        .map_or_else(
            || format!("{aspect_ratio}@{resolution}"),
            |(name, _, _)| (*name).to_owned(),
        )
}

/// A validation error of our request vocabulary in OpenAI's: the fields it names become the
/// parameters the caller sent (`duration_seconds` is `seconds`, the aspect ratio and
/// resolution are `size`, the provider is `model`, the image is `input_reference`).
pub fn in_openai_terms(error: ApiError) -> ApiError {
    let ApiError::Validation(errors) = error else {
        return error;
    };
    ApiError::Validation(
        errors
            .into_iter()
            .map(|e| {
                let param = match e.field.as_str() {
                    "duration_seconds" => "seconds",
                    "aspect_ratio" | "resolution" => "size",
                    "provider" | "model" => "model",
                    "image_id" => "input_reference",
                    other => other,
                };
                FieldError::new(param, &e.code, e.message)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_found_by_name_or_provider_and_name() {
        let catalog = Catalog::defaults();
        assert_eq!(
            model(&catalog, None).ok(),
            Some((ProviderKind::Sora, "sora-2".to_owned()))
        );
        assert_eq!(
            model(&catalog, Some("kling-v2-6")).ok(),
            Some((ProviderKind::Kling, "kling-v2-6".to_owned()))
        );
        assert_eq!(
            model(&catalog, Some("simulator/simulator-v1")).ok(),
            Some((ProviderKind::Simulator, "simulator-v1".to_owned()))
        );
        for bad in ["sora-3", "veo/sora-2", "nobody/sora-2", ""] {
            let error = model(&catalog, Some(bad)).expect_err(bad);
            let ApiError::Validation(errors) = error else {
                panic!("{bad}")
            };
            assert_eq!(
                (errors[0].field.as_str(), errors[0].code.as_str()),
                ("model", "unsupported_model")
            );
        }
    }

    #[test]
    fn sizes_map_both_ways_with_openais_names_first() {
        assert_eq!(size(None).ok(), Some(("9:16", "720p")));
        assert_eq!(size(Some("1792x1024")).ok(), Some(("16:9", "1080p")));
        assert_eq!(size(Some("1920x1080")).ok(), Some(("16:9", "1080p")));
        assert_eq!(size_of("16:9", "1080p"), "1792x1024");
        assert_eq!(size_of("1:1", "720p"), "720x720");
        for (name, aspect, resolution) in SIZES {
            assert_eq!(size(Some(name)).ok(), Some((*aspect, *resolution)));
        }
        assert!(size(Some("100x100")).is_err());
    }

    #[test]
    fn seconds_default_to_four_or_the_models_shortest() {
        let catalog = Catalog::defaults();
        assert_eq!(
            seconds(&catalog, ProviderKind::Sora, "sora-2", None).ok(),
            Some(4)
        );
        assert_eq!(
            seconds(&catalog, ProviderKind::Kling, "kling-v2-6", None).ok(),
            Some(5)
        );
        assert_eq!(
            seconds(&catalog, ProviderKind::Sora, "sora-2", Some("8")).ok(),
            Some(8)
        );
        for bad in ["0", "-4", "four", "4.5"] {
            assert!(
                seconds(&catalog, ProviderKind::Sora, "sora-2", Some(bad)).is_err(),
                "{bad}"
            );
        }
    }
}

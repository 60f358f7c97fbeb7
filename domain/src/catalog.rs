//! The provider catalog: which models exist, what each accepts, and what a second costs.
//!
//! Prices are integer credits per second of video (1 credit = US$0.01), taken from the
//! providers' published prices (docs: shared providers.md) and overridable from a JSON file,
//! so a quote is pure arithmetic over this table. A request is checked against the chosen
//! model's capabilities here, so an unsupported duration or size is refused with the allowed
//! values before anything is reserved or submitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::provider::ProviderKind;

/// One model of one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub provider: ProviderKind,
    pub model: String,
    /// The provider's default model when the request names none.
    #[serde(default)]
    pub default: bool,
    pub durations: Vec<u32>,
    pub aspect_ratios: Vec<String>,
    pub resolutions: Vec<String>,
    pub image_input: bool,
    pub credits_per_second: i64,
    /// Per-resolution prices that differ from `credits_per_second`.
    #[serde(default)]
    pub resolution_prices: BTreeMap<String, i64>,
    /// Resolutions only available at the longest duration (Veo: 1080p and 4k at 8 s).
    #[serde(default)]
    pub longest_duration_only: Vec<String>,
}

/// What the catalog says about a provider as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub provider: ProviderKind,
    pub name: String,
    /// The upstream service's state as we know it (e.g. shut down by its vendor).
    pub upstream_status: String,
    /// Who pays for a job cancelled after the provider accepted it, when the provider
    /// cannot stop it (default: the user, since the provider bills it).
    #[serde(default)]
    pub cancel_after_acceptance: CancelPolicy,
}

/// What a cancellation after acceptance costs the user when the provider cannot stop the
/// job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelPolicy {
    /// The reservation is captured: the provider bills the render, so does the platform.
    #[default]
    Charged,
    /// The reservation is released: the operator absorbs the provider's bill.
    Free,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub providers: Vec<ProviderInfo>,
    pub models: Vec<ModelSpec>,
}

/// What a quote needs to know about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest<'a> {
    pub provider: ProviderKind,
    pub model: Option<&'a str>,
    pub duration_seconds: u32,
    pub aspect_ratio: &'a str,
    pub resolution: &'a str,
    pub with_image: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    pub provider: ProviderKind,
    pub model: String,
    pub credits_per_second: i64,
    pub cost: Credits,
}

/// Why a request does not fit a model; each names the request field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("{} has no model {model:?}; allowed: {}",
        provider.map_or("no enabled provider".to_owned(), |p| p.to_string()), allowed.join(", "))]
    UnknownModel {
        /// `None`: no enabled provider has it (provider `auto`).
        provider: Option<ProviderKind>,
        model: String,
        allowed: Vec<String>,
    },
    #[error("{model} supports durations of {} seconds", join(allowed))]
    UnsupportedDuration { model: String, allowed: Vec<u32> },
    #[error("{model} supports aspect ratios {}", allowed.join(", "))]
    UnsupportedAspectRatio { model: String, allowed: Vec<String> },
    #[error("{model} supports resolutions {}", allowed.join(", "))]
    UnsupportedResolution { model: String, allowed: Vec<String> },
    #[error("{model} only renders {resolution} at {duration} seconds")]
    ResolutionNeedsLongestDuration {
        model: String,
        resolution: String,
        duration: u32,
    },
    #[error("{model} does not take an input image")]
    ImageNotSupported { model: String },
}

fn join(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl QuoteError {
    pub fn code(&self) -> &'static str {
        match self {
            QuoteError::UnknownModel { .. } => "unsupported_model",
            QuoteError::UnsupportedDuration { .. } => "unsupported_duration",
            QuoteError::UnsupportedAspectRatio { .. } => "unsupported_aspect_ratio",
            QuoteError::UnsupportedResolution { .. }
            | QuoteError::ResolutionNeedsLongestDuration { .. } => "unsupported_resolution",
            QuoteError::ImageNotSupported { .. } => "image_not_supported",
        }
    }

    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            QuoteError::UnknownModel { .. } => "model",
            QuoteError::UnsupportedDuration { .. } => "duration_seconds",
            QuoteError::UnsupportedAspectRatio { .. } => "aspect_ratio",
            QuoteError::UnsupportedResolution { .. }
            | QuoteError::ResolutionNeedsLongestDuration { .. } => "resolution",
            QuoteError::ImageNotSupported { .. } => "image_id",
        }
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn model(
    provider: ProviderKind,
    name: &str,
    default: bool,
    durations: Vec<u32>,
    aspect_ratios: &[&str],
    resolutions: &[&str],
    credits_per_second: i64,
) -> ModelSpec {
    ModelSpec {
        provider,
        model: name.to_owned(),
        default,
        durations,
        aspect_ratios: strings(aspect_ratios),
        resolutions: strings(resolutions),
        image_input: true,
        credits_per_second,
        resolution_prices: BTreeMap::new(),
        longest_duration_only: Vec::new(),
    }
}

impl Catalog {
    /// The documented defaults (see the README's provider table).
    pub fn defaults() -> Catalog {
        use ProviderKind::{Kling, Simulator, Sora, Veo};
        let veo_res = ["720p", "1080p", "4k"];
        let veo = |name: &str, default: bool, price: i64| ModelSpec {
            longest_duration_only: strings(&["1080p", "4k"]),
            ..model(
                Veo,
                name,
                default,
                vec![4, 6, 8],
                &["16:9", "9:16"],
                &veo_res,
                price,
            )
        };
        let mut sora_pro = model(
            Sora,
            "sora-2-pro",
            false,
            vec![4, 8, 12],
            &["16:9", "9:16"],
            &["720p", "1080p"],
            30,
        );
        sora_pro.resolution_prices.insert("1080p".to_owned(), 50);
        Catalog {
            providers: vec![
                ProviderInfo { provider: Veo, name: "Google Veo".into(), upstream_status: "Gemini API and Vertex AI; Veo 3.0 retired on Vertex 2026-06-30, model ids are configuration".into(), cancel_after_acceptance: CancelPolicy::Charged },
                ProviderInfo { provider: Sora, name: "OpenAI Sora 2 (Videos API format)".into(), upstream_status: "OpenAI shut down its own Videos API on 2026-09-24; the adapter serves compatible endpoints at a configurable base URL".into(), cancel_after_acceptance: CancelPolicy::Charged },
                ProviderInfo { provider: Kling, name: "Kuaishou Kling".into(), upstream_status: "active".into(), cancel_after_acceptance: CancelPolicy::Charged },
                ProviderInfo { provider: Simulator, name: "Local simulator (ffmpeg)".into(), upstream_status: "local".into(), cancel_after_acceptance: CancelPolicy::Charged },
            ],
            models: vec![
                veo("veo-3.1-generate-001", true, 40),
                veo("veo-3.1-fast-generate-001", false, 15),
                veo("veo-3.1-lite-generate-001", false, 5),
                model(Sora, "sora-2", true, vec![4, 8, 12], &["16:9", "9:16"], &["720p"], 10),
                sora_pro,
                model(Kling, "kling-v2-6", true, vec![5, 10], &["16:9", "9:16", "1:1"], &["720p", "1080p"], 7),
                model(Simulator, "simulator-v1", true, (1..=20).collect(), &["16:9", "9:16", "1:1"], &["480p", "720p", "1080p"], 1),
            ],
        }
    }

    pub fn from_json(json: &str) -> Result<Catalog, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn models_of(&self, provider: ProviderKind) -> impl Iterator<Item = &ModelSpec> {
        self.models.iter().filter(move |m| m.provider == provider)
    }

    /// What cancelling an accepted job that `provider` cannot stop costs the user.
    pub fn cancel_policy(&self, provider: ProviderKind) -> CancelPolicy {
        self.provider(provider)
            .map_or(CancelPolicy::default(), |info| info.cancel_after_acceptance)
    }

    pub fn provider(&self, provider: ProviderKind) -> Option<&ProviderInfo> {
        self.providers.iter().find(|p| p.provider == provider)
    }

    /// The model a request names, or the provider's default.
    pub fn model(
        &self,
        provider: ProviderKind,
        name: Option<&str>,
    ) -> Result<&ModelSpec, QuoteError> {
        let mut models = self.models_of(provider).peekable();
        let found = match name {
            Some(name) => self.models_of(provider).find(|m| m.model == name),
            None => self
                .models_of(provider)
                .find(|m| m.default)
                .or_else(|| models.peek().copied()),
        };
        found.ok_or_else(|| QuoteError::UnknownModel {
            provider: Some(provider),
            model: name.unwrap_or("(default)").to_owned(),
            allowed: self.models_of(provider).map(|m| m.model.clone()).collect(),
        })
    }

    /// Checks the request against the model's capabilities and prices it.
    pub fn quote(&self, request: &QuoteRequest<'_>) -> Result<Quote, QuoteError> {
        let spec = self.model(request.provider, request.model)?;
        let name = || spec.model.clone();
        if !spec.durations.contains(&request.duration_seconds) {
            return Err(QuoteError::UnsupportedDuration {
                model: name(),
                allowed: spec.durations.clone(),
            });
        }
        if !spec.aspect_ratios.iter().any(|a| a == request.aspect_ratio) {
            return Err(QuoteError::UnsupportedAspectRatio {
                model: name(),
                allowed: spec.aspect_ratios.clone(),
            });
        }
        if !spec.resolutions.iter().any(|r| r == request.resolution) {
            return Err(QuoteError::UnsupportedResolution {
                model: name(),
                allowed: spec.resolutions.clone(),
            });
        }
        let longest = spec.durations.iter().copied().max().unwrap_or_default();
        if spec
            .longest_duration_only
            .iter()
            .any(|r| r == request.resolution)
            && request.duration_seconds != longest
        {
            return Err(QuoteError::ResolutionNeedsLongestDuration {
                model: name(),
                resolution: request.resolution.to_owned(),
                duration: longest,
            });
        }
        if request.with_image && !spec.image_input {
            return Err(QuoteError::ImageNotSupported { model: name() });
        }
        let per_second = spec
            .resolution_prices
            .get(request.resolution)
            .copied()
            .unwrap_or(spec.credits_per_second);
        Ok(Quote {
            provider: spec.provider,
            model: name(),
            credits_per_second: per_second,
            cost: Credits::new(per_second * i64::from(request.duration_seconds)),
        })
    }
}

//! What a video request fixes at request time: the spec stored whole in `VideoRequested`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::VideoError;
use crate::credits::Credits;
use crate::ids::{ImageId, UserId};
use crate::provider::ProviderPreference;

pub const MAX_PROMPT_CHARS: usize = 4000;

/// Everything fixed at request time. Stored whole in `VideoRequested` so the event alone
/// says what was asked for and what it was estimated to cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VideoSpec {
    pub owner: UserId,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub provider: ProviderPreference,
    pub model: Option<String>,
    pub duration_seconds: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    pub image_id: Option<ImageId>,
    pub seed: Option<u64>,
    pub estimated_cost: Credits,
    /// Whether the video has a soundtrack (`VideoRequested` 2.0; 1.0 events upcast to false).
    pub generate_audio: bool,
    /// The caller's own reference for the request, if it gave one.
    pub external_id: Option<String>,
    /// Where this video's webhook events also go (the request's `webhook_url`), signed with
    /// the owner's default secret. Absent in events recorded before per-request webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<VideoWebhook>,
}

/// A per-request webhook: a URL (checked like an endpoint's, `webhook::validate_url`) and the
/// video event types it receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VideoWebhook {
    pub url: String,
    /// Event types as in a delivery's `type` (`video.completed`, ...).
    pub events: Vec<String>,
}

impl VideoSpec {
    pub(super) fn validate(&self) -> Result<(), VideoError> {
        if self.prompt.trim().is_empty() {
            return Err(VideoError::EmptyPrompt);
        }
        // Providers count characters, and a byte limit would punish non-Latin scripts.
        if self.prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(VideoError::PromptTooLong);
        }
        if self.duration_seconds == 0 {
            return Err(VideoError::InvalidDuration);
        }
        if self.estimated_cost.is_negative() {
            return Err(VideoError::NegativeCost);
        }
        Ok(())
    }
}

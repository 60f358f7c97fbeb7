//! A video as clients see it: the body of `GET /v1/videos/{id}` and the `data` of every
//! `video.*` webhook, built here so the API and the webhook sender show one and the same
//! object. The public status, our messages for failures (never the provider's text), and
//! signed download links once it is completed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use framegate_commands::blobs::{video_keys, BlobError, Blobs, SignedUrl};
use framegate_domain::{public_message, PublicStatus, VideoId, VideoStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::read_models::VideoRow;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoFailure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub charged: bool,
}

/// How a cancellation ended: `charged` when the provider had accepted the job and could not
/// stop it, so it bills the job and so does the platform (the output is discarded).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoCancellation {
    pub charged: bool,
}

/// A download link that works without authentication until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DownloadLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

impl From<SignedUrl> for DownloadLink {
    fn from(signed: SignedUrl) -> Self {
        DownloadLink {
            url: signed.url,
            expires_at: signed.expires_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VideoResponse {
    pub id: Uuid,
    /// queued | submitted | running | completed | failed | cancelled
    pub status: String,
    pub progress: i16,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub duration_seconds: i32,
    pub aspect_ratio: String,
    pub resolution: String,
    /// Asked for with a soundtrack (`generate_audio` of the request).
    pub generate_audio: bool,
    pub image_id: Option<Uuid>,
    pub seed: Option<i64>,
    pub external_id: Option<String>,
    pub estimated_cost: i64,
    pub final_cost: Option<i64>,
    pub error: Option<VideoFailure>,
    /// Set once the video is cancelled.
    pub cancellation: Option<VideoCancellation>,
    /// Every submission attempt: provider, model, start time and, if it was not accepted,
    /// why. A video runs at one provider at a time; the last attempt is the current one.
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<serde_json::Value>,
    /// When a video waiting after a failed attempt will be tried again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The MP4, once completed.
    pub content: Option<DownloadLink>,
    /// A full-size JPEG frame, once completed.
    pub poster: Option<DownloadLink>,
    /// A small JPEG for listings, once completed.
    pub thumbnail: Option<DownloadLink>,
}

/// The public status: internal steps collapse into the documented six.
pub fn public_status(status: &str) -> &'static str {
    status
        .parse::<VideoStatus>()
        .map_or(PublicStatus::Running, VideoStatus::public)
        .as_str()
}

impl From<VideoRow> for VideoResponse {
    fn from(row: VideoRow) -> Self {
        // Ours, never the provider's text (the admin view and the audit log keep that).
        let error = row.error_code.clone().map(|code| VideoFailure {
            message: public_message(&code).to_owned(),
            code,
            retryable: row.error_retryable.unwrap_or(false),
            charged: row.error_charged.unwrap_or(false),
        });
        Self {
            id: row.id,
            status: public_status(&row.status).to_owned(),
            progress: row.progress,
            provider: row.provider,
            model: row.model,
            prompt: row.prompt,
            negative_prompt: row.negative_prompt,
            duration_seconds: row.duration_seconds,
            aspect_ratio: row.aspect_ratio,
            resolution: row.resolution,
            generate_audio: row.generate_audio,
            image_id: row.image_id,
            seed: row.seed,
            external_id: row.external_id,
            estimated_cost: row.estimated_cost,
            final_cost: row.final_cost,
            error,
            cancellation: row
                .cancel_charged
                .map(|charged| VideoCancellation { charged }),
            attempts: row.attempts.0.iter().map(public_attempt).collect(),
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
            content: None,
            poster: None,
            thumbnail: None,
        }
    }
}

/// An attempt as users see it: a failed one's message is ours, by its code.
fn public_attempt(attempt: &serde_json::Value) -> serde_json::Value {
    let mut attempt = attempt.clone();
    if let Some(error) = attempt.get_mut("error").and_then(|e| e.as_object_mut()) {
        let code = error
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        let message = public_message(code);
        error.insert("message".to_owned(), serde_json::Value::from(message));
    }
    attempt
}

/// Which of a finished video's files a link is to.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    #[default]
    Video,
    Poster,
    Thumbnail,
}

/// A signed link to one file of the completed video `id`, valid for `ttl`.
pub async fn link(
    blobs: &Blobs,
    id: Uuid,
    variant: Variant,
    ttl: Duration,
) -> Result<DownloadLink, BlobError> {
    let keys = video_keys(VideoId::from_uuid(id))?;
    let key = match variant {
        Variant::Video => &keys.video,
        Variant::Poster => &keys.poster,
        Variant::Thumbnail => &keys.thumbnail,
    };
    Ok(blobs.signed_url(key, ttl).await?.into())
}

impl VideoResponse {
    /// Adds fresh download links (valid for `ttl` from now) if the video is completed.
    pub async fn with_links(mut self, blobs: &Blobs, ttl: Duration) -> Result<Self, BlobError> {
        if self.status != PublicStatus::Completed.as_str() {
            return Ok(self);
        }
        self.content = Some(link(blobs, self.id, Variant::Video, ttl).await?);
        self.poster = Some(link(blobs, self.id, Variant::Poster, ttl).await?);
        self.thumbnail = Some(link(blobs, self.id, Variant::Thumbnail, ttl).await?);
        Ok(self)
    }
}

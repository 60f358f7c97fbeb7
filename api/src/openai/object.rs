//! The objects of docs/specs/openai-videos.openapi.json: the video (`VideoResource`), a page
//! of them (`VideoListResource`) and a deletion (`DeletedVideoResource`), built from the
//! `videos` read model. Statuses map one to one onto OpenAI's four: `queued` and `submitted`
//! (waiting, here or at the provider) are `queued`, `running` is `in_progress`, a cancelled
//! video is `failed` with the error code `cancelled`.

use framegate_domain::{public_message, PublicStatus, VideoStatus};
use framegate_projections::read_models::VideoRow;
use serde::Serialize;
use uuid::Uuid;

use super::mapping::size_of;

/// Video ids are ours with OpenAI's `video_` in front; either form is accepted.
pub const ID_PREFIX: &str = "video_";

pub fn video_id(id: Uuid) -> String {
    format!("{ID_PREFIX}{id}")
}

/// The video a path or cursor names; `None` for anything that is not one of our ids.
pub fn parse_video_id(text: &str) -> Option<Uuid> {
    text.strip_prefix(ID_PREFIX).unwrap_or(text).parse().ok()
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Video {
    pub id: String,
    pub object: &'static str,
    pub model: String,
    /// queued | in_progress | completed | failed
    pub status: &'static str,
    pub progress: i64,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    /// Our files do not expire (they are kept until the video is deleted).
    pub expires_at: Option<i64>,
    pub prompt: Option<String>,
    pub size: String,
    pub seconds: String,
    pub remixed_from_video_id: Option<String>,
    pub error: Option<VideoError>,
}

/// OpenAI's status for one of ours.
pub fn status(status: &str) -> &'static str {
    let public = status
        .parse::<VideoStatus>()
        .map_or(PublicStatus::Running, VideoStatus::public);
    match public {
        PublicStatus::Queued | PublicStatus::Submitted => "queued",
        PublicStatus::Running => "in_progress",
        PublicStatus::Completed => "completed",
        PublicStatus::Failed | PublicStatus::Cancelled => "failed",
    }
}

impl From<VideoRow> for Video {
    fn from(row: VideoRow) -> Self {
        let status = status(&row.status);
        let error = match (status, row.error_code) {
            // Ours, never the provider's text.
            (_, Some(code)) => Some(VideoError {
                message: public_message(&code).to_owned(),
                code,
            }),
            ("failed", None) => Some(VideoError {
                code: "cancelled".to_owned(),
                message: "the video was cancelled".to_owned(),
            }),
            _ => None,
        };
        let progress = if status == "completed" {
            100
        } else {
            i64::from(row.progress)
        };
        Video {
            id: video_id(row.id),
            object: "video",
            model: row.model.unwrap_or_default(),
            status,
            progress,
            created_at: row.created_at.timestamp(),
            completed_at: row.completed_at.map(|at| at.timestamp()),
            expires_at: None,
            prompt: Some(row.prompt),
            size: size_of(&row.aspect_ratio, &row.resolution),
            seconds: row.duration_seconds.to_string(),
            remixed_from_video_id: None,
            error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VideoList {
    pub object: &'static str,
    pub data: Vec<Video>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl VideoList {
    pub fn new(data: Vec<Video>, has_more: bool) -> Self {
        VideoList {
            object: "list",
            first_id: data.first().map(|v| v.id.clone()),
            last_id: data.last().map(|v| v.id.clone()),
            data,
            has_more,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeletedVideo {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

impl DeletedVideo {
    pub fn new(id: Uuid) -> Self {
        DeletedVideo {
            id: video_id(id),
            object: "video.deleted",
            deleted: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_onto_one_of_openais_four() {
        let expected = [
            (VideoStatus::Queued, "queued"),
            (VideoStatus::Submitting, "queued"),
            (VideoStatus::Submitted, "queued"),
            (VideoStatus::Running, "in_progress"),
            (VideoStatus::Generated, "in_progress"),
            (VideoStatus::Stored, "in_progress"),
            (VideoStatus::CancelRequested, "in_progress"),
            (VideoStatus::Completed, "completed"),
            (VideoStatus::Failed, "failed"),
            (VideoStatus::Cancelled, "failed"),
        ];
        assert_eq!(expected.len(), VideoStatus::ALL.len());
        for (ours, theirs) in expected {
            assert_eq!(status(ours.as_str()), theirs, "{ours}");
        }
    }

    #[test]
    fn ids_read_with_or_without_the_prefix() {
        let id = Uuid::now_v7();
        assert_eq!(parse_video_id(&video_id(id)), Some(id));
        assert_eq!(parse_video_id(&id.to_string()), Some(id));
        assert_eq!(parse_video_id("video_123"), None);
    }
}

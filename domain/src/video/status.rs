//! The one list of video statuses: the internal steps a video goes through, which of them
//! are at a provider or final, and the six the API documents. Code and SQL that need a
//! status name take it from here.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoStatus {
    Queued,
    Submitting,
    Submitted,
    Running,
    Generated,
    Stored,
    Completed,
    Failed,
    CancelRequested,
    Cancelled,
}

impl VideoStatus {
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            VideoStatus::Completed | VideoStatus::Failed | VideoStatus::Cancelled
        )
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            VideoStatus::Queued => "queued",
            VideoStatus::Submitting => "submitting",
            VideoStatus::Submitted => "submitted",
            VideoStatus::Running => "running",
            VideoStatus::Generated => "generated",
            VideoStatus::Stored => "stored",
            VideoStatus::Completed => "completed",
            VideoStatus::Failed => "failed",
            VideoStatus::CancelRequested => "cancel_requested",
            VideoStatus::Cancelled => "cancelled",
        }
    }
}

impl VideoStatus {
    /// Every status, in the order a video passes through them.
    pub const ALL: [VideoStatus; 10] = [
        VideoStatus::Queued,
        VideoStatus::Submitting,
        VideoStatus::Submitted,
        VideoStatus::Running,
        VideoStatus::Generated,
        VideoStatus::Stored,
        VideoStatus::Completed,
        VideoStatus::Failed,
        VideoStatus::CancelRequested,
        VideoStatus::Cancelled,
    ];

    /// At a provider or on the way there: what the poller follows and what counts against a
    /// provider's concurrency limit.
    pub const AT_PROVIDER: [VideoStatus; 4] = [
        VideoStatus::Submitting,
        VideoStatus::Submitted,
        VideoStatus::Running,
        VideoStatus::CancelRequested,
    ];

    /// The documented status clients see: internal steps collapse into six.
    pub const fn public(self) -> PublicStatus {
        match self {
            VideoStatus::Queued => PublicStatus::Queued,
            VideoStatus::Submitting | VideoStatus::Submitted => PublicStatus::Submitted,
            VideoStatus::Running
            | VideoStatus::Generated
            | VideoStatus::Stored
            | VideoStatus::CancelRequested => PublicStatus::Running,
            VideoStatus::Completed => PublicStatus::Completed,
            VideoStatus::Failed => PublicStatus::Failed,
            VideoStatus::Cancelled => PublicStatus::Cancelled,
        }
    }

    /// The names of `statuses`, e.g. to bind as a SQL array.
    pub fn names(statuses: &[VideoStatus]) -> Vec<&'static str> {
        statuses.iter().map(|status| status.as_str()).collect()
    }
}

impl std::str::FromStr for VideoStatus {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        VideoStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or_else(|| format!("unknown video status {name:?}"))
    }
}

/// The status of a video as the API documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicStatus {
    Queued,
    Submitted,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl PublicStatus {
    pub const ALL: [PublicStatus; 6] = [
        PublicStatus::Queued,
        PublicStatus::Submitted,
        PublicStatus::Running,
        PublicStatus::Completed,
        PublicStatus::Failed,
        PublicStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PublicStatus::Queued => "queued",
            PublicStatus::Submitted => "submitted",
            PublicStatus::Running => "running",
            PublicStatus::Completed => "completed",
            PublicStatus::Failed => "failed",
            PublicStatus::Cancelled => "cancelled",
        }
    }

    /// The internal statuses shown as this one.
    pub fn internal(self) -> Vec<VideoStatus> {
        VideoStatus::ALL
            .into_iter()
            .filter(|status| status.public() == self)
            .collect()
    }

    /// `name` if it is a public status.
    pub fn parse(name: &str) -> Option<Self> {
        PublicStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

impl fmt::Display for VideoStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_the_serialized_form() {
        for status in VideoStatus::ALL {
            assert_eq!(status.as_str().parse::<VideoStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::json!(status.as_str())
            );
        }
        assert!("done".parse::<VideoStatus>().is_err());
    }

    #[test]
    fn every_internal_status_shows_as_exactly_one_public_one() {
        let mut covered: Vec<VideoStatus> = PublicStatus::ALL
            .into_iter()
            .flat_map(PublicStatus::internal)
            .collect();
        covered.sort_by_key(|s| s.as_str());
        let mut all = VideoStatus::ALL.to_vec();
        all.sort_by_key(|s| s.as_str());
        assert_eq!(covered, all);
        for status in PublicStatus::ALL {
            assert_eq!(PublicStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            PublicStatus::Running.internal(),
            [
                VideoStatus::Running,
                VideoStatus::Generated,
                VideoStatus::Stored,
                VideoStatus::CancelRequested
            ]
        );
        assert!(VideoStatus::AT_PROVIDER.iter().all(|s| !s.is_terminal()));
    }
}

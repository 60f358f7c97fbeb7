//! Finishing a job the provider says succeeded: download, validate, store with a poster
//! and thumbnail, record completion.
//!
//! The status is checked before the download, but the video can end meanwhile (cancelled,
//! failed past its deadline) and even be deleted, its files cleaned up by
//! `process.video_cleanup` before ours land. So when `Deliver` is refused because the video
//! ended otherwise, the files just written are removed again: nothing else would.

use framegate_commands::blobs::{video_keys, VideoKeys};
use framegate_commands::{CommandError, CommandMetadata};
use framegate_domain::{VideoCommand, VideoError, VideoId, VideoStatus};
use framegate_projections::read_models::videos::{self, VideoRow};
use framegate_projections::subscription::BoxError;
use tracing::{info, warn, Instrument as _};

use super::{fail_command, Poller};
use crate::media::{extract_stills, validate_video, Expectation, Stills};
use crate::provider::{ProviderFailure, VideoProvider};

/// Where the poster is taken: early, past any fade-in.
pub const POSTER_AT_SECONDS: f64 = 0.5;
/// The thumbnail's longest side, in pixels.
pub const THUMBNAIL_MAX_SIDE: u32 = 320;

impl Poller {
    /// Downloads, validates and stores the result, then records generation, storage and
    /// completion in one append.
    #[tracing::instrument(name = "poller.finish", skip_all, fields(video = %row.id))]
    pub(super) async fn finish(
        &self,
        row: &VideoRow,
        provider: &dyn VideoProvider,
        job_id: &str,
        meta: &CommandMetadata,
    ) -> Result<(), BoxError> {
        let id = row.id.to_string();
        // The row is written inline with every event of the video, so it is as current as
        // the stream (a command that raced it is refused by the aggregate).
        match row.status.parse::<VideoStatus>() {
            Ok(status) if status.is_terminal() => return Ok(()),
            // Stored without completion: written before `Deliver` made them one append.
            Ok(VideoStatus::Stored) => return self.complete(row, meta).await,
            _ => {}
        }
        let dir = tempfile::tempdir()?;
        let video_path = dir.path().join("video.mp4");
        let fetched = provider
            .fetch(job_id, &video_path)
            .instrument(super::provider_span("provider.fetch", provider.kind()))
            .await;
        if let Err(failure) = fetched {
            if !failure.retryable {
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), meta)
                    .await?;
            }
            return Ok(());
        }
        let expectation = Expectation::duration(row.duration_seconds as u32, 1_000);
        let report = match validate_video(&self.tools, &video_path, &expectation).await {
            Ok(report) => report,
            Err(error) => {
                let failure =
                    ProviderFailure::new("invalid_output", error.to_string(), true, false);
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), meta)
                    .await?;
                return Ok(());
            }
        };
        let keys = video_keys(VideoId::from_uuid(row.id))?;
        let (poster, thumbnail) = (dir.path().join("poster.jpg"), dir.path().join("thumb.jpg"));
        let stills = Stills {
            poster_at_seconds: POSTER_AT_SECONDS,
            poster_jpeg: &poster,
            thumbnail_max_side: THUMBNAIL_MAX_SIDE,
            thumbnail_jpeg: &thumbnail,
        };
        // The upload of the video overlaps the stills; the two stills go up together.
        tokio::try_join!(
            async {
                self.blobs
                    .put_file(&keys.video, &video_path, "video/mp4")
                    .await
                    .map_err(BoxError::from)
            },
            async {
                extract_stills(&self.tools, &video_path, &report, &stills).await?;
                tokio::try_join!(
                    self.blobs.put_file(&keys.poster, &poster, "image/jpeg"),
                    self.blobs
                        .put_file(&keys.thumbnail, &thumbnail, "image/jpeg"),
                )?;
                Ok::<_, BoxError>(())
            },
        )?;
        // Generated, stored and completed: one append, one transaction.
        let deliver = VideoCommand::Deliver {
            blob_key: keys.video.to_string(),
            bytes: report.bytes,
            sha256: report.sha256.clone(),
            duration_ms: report.duration_ms,
            width: report.width,
            height: report.height,
            final_cost: framegate_domain::Credits::new(row.estimated_cost),
        };
        match self.store.videos().execute(&id, deliver, meta).await {
            Ok(_) => {}
            Err(CommandError::Domain(VideoError::AlreadyTerminal { status })) => {
                return self.discard_late_upload(row, status, &keys).await;
            }
            Err(error) => return Err(error.into()),
        }
        info!(video = %row.id, bytes = report.bytes, "video completed");
        Ok(())
    }

    /// Removes the files of a delivery the video refused because it had ended meanwhile,
    /// unless they are a completed video's own (another delivery won the race: same keys)
    /// that is still there.
    async fn discard_late_upload(
        &self,
        row: &VideoRow,
        status: VideoStatus,
        keys: &VideoKeys,
    ) -> Result<(), BoxError> {
        let deleted = videos::get(&self.pool, VideoId::from_uuid(row.id))
            .await?
            .is_none_or(|current| current.deleted_at.is_some());
        if status == VideoStatus::Completed && !deleted {
            info!(video = %row.id, "video already delivered; its files stay");
            return Ok(());
        }
        for key in [&keys.video, &keys.poster, &keys.thumbnail] {
            self.blobs.delete(key).await?;
        }
        warn!(video = %row.id, %status, deleted, "video ended during delivery; its files were removed");
        Ok(())
    }

    /// Records completion of a stored video at its estimated cost.
    async fn complete(&self, row: &VideoRow, meta: &CommandMetadata) -> Result<(), BoxError> {
        let complete = VideoCommand::Complete {
            final_cost: framegate_domain::Credits::new(row.estimated_cost),
        };
        self.store
            .videos()
            .execute(&row.id.to_string(), complete, meta)
            .await?;
        info!(video = %row.id, "video completed");
        Ok(())
    }
}

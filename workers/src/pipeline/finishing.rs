//! Finishing a job the provider says succeeded: download, validate, store with a poster
//! and thumbnail, record completion.

use framegate_commands::blobs::video_keys;
use framegate_commands::CommandMetadata;
use framegate_domain::{VideoCommand, VideoId, VideoStatus};
use framegate_projections::read_models::videos::VideoRow;
use framegate_projections::subscription::BoxError;
use tracing::info;

use super::{fail_command, Poller};
use crate::media::{extract_poster, make_thumbnail, validate_video, Expectation};
use crate::provider::{ProviderFailure, VideoProvider};

impl Poller {
    /// Downloads, validates and stores the result, then records generation, storage and
    /// completion in one append.
    pub(super) async fn finish(
        &self,
        row: &VideoRow,
        provider: &dyn VideoProvider,
        job_id: &str,
        meta: &CommandMetadata,
    ) -> Result<(), BoxError> {
        let id = row.id.to_string();
        // The read model may lag: the aggregate says whether this was already done.
        let status = self.store.videos().load(&id).await?.status();
        match status {
            Some(status) if status.is_terminal() => return Ok(()),
            Some(VideoStatus::Stored) => return self.complete(row, meta).await,
            _ => {}
        }
        let dir = tempfile::tempdir()?;
        let video_path = dir.path().join("video.mp4");
        if let Err(failure) = provider.fetch(job_id, &video_path).await {
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
        self.blobs
            .put_file(&keys.video, &video_path, "video/mp4")
            .await?;
        let poster = dir.path().join("poster.jpg");
        extract_poster(&self.tools, &video_path, 0.5, &poster).await?;
        self.blobs
            .put_file(&keys.poster, &poster, "image/jpeg")
            .await?;
        let thumbnail = dir.path().join("thumbnail.jpg");
        make_thumbnail(&self.tools, &video_path, 320, &thumbnail).await?;
        self.blobs
            .put_file(&keys.thumbnail, &thumbnail, "image/jpeg")
            .await?;
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
        self.store.videos().execute(&id, deliver, meta).await?;
        info!(video = %row.id, bytes = report.bytes, "video completed");
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

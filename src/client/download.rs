//! Downloads a completed video's file: `GET /v1/videos/{id}/content` answers 302 to a signed,
//! expiring link (our blob route or a presigned S3 URL), which is fetched without the
//! caller's credentials and written to a temporary file beside the target, renamed into place
//! once complete: an interrupted download leaves no half a video under the asked name.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::LOCATION;

use super::api::{check, Api};
use super::error::ClientError;
use super::output::Output;

/// Writes video `id`'s `variant` (`video`, `poster`, `thumbnail`) to `target`; returns the
/// bytes written.
pub async fn fetch(
    api: &mut Api,
    id: &str,
    variant: &str,
    target: &Path,
    output: Output,
) -> Result<u64, ClientError> {
    let url = api.url(&format!("/v1/videos/{id}/content?variant={variant}"));
    let redirect = api.send(|http| http.get(&url)).await?;
    let location = redirect
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| ClientError::Network("the content answer has no Location".to_owned()))?;
    // A relative link is the API's own blob route.
    let link = reqwest::Url::parse(&url)
        .and_then(|base| base.join(location))
        .map_err(|e| ClientError::Network(format!("the download link is not a URL: {e}")))?;
    let mut response = api
        .http()
        .get(link)
        .send()
        .await
        .map_err(|e| ClientError::network(&e))?;
    response = check(response).await?;
    let bar = byte_bar(output, response.content_length());
    let partial = partial_path(target);
    let written = async {
        let mut file = std::fs::File::create(&partial)
            .map_err(|e| ClientError::local(partial.display(), e))?;
        let mut total = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::network(&e))?
        {
            file.write_all(&chunk)
                .map_err(|e| ClientError::local(partial.display(), e))?;
            total += chunk.len() as u64;
            if let Some(bar) = &bar {
                bar.set_position(total);
            }
        }
        file.sync_all()
            .map_err(|e| ClientError::local(partial.display(), e))?;
        std::fs::rename(&partial, target).map_err(|e| ClientError::local(target.display(), e))?;
        Ok(total)
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// `dir/.name.part` for `dir/name`.
fn partial_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".to_owned());
    target.with_file_name(format!(".{name}.part"))
}

fn byte_bar(output: Output, length: Option<u64>) -> Option<ProgressBar> {
    if !output.interactive() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("  downloading [{bar:30}] {bytes}/{total_bytes}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

//! Result downloads: a URL (Gemini's file download), a Cloud Storage object (Vertex with an
//! output bucket) or inline base64 (Vertex without one), streamed to the destination file.

use std::path::Path;

use base64::Engine as _;
use reqwest::header::LOCATION;
use reqwest::{Response, Url};
use tokio::io::AsyncWriteExt as _;

use crate::provider::{codes, ProviderFailure};
use crate::providers::http;

use super::operation::VideoSource;
use super::{Call, Veo, VeoApi, PROVIDER};

const MAX_REDIRECTS: usize = 5;
/// Far above an 8 s 4k MP4; a bound on what an upstream can make us write to disk.
const MAX_VIDEO_BYTES: u64 = 1 << 30;

impl Veo {
    /// Writes the finished video to `destination`.
    pub(super) async fn download(
        &self,
        source: VideoSource,
        destination: &Path,
    ) -> Result<(), ProviderFailure> {
        let url = match (source, &self.config.api) {
            (VideoSource::Inline(data), _) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|error| {
                        ProviderFailure::new(
                            codes::GENERATION_FAILED,
                            format!("{PROVIDER} returned a video that is not base64: {error}"),
                            false,
                            false,
                        )
                    })?;
                return tokio::fs::write(destination, &bytes)
                    .await
                    .map_err(|error| local_failure(destination, &error));
            }
            (VideoSource::Gcs { bucket, object }, VeoApi::Vertex(vertex)) => format!(
                "{}/b/{}/o/{}?alt=media",
                vertex.storage_base_url,
                percent_encode(&bucket),
                percent_encode(&object)
            ),
            (VideoSource::Gcs { bucket, .. }, VeoApi::Gemini { .. }) => {
                return Err(ProviderFailure::new(
                    codes::GENERATION_FAILED,
                    format!("the Gemini API returned a gs://{bucket} result it cannot serve"),
                    false,
                    false,
                ))
            }
            (VideoSource::Url(url), _) => url,
        };
        let url = Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                ProviderFailure::new(
                    codes::GENERATION_FAILED,
                    format!("{PROVIDER} returned an unusable result URL"),
                    false,
                    false,
                )
            })?;
        self.download_url(url, destination).await
    }

    /// Follows redirects by hand: the credentials go only to a trusted origin (reqwest strips
    /// `Authorization` on a cross-host redirect, but not `x-goog-api-key`).
    async fn download_url(&self, mut url: Url, destination: &Path) -> Result<(), ProviderFailure> {
        for _ in 0..=MAX_REDIRECTS {
            let authorize = self.trusted.iter().any(|t| t.origin() == url.origin());
            let response = self
                .send(authorize, || self.downloads.get(url.clone()))
                .await?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"));
                url = next.ok_or_else(|| {
                    ProviderFailure::new(
                        codes::UPSTREAM_UNAVAILABLE,
                        format!("{PROVIDER} redirected the download ({status}) nowhere usable"),
                        true,
                        false,
                    )
                })?;
                continue;
            }
            if !status.is_success() {
                return Err(self.failure(Call::Download, response).await);
            }
            let written = write_body(response, destination).await;
            if written.is_err() {
                tokio::fs::remove_file(destination).await.ok();
            }
            return written;
        }
        Err(ProviderFailure::new(
            codes::UPSTREAM_UNAVAILABLE,
            format!("{PROVIDER} redirected the download more than {MAX_REDIRECTS} times"),
            true,
            false,
        ))
    }
}

/// Streams the body to `destination` chunk by chunk.
async fn write_body(mut response: Response, destination: &Path) -> Result<(), ProviderFailure> {
    let mut file = tokio::fs::File::create(destination)
        .await
        .map_err(|error| local_failure(destination, &error))?;
    let mut written = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| http::transport_failure(PROVIDER, e))?
    {
        written += chunk.len() as u64;
        if written > MAX_VIDEO_BYTES {
            return Err(ProviderFailure::new(
                codes::GENERATION_FAILED,
                format!("{PROVIDER}'s video is larger than {MAX_VIDEO_BYTES} bytes"),
                false,
                false,
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|error| local_failure(destination, &error))?;
    }
    file.flush()
        .await
        .map_err(|error| local_failure(destination, &error))
}

/// Our disk, not Veo: retryable, and the pipeline only logs retryable fetch failures.
fn local_failure(destination: &Path, error: &std::io::Error) -> ProviderFailure {
    ProviderFailure::new(
        codes::UPSTREAM_UNAVAILABLE,
        format!(
            "could not write the video to {}: {error}",
            destination.display()
        ),
        true,
        false,
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters (`/` included, as the
/// Cloud Storage JSON API wants for object names).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_percent_encoded_slashes_included() {
        assert_eq!(percent_encode("out/a b/v_1.mp4"), "out%2Fa%20b%2Fv_1.mp4");
        assert_eq!(percent_encode("é?#"), "%C3%A9%3F%23");
    }
}

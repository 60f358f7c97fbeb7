//! Result downloads: a URL (Gemini's file download), a Cloud Storage object (Vertex with an
//! output bucket) or inline base64 (Vertex without one). URLs and objects go through the
//! shared [`crate::providers::download`]; inline videos are held to the same size cap.

use std::path::Path;

use base64::Engine as _;
use reqwest::{StatusCode, Url};

use crate::provider::{codes, ProviderFailure};
use crate::providers::download::{unusable, Expect, Fetched};

use super::operation::VideoSource;
use super::{Call, Veo, VeoApi, PROVIDER};

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
                let cap = self.config.downloads.max_video_bytes;
                if bytes.len() as u64 > cap {
                    return Err(unusable(format!(
                        "{PROVIDER}'s inline video is larger than {cap} bytes"
                    )));
                }
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
        // The scheme is the downloader's to check, as for every hop.
        let url = Url::parse(&url).map_err(|_| {
            ProviderFailure::new(
                codes::GENERATION_FAILED,
                format!("{PROVIDER} returned an unusable result URL"),
                false,
                false,
            )
        })?;
        self.download_url(url, destination).await
    }

    /// The download with our credentials for the configured origins; a 401 there with a
    /// renewable Vertex token is retried once with a fresh one.
    async fn download_url(&self, url: Url, destination: &Path) -> Result<(), ProviderFailure> {
        let mut renewed = false;
        loop {
            let (credentials, token) = self.credential_headers().await?;
            let fetched = self
                .downloader
                .to_file(url.clone(), &credentials, Expect::Video, destination)
                .await?;
            let response = match fetched {
                Fetched::Written => return Ok(()),
                Fetched::Refused(response) => response,
            };
            if response.status() == StatusCode::UNAUTHORIZED && !renewed && self.renew(token).await
            {
                renewed = true;
                continue;
            }
            return Err(self.failure(Call::Download, response).await);
        }
    }
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

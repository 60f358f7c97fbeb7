//! The final answer's body: is it the kind of file we asked for, and does it fit under the cap.
//! The body is streamed to disk counting bytes, so an endless or lying body costs at most the
//! cap in bandwidth and disk.

use std::path::Path;

use reqwest::header::CONTENT_TYPE;
use reqwest::Response;
use tokio::io::AsyncWriteExt as _;

use super::unusable;
use crate::provider::{codes, ProviderFailure};
use crate::providers::http;

/// What a download should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Video,
    /// A thumbnail or other still.
    Image,
}

impl Expect {
    fn noun(self) -> &'static str {
        match self {
            Expect::Video => "video",
            Expect::Image => "image",
        }
    }

    /// Whether a `Content-Type` may carry this kind of file. A missing type is taken as
    /// `application/octet-stream` (RFC 9110 §8.3 lets a recipient assume so), and so are the
    /// generic binary labels storage services put on objects; parameters and case do not
    /// matter. Any `video/*` passes for a video: what it really holds is ffprobe's to judge.
    /// SVG, which can carry script, is no thumbnail.
    pub fn accepts(self, content_type: Option<&str>) -> bool {
        let essence = content_type
            .and_then(|value| value.split(';').next())
            .map(|essence| essence.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match essence.as_str() {
            "" | "application/octet-stream" | "binary/octet-stream" | "application/binary" => true,
            "image/svg+xml" => false,
            other => match self {
                Expect::Video => other.starts_with("video/"),
                Expect::Image => other.starts_with("image/"),
            },
        }
    }
}

/// Checks the type, then streams the body to `destination`, stopping past `cap` bytes. On any
/// failure the partial file is removed.
pub(super) async fn write(
    provider: &str,
    response: Response,
    expect: Expect,
    cap: u64,
    destination: &Path,
) -> Result<(), ProviderFailure> {
    let written = stream(provider, response, expect, cap, destination).await;
    if written.is_err() {
        tokio::fs::remove_file(destination).await.ok();
    }
    written
}

async fn stream(
    provider: &str,
    mut response: Response,
    expect: Expect,
    cap: u64,
    destination: &Path,
) -> Result<(), ProviderFailure> {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    if !expect.accepts(content_type.as_deref()) {
        return Err(unusable(format!(
            "{provider}'s result is {:?}, not a {}",
            content_type.unwrap_or_default(),
            expect.noun()
        )));
    }
    let too_large = || {
        unusable(format!(
            "{provider}'s {} is larger than {cap} bytes",
            expect.noun()
        ))
    };
    // An honest length refuses the download before a byte of it is read.
    if response.content_length().is_some_and(|length| length > cap) {
        return Err(too_large());
    }
    let local = |error: std::io::Error| {
        ProviderFailure::new(
            codes::UPSTREAM_UNAVAILABLE,
            format!(
                "could not write {provider}'s result to {}: {error}",
                destination.display()
            ),
            // Our disk, not the provider: worth another try.
            true,
            false,
        )
    };
    let mut file = tokio::fs::File::create(destination).await.map_err(local)?;
    let mut written = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| http::transport_failure(provider, e))?
    {
        written += chunk.len() as u64;
        if written > cap {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.flush().await.map_err(local)
}

/// At most this much of an error body is read: enough for any provider's error JSON.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// The start of an unsuccessful answer's body, for its error message; an endless or huge
/// error body costs no more than [`ERROR_BODY_LIMIT`].
pub async fn error_text(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videos_accept_video_and_binary_types_and_nothing_else() {
        for accepted in [
            None,
            Some("video/mp4"),
            Some("Video/MP4; codecs=\"avc1.640028\""),
            Some("video/quicktime"),
            Some("application/octet-stream"),
            Some("binary/octet-stream"),
            Some(""),
        ] {
            assert!(Expect::Video.accepts(accepted), "{accepted:?}");
        }
        for refused in [
            "text/html; charset=utf-8",
            "application/json",
            "text/plain",
            "image/webp",
            "application/xml",
        ] {
            assert!(!Expect::Video.accepts(Some(refused)), "{refused}");
        }
    }

    #[test]
    fn images_accept_raster_image_types() {
        assert!(Expect::Image.accepts(Some("image/webp")));
        assert!(Expect::Image.accepts(Some("image/jpeg")));
        assert!(Expect::Image.accepts(Some("application/octet-stream")));
        assert!(!Expect::Image.accepts(Some("image/svg+xml")));
        assert!(!Expect::Image.accepts(Some("video/mp4")));
        assert!(!Expect::Image.accepts(Some("text/html")));
    }
}

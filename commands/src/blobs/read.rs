//! Streaming reads: [`BlobStore::read`](super::BlobStore::read) hands back a reader over the
//! whole blob or one byte range of it, so the API can serve a large MP4 (and a browser's
//! `Range` requests for it) without holding the file in memory.

use std::fmt;
use std::pin::Pin;

use tokio::io::AsyncRead;

/// One byte range of a blob, as in an HTTP `Range: bytes=start-end` header: `end` is
/// inclusive, and `None` means "to the end of the blob".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl ByteRange {
    /// Parses a `Range` header naming one range with a start (`bytes=0-`, `bytes=100-199`).
    /// Anything else (several ranges, a suffix `bytes=-500`, another unit) is `None`: HTTP
    /// lets a server ignore a `Range` it does not serve and answer with the whole blob.
    pub fn parse_header(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?;
        let (start, end) = spec.split_once('-')?;
        let start = start.trim().parse::<u64>().ok()?;
        let end = match end.trim() {
            "" => None,
            end => Some(end.parse::<u64>().ok()?),
        };
        match end {
            Some(end) if end < start => None,
            _ => Some(ByteRange { start, end }),
        }
    }

    /// The inclusive range this asks for within a blob of `size` bytes (the end clamped to the
    /// last byte), or `None` when it starts past the end.
    pub fn within(self, size: u64) -> Option<(u64, u64)> {
        if self.start >= size {
            return None;
        }
        let last = size - 1;
        Some((self.start, self.end.map_or(last, |end| end.min(last))))
    }
}

impl fmt::Display for ByteRange {
    /// As an HTTP `Range` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(end) => write!(f, "bytes={}-{end}", self.start),
            None => write!(f, "bytes={}-", self.start),
        }
    }
}

/// A blob being read: its bytes (all of them, or the range asked for) as a stream.
pub struct BlobRead {
    pub body: Pin<Box<dyn AsyncRead + Send>>,
    /// The size of the whole blob.
    pub size: u64,
    /// The inclusive range `body` holds when a range was asked for; `None` for the whole blob.
    pub range: Option<(u64, u64)>,
    pub content_type: String,
}

impl BlobRead {
    /// How many bytes `body` yields.
    pub fn len(&self) -> u64 {
        match self.range {
            Some((start, end)) => end - start + 1,
            None => self.size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobRead")
            .field("size", &self.size)
            .field("range", &self.range)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_header_with_a_start_is_parsed_and_others_are_ignored() {
        let range = |start, end| Some(ByteRange { start, end });
        assert_eq!(ByteRange::parse_header("bytes=0-"), range(0, None));
        assert_eq!(ByteRange::parse_header("bytes=10-19"), range(10, Some(19)));
        assert_eq!(ByteRange::parse_header("bytes=-500"), None);
        assert_eq!(ByteRange::parse_header("bytes=0-1,5-9"), None);
        assert_eq!(ByteRange::parse_header("bytes=9-3"), None);
        assert_eq!(ByteRange::parse_header("items=0-1"), None);
    }

    #[test]
    fn a_range_is_clamped_to_the_blob_and_one_past_its_end_is_unsatisfiable() {
        let range = |start, end| ByteRange { start, end };
        assert_eq!(range(0, None).within(10), Some((0, 9)));
        assert_eq!(range(5, Some(100)).within(10), Some((5, 9)));
        assert_eq!(range(9, Some(9)).within(10), Some((9, 9)));
        assert_eq!(range(10, None).within(10), None);
        assert_eq!(range(0, None).within(0), None);
    }
}

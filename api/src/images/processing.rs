//! Turns the bytes of an upload into a checked, measured image and its public thumbnail.
//!
//! Everything here treats the bytes as hostile. The format comes from the magic bytes only
//! (a file name or a declared `Content-Type` is never an input); the file size and the
//! dimensions in the header are checked before a single pixel is decoded, and decoding runs
//! under `image::Limits`, so a decompression bomb, a truncated or a corrupt file ends as an
//! [`ImageError`] (a 4xx), never as a panic or an out-of-memory kill. EXIF is read for the
//! orientation and a few harmless facts; location is only detected, never returned. What
//! is stored is a copy without metadata ([`super::strip`]), and the thumbnail is
//! re-encoded from pixels, so no GPS tag of an upload is ever kept.
//!
//! It is synchronous and CPU-bound: call it through `spawn_blocking` (see
//! [`super::ImageProcessor`]).

use std::fmt;
use std::io::Cursor;

use exif::{Context, In, Tag, Value};
use framegate_domain::{ImageContentType, ImageExif, MAX_EXIF_TEXT_CHARS};
use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageReader, Limits, RgbImage};
use sha2::{Digest, Sha256};

use super::{jpeg, strip};

/// The longest side of a thumbnail.
pub const THUMBNAIL_MAX_SIDE: u32 = 512;
const THUMBNAIL_QUALITY: u8 = 85;

/// The EXIF facts kept about an image (never its location).
pub type ExifSummary = ImageExif;

/// What an upload may be. The defaults are the product's limits; tests shrink them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted file, in bytes.
    pub max_bytes: usize,
    /// Shortest accepted side, in pixels.
    pub min_side: u32,
    /// Longest accepted side, in pixels; checked on the header before decoding.
    pub max_side: u32,
    /// Most the decoder may allocate at once, in bytes. Must cover the largest accepted image
    /// in its widest pixel format (16-bit RGBA: 8 bytes a pixel) plus the decoder's own
    /// buffers, or valid images would be refused as [`ImageError::TooComplex`].
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        const MAX_SIDE: u32 = 4096;
        ImageLimits {
            max_bytes: 10 * 1024 * 1024,
            min_side: 256,
            max_side: MAX_SIDE,
            max_alloc: u64::from(MAX_SIDE) * u64::from(MAX_SIDE) * 8 + 64 * 1024 * 1024,
        }
    }
}

/// The image formats accepted, as recognised by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
}

impl ImageFormat {
    /// The format the bytes are in, judged by their first bytes alone.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::Webp)
        } else {
            None
        }
    }

    pub const fn content_type(self) -> &'static str {
        self.media_type().as_str()
    }

    pub const fn extension(self) -> &'static str {
        self.media_type().extension()
    }

    /// The domain's name for the format.
    pub const fn media_type(self) -> ImageContentType {
        match self {
            ImageFormat::Jpeg => ImageContentType::Jpeg,
            ImageFormat::Png => ImageContentType::Png,
            ImageFormat::Webp => ImageContentType::Webp,
        }
    }

    pub(super) const fn codec(self) -> image::ImageFormat {
        match self {
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::Webp => image::ImageFormat::WebP,
        }
    }
}

impl From<ImageFormat> for ImageContentType {
    fn from(format: ImageFormat) -> Self {
        format.media_type()
    }
}

/// An upload that passed every check, with what the domain records about it.
#[derive(Clone, PartialEq)]
pub struct ProcessedImage {
    pub format: ImageFormat,
    /// As displayed, after the EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    /// The EXIF orientation of the original (1–8); 1 when it has none.
    pub orientation: u16,
    pub exif: ExifSummary,
    /// Whether the original carries GPS tags. Their values are never read out.
    pub had_gps: bool,
    /// Lowercase hex SHA-256 of the file as uploaded: the dedupe key.
    pub sha256: String,
    /// Size of the file as uploaded.
    pub bytes: usize,
    /// What is stored as the original: the upload without its metadata (no EXIF but the
    /// orientation of a JPEG, no GPS, XMP, IPTC, comments or trailers), pixels untouched
    /// unless a PNG or WEBP had to be turned upright (then re-encoded losslessly). See
    /// [`super::strip`].
    pub original: Vec<u8>,
    /// Longest side at most [`THUMBNAIL_MAX_SIDE`] (never enlarged), upright, encoded afresh
    /// from pixels: no EXIF, no GPS, no other metadata.
    pub thumbnail_jpeg: Vec<u8>,
}

impl fmt::Debug for ProcessedImage {
    /// Without the bytes of the stored original and the thumbnail, which would flood a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessedImage")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("orientation", &self.orientation)
            .field("exif", &self.exif)
            .field("had_gps", &self.had_gps)
            .field("sha256", &self.sha256)
            .field("bytes", &self.bytes)
            .field("original_bytes", &self.original.len())
            .field("thumbnail_bytes", &self.thumbnail_jpeg.len())
            .finish()
    }
}

/// Why an upload was refused. All but [`ImageError::Internal`] are the client's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the file is empty")]
    Empty,
    #[error("the file has {bytes} bytes, more than the {max} allowed")]
    TooLarge { bytes: usize, max: usize },
    #[error("the file is not a JPEG, PNG or WEBP image")]
    UnsupportedType,
    #[error("the image is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("the image is {width} x {height} pixels; each side must be at least {min}")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("the image is {width} x {height} pixels; each side must be at most {max}")]
    DimensionsTooLarge { width: u32, height: u32, max: u32 },
    #[error("decoding the image would need more than {max_alloc} bytes of memory")]
    TooComplex { max_alloc: u64 },
    /// Not the client's fault: the thumbnail could not be encoded, or processing died.
    #[error("the image could not be processed: {0}")]
    Internal(String),
}

impl ImageError {
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::Empty => "empty_file",
            ImageError::TooLarge { .. } => "file_too_large",
            ImageError::UnsupportedType => "unsupported_image_type",
            ImageError::Corrupt(_) => "corrupt_image",
            ImageError::TooSmall { .. } => "image_too_small",
            ImageError::DimensionsTooLarge { .. } => "image_too_large",
            ImageError::TooComplex { .. } => "image_too_complex",
            ImageError::Internal(_) => "image_processing_failed",
        }
    }
}

/// Checks, measures, hashes and thumbnails an upload. See the module docs for the order of
/// the checks; every step before decoding is cheap and bounded.
pub fn process(bytes: &[u8], limits: &ImageLimits) -> Result<ProcessedImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = ImageFormat::sniff(bytes).ok_or(ImageError::UnsupportedType)?;

    let (stored_width, stored_height) = header_dimensions(bytes, format, limits)?;
    check_dimensions(stored_width, stored_height, limits)?;
    if format == ImageFormat::Jpeg {
        // The JPEG decoder fills missing scan data with grey rather than failing.
        jpeg::segments(bytes)?;
        jpeg::ensure_scan_covers_frame(bytes)?;
    }

    let metadata = read_metadata(bytes);
    let decoded = decode(bytes, format, limits)?;
    if (decoded.width(), decoded.height()) != (stored_width, stored_height) {
        return Err(ImageError::Corrupt(
            "the decoded size differs from the header".to_string(),
        ));
    }
    let thumbnail_jpeg = thumbnail(&decoded, metadata.orientation)?;
    let original = strip::stored_original(bytes, format, metadata.orientation, decoded)?;

    let (width, height) = if swaps_sides(metadata.orientation) {
        (stored_height, stored_width)
    } else {
        (stored_width, stored_height)
    };
    Ok(ProcessedImage {
        format,
        width,
        height,
        orientation: metadata.orientation,
        exif: metadata.exif,
        had_gps: metadata.had_gps,
        sha256: hex::encode(Sha256::digest(bytes)),
        bytes: bytes.len(),
        original,
        thumbnail_jpeg,
    })
}

fn reader(bytes: &[u8], format: ImageFormat, limits: Limits) -> ImageReader<Cursor<&[u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.codec());
    reader.limits(limits);
    reader
}

/// The stored (pre-orientation) size from the header alone. Only the memory limit applies
/// here, so that an oversized header is reported with its figures by [`check_dimensions`].
fn header_dimensions(
    bytes: &[u8],
    format: ImageFormat,
    limits: &ImageLimits,
) -> Result<(u32, u32), ImageError> {
    let mut memory_only = Limits::no_limits();
    memory_only.max_alloc = Some(limits.max_alloc);
    reader(bytes, format, memory_only)
        .into_dimensions()
        .map_err(|error| decode_error(error, limits))
}

fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ImageError> {
    if width > limits.max_side || height > limits.max_side {
        return Err(ImageError::DimensionsTooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    if width < limits.min_side || height < limits.min_side {
        return Err(ImageError::TooSmall {
            width,
            height,
            min: limits.min_side,
        });
    }
    Ok(())
}

fn decode(
    bytes: &[u8],
    format: ImageFormat,
    limits: &ImageLimits,
) -> Result<DynamicImage, ImageError> {
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(limits.max_side);
    decode_limits.max_image_height = Some(limits.max_side);
    decode_limits.max_alloc = Some(limits.max_alloc);
    reader(bytes, format, decode_limits)
        .decode()
        .map_err(|error| decode_error(error, limits))
}

fn decode_error(error: image::ImageError, limits: &ImageLimits) -> ImageError {
    match error {
        image::ImageError::Limits(_) => ImageError::TooComplex {
            max_alloc: limits.max_alloc,
        },
        // The container was recognised but uses a feature no decoder here implements
        // (arithmetic-coded JPEG, say): to the client that is an unsupported image.
        image::ImageError::Unsupported(_) => ImageError::UnsupportedType,
        other => ImageError::Corrupt(other.to_string()),
    }
}

const fn swaps_sides(orientation: u16) -> bool {
    matches!(orientation, 5..=8)
}

struct Metadata {
    orientation: u16,
    exif: ImageExif,
    had_gps: bool,
}

/// EXIF from the original (JPEG APP1, PNG eXIf, WEBP EXIF chunk). Metadata is a courtesy:
/// missing or broken EXIF leaves the defaults rather than refusing the image.
fn read_metadata(bytes: &[u8]) -> Metadata {
    let mut metadata = Metadata {
        orientation: 1,
        exif: ImageExif::default(),
        had_gps: false,
    };
    let parsed = exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut Cursor::new(bytes))
        .or_else(|error| error.distill_partial_result(|_ignored| {}));
    let Ok(exif) = parsed else {
        return metadata;
    };
    metadata.orientation = exif
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .and_then(|value| u16::try_from(value).ok())
        .filter(|value| (1..=8).contains(value))
        .unwrap_or(1);
    metadata.had_gps = exif
        .fields()
        .any(|field| field.tag == Tag::GPSInfoIFDPointer || field.tag.context() == Context::Gps);
    let text = |tag| {
        exif.get_field(tag, In::PRIMARY)
            .and_then(|field| ascii_text(&field.value))
    };
    metadata.exif = ImageExif {
        camera_make: text(Tag::Make),
        camera_model: text(Tag::Model),
        taken_at: text(Tag::DateTimeOriginal)
            .or_else(|| text(Tag::DateTime))
            .and_then(|stamp| exif_timestamp(&stamp)),
    };
    metadata
}

/// The first string of an ASCII field, as plain bounded text (EXIF strings come padded with
/// NULs and spaces, and are whatever the camera, or an attacker, wrote).
fn ascii_text(value: &Value) -> Option<String> {
    let Value::Ascii(strings) = value else {
        return None;
    };
    let raw = String::from_utf8_lossy(strings.first()?);
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_EXIF_TEXT_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_string())
}

/// `2025:06:01 07:45:12` (EXIF) as `2025-06-01T07:45:12`; anything else is dropped.
fn exif_timestamp(stamp: &str) -> Option<String> {
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y:%m:%d %H:%M:%S")
        .ok()
        .map(|at| at.format("%Y-%m-%dT%H:%M:%S").to_string())
}

/// Scales first and orients the small result, so that the full-size image is never copied.
fn thumbnail(image: &DynamicImage, orientation: u16) -> Result<Vec<u8>, ImageError> {
    let mut small = if image.width().max(image.height()) > THUMBNAIL_MAX_SIDE {
        image.thumbnail(THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
    } else {
        image.clone()
    };
    let exif_orientation = u8::try_from(orientation)
        .ok()
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms);
    small.apply_orientation(exif_orientation);
    let rgb = flatten_on_white(&small);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, THUMBNAIL_QUALITY)
        .encode_image(&rgb)
        .map_err(|error| ImageError::Internal(format!("thumbnail encoding: {error}")))?;
    Ok(jpeg)
}

/// JPEG has no alpha: transparent areas become white rather than whatever colour the
/// invisible pixels happen to hold.
fn flatten_on_white(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over_white = |c: u8| {
            let blended = (u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a)) + 127) / 255;
            u8::try_from(blended).unwrap_or(u8::MAX)
        };
        image::Rgb([over_white(r), over_white(g), over_white(b)])
    })
}

#[cfg(test)]
mod tests;

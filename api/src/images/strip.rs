//! The copy of an upload that is stored as its "original": the same image, without the
//! metadata the product promises not to keep (docs/adr/0027-image-metadata.md).
//!
//! Uploads are people's photos, and their metadata says where they were taken (GPS), with
//! which device (serial numbers), by whom (XMP, IPTC) and what the picture looked like
//! before it was cropped (embedded thumbnails). None of that is needed to show the image, so
//! none of it is stored. Each format is rewritten at the container level, keeping what
//! decoding and colour need and nothing else; the pixel data itself is copied, never
//! re-encoded, except where the orientation must be applied to the pixels:
//!
//! - JPEG ([`super::jpeg::strip_metadata`]): the orientation stays as the only EXIF tag
//!   (re-encoding would lose quality; see that module).
//! - PNG: critical chunks plus transparency and colour-space chunks; density (`pHYs`), text
//!   (`tEXt`, `zTXt`, `iTXt`), `eXIf`, `tIME`, animation and private chunks go.
//! - WEBP: the image, alpha, animation and colour-profile chunks; `EXIF`, `XMP ` and unknown
//!   chunks go (and the extended header stops announcing them).
//!
//! A PNG or WEBP whose EXIF says to turn it (rare: cameras write JPEG) is re-encoded
//! losslessly from its upright pixels instead, with its colour profile: both formats can
//! carry an orientation tag, but viewers are far less consistent about honouring it there
//! than for JPEG. A lossy WEBP grows when that happens; nothing is lost.

use std::io::Cursor;

use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder as _, ImageEncoder, ImageReader};

use super::jpeg;
use super::processing::{ImageError, ImageFormat};

/// The bytes to store for an upload of `bytes` in `format`, already decoded to `pixels`
/// (needed only when the orientation has to be applied to them), whose EXIF orientation is
/// `orientation` (1–8).
pub(super) fn stored_original(
    bytes: &[u8],
    format: ImageFormat,
    orientation: u16,
    pixels: DynamicImage,
) -> Result<Vec<u8>, ImageError> {
    let turn = u8::try_from(orientation)
        .ok()
        .and_then(Orientation::from_exif)
        .filter(|turn| *turn != Orientation::NoTransforms);
    match (format, turn) {
        (ImageFormat::Jpeg, _) => jpeg::strip_metadata(bytes, orientation),
        (ImageFormat::Png, None) => strip_png(bytes),
        (ImageFormat::Webp, None) => strip_webp(bytes),
        (ImageFormat::Png | ImageFormat::Webp, Some(turn)) => {
            upright_lossless(bytes, format, turn, pixels)
        }
    }
}

fn malformed(format: &str) -> ImageError {
    ImageError::Corrupt(format!("the {format} container is malformed"))
}

/// PNG chunks a viewer needs for the pixels and their colours. Everything else (text,
/// `eXIf`, `tIME`, APNG frames, private chunks) is left out.
const PNG_KEPT: [&[u8; 4]; 13] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"cICP", b"mDCV", b"cLLI",
];

fn strip_png(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    const SIGNATURE: usize = 8;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes.get(..SIGNATURE).ok_or_else(|| malformed("PNG"))?);
    let mut at = SIGNATURE;
    loop {
        let header = bytes.get(at..at + 8).ok_or_else(|| malformed("PNG"))?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| at.checked_add(12)?.checked_add(length))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| malformed("PNG"))?;
        if PNG_KEPT.iter().any(|kept| kept.as_slice() == kind) {
            out.extend_from_slice(&bytes[at..end]);
        }
        if kind == b"IEND" {
            return Ok(out);
        }
        at = end;
    }
}

/// WEBP chunks a viewer needs. `VP8X` stays with its EXIF and XMP flags cleared.
const WEBP_KEPT: [&[u8; 4]; 7] = [
    b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP",
];

fn strip_webp(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    const EXIF_FLAG: u8 = 0x08;
    const XMP_FLAG: u8 = 0x04;
    let declared = bytes.get(4..8).ok_or_else(|| malformed("WEBP"))?;
    let declared = u32::from_le_bytes([declared[0], declared[1], declared[2], declared[3]]);
    // The RIFF size counts from byte 8; anything after it is not part of the file.
    let riff_end = usize::try_from(declared)
        .ok()
        .and_then(|size| size.checked_add(8))
        .map_or(bytes.len(), |end| end.min(bytes.len()));
    let mut chunks = Vec::new();
    let mut at = 12;
    while at + 8 <= riff_end {
        let kind = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let padded = usize::try_from(size)
            .ok()
            .and_then(|size| size.checked_add(size % 2))
            .ok_or_else(|| malformed("WEBP"))?;
        let end = at
            .checked_add(8 + padded)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| malformed("WEBP"))?;
        if WEBP_KEPT.iter().any(|kept| kept.as_slice() == kind) {
            let mut chunk = bytes[at..end].to_vec();
            if kind == b"VP8X" {
                if let Some(flags) = chunk.get_mut(8) {
                    *flags &= !(EXIF_FLAG | XMP_FLAG);
                }
            }
            chunks.push(chunk);
        }
        at = end;
    }
    let body: usize = chunks.iter().map(Vec::len).sum();
    let size = u32::try_from(4 + body).map_err(|_| malformed("WEBP"))?;
    let mut out = Vec::with_capacity(12 + body);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `pixels` turned upright and encoded losslessly in their own format, with the colour
/// profile of `bytes` and no other metadata.
fn upright_lossless(
    bytes: &[u8],
    format: ImageFormat,
    turn: Orientation,
    mut pixels: DynamicImage,
) -> Result<Vec<u8>, ImageError> {
    pixels.apply_orientation(turn);
    let profile = colour_profile(bytes, format);
    let failed = |error: image::ImageError| {
        ImageError::Internal(format!("re-encoding the upright original: {error}"))
    };
    let mut out = Vec::new();
    match format {
        ImageFormat::Png => {
            let mut encoder = PngEncoder::new(&mut out);
            if let Some(profile) = profile {
                // Unsupported only means "not kept": the pixels are still right.
                let _ = encoder.set_icc_profile(profile);
            }
            pixels.write_with_encoder(encoder).map_err(failed)?;
        }
        ImageFormat::Webp => {
            let mut encoder = WebPEncoder::new_lossless(&mut out);
            if let Some(profile) = profile {
                let _ = encoder.set_icc_profile(profile);
            }
            // The WEBP encoder takes 8-bit pixels only, which is what WEBP decodes to.
            let eight_bit = if pixels.color().has_alpha() {
                DynamicImage::ImageRgba8(pixels.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(pixels.to_rgb8())
            };
            eight_bit.write_with_encoder(encoder).map_err(failed)?;
        }
        ImageFormat::Jpeg => {
            return Err(ImageError::Internal(
                "JPEGs keep their orientation as a tag".into(),
            ))
        }
    }
    Ok(out)
}

/// The embedded ICC profile, if the decoder finds one (headers only, no pixels decoded).
fn colour_profile(bytes: &[u8], format: ImageFormat) -> Option<Vec<u8>> {
    let codec = match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
    };
    ImageReader::with_format(Cursor::new(bytes), codec)
        .into_decoder()
        .ok()?
        .icc_profile()
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests;

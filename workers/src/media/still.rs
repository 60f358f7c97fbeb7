//! Start images for image-to-video: what leaves the platform is an upright copy re-encoded
//! from pixels, never the original upload, so its EXIF block (GPS position, camera serial
//! numbers) stays private and providers that ignore EXIF orientation still see it upright.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder as _, ImageReader, Limits};

use super::MediaError;

/// The largest side a start image may have (uploads are checked against the same bound).
const MAX_SIDE: u32 = 4096;
/// Decoder memory ceiling: a 4096² RGBA image needs 64 MiB.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;
const JPEG_QUALITY: u8 = 92;

/// A start image ready to send upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct StartImage {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, or `image/png` for images with transparency.
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Debug for StartImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartImage")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// Decodes an uploaded image (JPEG, PNG or WEBP), applies its EXIF orientation and encodes
/// it afresh without any metadata. CPU-bound: call it from a blocking thread.
pub fn prepare_start_image(original: &[u8]) -> Result<StartImage, MediaError> {
    let invalid = |error: image::ImageError| {
        MediaError::InvalidRequest(format!("the start image cannot be decoded: {error}"))
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(MediaError::Io)?;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(invalid)?;
    let orientation = decoder.orientation().map_err(invalid)?;
    let mut pixels = DynamicImage::from_decoder(decoder).map_err(invalid)?;
    pixels.apply_orientation(orientation);

    let mut bytes = Vec::new();
    let content_type = if pixels.color().has_alpha() {
        pixels
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .map_err(invalid)?;
        "image/png"
    } else {
        let rgb = pixels.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
            .encode_image(&rgb)
            .map_err(invalid)?;
        "image/jpeg"
    };
    Ok(StartImage {
        bytes,
        content_type,
        width: pixels.width(),
        height: pixels.height(),
    })
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    use super::*;

    fn encode(image: DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), format)
            .expect("encode");
        bytes
    }

    /// A JPEG whose APP1 segment says "rotate 90° clockwise" (orientation 6) and carries a
    /// GPS latitude tag.
    fn jpeg_with_orientation_6_and_gps(width: u32, height: u32) -> Vec<u8> {
        let jpeg = encode(
            DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, _| {
                Rgb([if x < width / 2 { 250 } else { 5 }, 0, 0])
            })),
            image::ImageFormat::Jpeg,
        );
        // Little-endian TIFF: IFD0 with Orientation=6 and a GPS IFD pointer; GPS IFD with
        // GPSLatitudeRef = "N".
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        tiff.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 38, 0, 0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&[0x01, 0x00, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let length = u16::try_from(app1.len() + 2).expect("small segment");
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn applies_the_exif_orientation_and_drops_the_metadata() {
        let original = jpeg_with_orientation_6_and_gps(400, 300);
        assert!(original.windows(4).any(|w| w == b"Exif"));
        let prepared = prepare_start_image(&original).expect("prepared");
        assert_eq!(prepared.content_type, "image/jpeg");
        assert_eq!(
            (prepared.width, prepared.height),
            (300, 400),
            "rotated upright"
        );
        assert!(
            !prepared.bytes.windows(4).any(|w| w == b"Exif"),
            "no EXIF block survives"
        );
        // Rotated 90° clockwise, the red left half of the original becomes the top half.
        let decoded = image::load_from_memory(&prepared.bytes)
            .expect("decodes")
            .to_rgb8();
        assert!(decoded.get_pixel(150, 20)[0] > 200, "top is red");
        assert!(decoded.get_pixel(150, 380)[0] < 50, "bottom is dark");
    }

    #[test]
    fn keeps_transparency_as_png() {
        let png = encode(
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(300, 300, Rgba([0, 0, 255, 128]))),
            image::ImageFormat::Png,
        );
        let prepared = prepare_start_image(&png).expect("prepared");
        assert_eq!(prepared.content_type, "image/png");
        assert_eq!((prepared.width, prepared.height), (300, 300));
    }

    #[test]
    fn refuses_a_truncated_image() {
        let jpeg = encode(
            DynamicImage::ImageRgb8(RgbImage::new(300, 300)),
            image::ImageFormat::Jpeg,
        );
        let error = prepare_start_image(&jpeg[..40]).expect_err("truncated");
        assert_eq!(error.code(), "invalid_media_request");
    }
}

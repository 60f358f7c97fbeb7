//! The stored original of uploads carrying metadata, through `process`: what goes, what
//! stays, and that the image still shows the same pixels the right way up.

use std::io::Cursor;

use exif::{In, Tag};
use image::{DynamicImage, ImageDecoder as _, ImageReader, RgbImage};

use crate::images::test_images::{self as fixture, tags};
use crate::images::{process, ImageLimits};

/// The image as a viewer that honours EXIF orientation shows it.
fn displayed(bytes: &[u8]) -> RgbImage {
    let mut decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("readable")
        .into_decoder()
        .expect("a known format");
    let orientation = decoder.orientation().expect("orientation");
    let mut image = DynamicImage::from_decoder(decoder).expect("decodes");
    image.apply_orientation(orientation);
    image.to_rgb8()
}

fn decoded(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).expect("decodes").to_rgb8()
}

/// Every EXIF tag in `bytes`, or none when it has no EXIF block.
fn exif_tags(bytes: &[u8]) -> Vec<Tag> {
    exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .map(|exif| exif.fields().map(|field| field.tag).collect())
        .unwrap_or_default()
}

fn stored(bytes: &[u8]) -> Vec<u8> {
    process(bytes, &ImageLimits::default())
        .expect("a valid image")
        .original
}

/// A 300 x 400 JPEG (red top-left quarter) that a phone might send: EXIF with orientation
/// 6 and GPS, XMP, IPTC, a comment, an MPF index and a secondary image after EOI.
fn phone_jpeg() -> Vec<u8> {
    let plain = fixture::jpeg_of(&fixture::marked(300, 400));
    let extras = [
        fixture::exif_app1(&fixture::tiff_with_location(6)),
        fixture::jpeg_segment(
            0xE1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPSLatitude 48,51.49N</x:xmpmeta>",
        ),
        fixture::jpeg_segment(0xED, b"Photoshop 3.0\08BIM\x04\x04 Paris, Eiffel Tower"),
        fixture::jpeg_segment(0xE2, b"MPF\0MM\0*secondary image index"),
        fixture::jpeg_segment(0xFE, b"shot at 12 rue de Rivoli"),
    ]
    .concat();
    let mut bytes = fixture::with_segment_after_soi(&plain, &extras);
    bytes.extend_from_slice(&fixture::with_segment_after_soi(
        &fixture::jpeg(300, 300),
        &fixture::exif_app1(&fixture::tiff_with_location(1)),
    ));
    bytes
}

#[test]
fn a_jpeg_is_stored_without_gps_camera_xmp_iptc_comments_or_trailer() {
    let upload = phone_jpeg();
    assert!(exif_tags(&upload).contains(&Tag::GPSLatitude));
    let original = stored(&upload);
    assert_eq!(exif_tags(&original), vec![Tag::Orientation]);
    for needle in [
        &b"Fujifilm"[..],
        b"xmpmeta",
        b"GPS",
        b"8BIM",
        b"Eiffel",
        b"MPF",
        b"Rivoli",
    ] {
        assert!(
            !fixture::contains(&original, needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    assert_eq!(
        original.last_chunk::<2>(),
        Some(&[0xFF, 0xD9]),
        "ends at EOI"
    );
    assert!(original.starts_with(&[0xFF, 0xD8, 0xFF]), "still a JPEG");
}

#[test]
fn a_stripped_jpeg_has_the_same_pixels_and_still_shows_upright() {
    let upload = phone_jpeg();
    let original = stored(&upload);
    assert_eq!(decoded(&original), decoded(&upload), "not re-encoded");
    let exif = exif::Reader::new()
        .read_from_container(&mut Cursor::new(&original))
        .expect("an EXIF block");
    let orientation = exif
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|field| field.value.get_uint(0));
    assert_eq!(orientation, Some(6));
    let shown = displayed(&original);
    assert_eq!(shown.dimensions(), (400, 300));
    assert!(
        fixture::is_red(&shown, 350, 50),
        "the red corner is top right"
    );
    assert!(!fixture::is_red(&shown, 50, 50));
}

#[test]
fn a_jpeg_without_an_orientation_keeps_no_exif_at_all() {
    let upload = fixture::with_segment_after_soi(
        &fixture::jpeg(300, 400),
        &fixture::exif_app1(&fixture::tiff_with_location(1)),
    );
    let original = stored(&upload);
    assert!(exif_tags(&original).is_empty());
    assert!(!fixture::contains(&original, b"Exif"));
    assert_eq!(decoded(&original), decoded(&upload));
}

#[test]
fn a_jfif_thumbnail_goes_while_the_colour_profile_and_adobe_flag_stay() {
    let plain = fixture::jpeg(300, 400);
    // JFIF 1.02, 72 dpi, with a 2 x 1 RGB thumbnail.
    let jfif = fixture::jpeg_segment(
        0xE0,
        &[
            b"JFIF\0".as_slice(),
            &[1, 2, 1, 0, 72, 0, 72, 2, 1],
            &[9, 9, 9, 8, 8, 8],
        ]
        .concat(),
    );
    let icc = fixture::jpeg_segment(0xE2, b"ICC_PROFILE\0\x01\x01fake profile bytes");
    let adobe = fixture::jpeg_segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01");
    let upload =
        fixture::with_segment_after_soi(&plain, &[jfif, icc.clone(), adobe.clone()].concat());
    let original = stored(&upload);
    let expected_jfif = fixture::jpeg_segment(
        0xE0,
        &[b"JFIF\0".as_slice(), &[1, 2, 1, 0, 72, 0, 72, 0, 0]].concat(),
    );
    assert_eq!(
        &original[2..2 + expected_jfif.len()],
        expected_jfif.as_slice()
    );
    assert!(fixture::contains(&original, &icc));
    assert!(fixture::contains(&original, &adobe));
    assert!(!fixture::contains(&original, &[9, 9, 9, 8, 8, 8]));
}

#[test]
fn a_png_keeps_its_pixels_and_colour_chunks_and_loses_text_exif_and_time() {
    let png = fixture::png(300, 400);
    let with_exif = fixture::png_with_chunk(&png, b"eXIf", &fixture::tiff_with_location(1));
    let with_text = fixture::png_with_chunk(&with_exif, b"tEXt", b"Comment\0Paris, 48.85N");
    let with_time = fixture::png_with_chunk(&with_text, b"tIME", &[7, 233, 6, 1, 7, 45, 12]);
    let upload = fixture::png_with_chunk(&with_time, b"gAMA", &45_455_u32.to_be_bytes());
    let original = stored(&upload);
    let chunks = fixture::png_chunks(&original);
    assert!(chunks.contains(&"gAMA".to_string()), "{chunks:?}");
    for gone in ["eXIf", "tEXt", "tIME"] {
        assert!(!chunks.contains(&gone.to_string()), "{chunks:?}");
    }
    assert!(!fixture::contains(&original, b"Paris"));
    assert!(exif_tags(&original).is_empty());
    assert_eq!(decoded(&original), decoded(&upload));
}

#[test]
fn a_png_that_must_be_turned_is_stored_upright_and_lossless_without_exif() {
    let tiff = fixture::tiff(vec![fixture::short(tags::ORIENTATION, 6)], vec![], vec![]);
    let marked = fixture::marked(300, 400);
    let png = fixture::encode(
        DynamicImage::ImageRgb8(marked.clone()),
        image::ImageFormat::Png,
    );
    let upload = fixture::png_with_chunk(&png, b"eXIf", &tiff);
    let original = stored(&upload);
    assert!(exif_tags(&original).is_empty());
    let shown = decoded(&original);
    let turned = DynamicImage::ImageRgb8(marked).rotate90().to_rgb8();
    assert_eq!(shown, turned, "exactly the upright pixels");
    assert!(fixture::is_red(&shown, 350, 50));
}

#[test]
fn a_webp_loses_its_exif_chunk_and_keeps_its_pixels() {
    let gradient = fixture::gradient(300, 400);
    let upload = fixture::webp_with_exif(&gradient, &fixture::tiff_with_location(1));
    assert!(fixture::webp_chunks(&upload).contains(&"EXIF".to_string()));
    let original = stored(&upload);
    let chunks = fixture::webp_chunks(&original);
    assert!(!chunks.contains(&"EXIF".to_string()), "{chunks:?}");
    assert!(!fixture::contains(&original, b"Fujifilm"));
    assert_eq!(
        original[20] & 0x0C,
        0,
        "VP8X no longer announces EXIF or XMP"
    );
    let size = u32::from_le_bytes(original[4..8].try_into().expect("four bytes"));
    assert_eq!(usize::try_from(size).expect("small") + 8, original.len());
    assert_eq!(decoded(&original), gradient);
}

#[test]
fn a_webp_that_must_be_turned_is_stored_upright_without_exif() {
    let tiff = fixture::tiff(vec![fixture::short(tags::ORIENTATION, 6)], vec![], vec![]);
    let marked = fixture::marked(300, 400);
    let upload = fixture::webp_with_exif(&marked, &tiff);
    let original = stored(&upload);
    assert!(!fixture::webp_chunks(&original).contains(&"EXIF".to_string()));
    let turned = DynamicImage::ImageRgb8(marked).rotate90().to_rgb8();
    assert_eq!(decoded(&original), turned);
}

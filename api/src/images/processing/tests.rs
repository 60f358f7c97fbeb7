//! Tests of `process` on images generated in the test (see `test_images`).

use super::*;
use crate::images::test_images::{self as fixture, tags};

fn limits() -> ImageLimits {
    ImageLimits::default()
}

fn decode_thumbnail(processed: &ProcessedImage) -> DynamicImage {
    image::load_from_memory_with_format(&processed.thumbnail_jpeg, image::ImageFormat::Jpeg)
        .expect("the thumbnail is a JPEG")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn the_default_limits_are_ten_mebibytes_and_256_to_4096_pixels_a_side() {
    let limits = ImageLimits::default();
    assert_eq!(limits.max_bytes, 10 * 1024 * 1024);
    assert_eq!((limits.min_side, limits.max_side), (256, 4096));
    assert!(limits.max_alloc >= 4096 * 4096 * 8);
}

#[test]
fn a_png_jpeg_and_webp_of_300_by_400_pass_with_their_size_and_a_jpeg_thumbnail() {
    for (bytes, format) in [
        (fixture::png(300, 400), ImageFormat::Png),
        (fixture::jpeg(300, 400), ImageFormat::Jpeg),
        (fixture::webp(300, 400), ImageFormat::Webp),
    ] {
        let processed = process(&bytes, &limits()).expect("a valid image");
        assert_eq!(processed.format, format);
        assert_eq!((processed.width, processed.height), (300, 400));
        assert_eq!(processed.orientation, 1);
        assert_eq!(processed.exif, ImageExif::default());
        assert!(!processed.had_gps);
        assert_eq!(processed.bytes, bytes.len());
        assert_eq!(processed.sha256, sha256_hex(&bytes));
        assert_eq!(
            ImageFormat::sniff(&processed.thumbnail_jpeg),
            Some(ImageFormat::Jpeg)
        );
        let thumbnail = decode_thumbnail(&processed);
        // Never enlarged: 300 x 400 already fits in 512.
        assert_eq!((thumbnail.width(), thumbnail.height()), (300, 400));
    }
}

#[test]
fn formats_name_their_media_type_and_extension() {
    assert_eq!(ImageFormat::Jpeg.content_type(), "image/jpeg");
    assert_eq!(ImageFormat::Png.content_type(), "image/png");
    assert_eq!(ImageFormat::Webp.content_type(), "image/webp");
    assert_eq!(ImageFormat::Jpeg.extension(), "jpg");
    assert_eq!(
        ImageContentType::from(ImageFormat::Webp),
        ImageContentType::Webp
    );
}

#[test]
fn a_large_image_gets_a_thumbnail_whose_longest_side_is_512() {
    for (w, h, expected) in [(2000, 1000, (512, 256)), (600, 1200, (256, 512))] {
        let processed = process(&fixture::png(w, h), &limits()).expect("a valid image");
        let thumbnail = decode_thumbnail(&processed);
        assert_eq!((thumbnail.width(), thumbnail.height()), expected);
    }
}

#[test]
fn a_png_claimed_to_be_a_jpeg_is_still_processed_as_a_png() {
    // The name and the declared type are not inputs at all: only the bytes are.
    let declared_elsewhere = "photo.jpg; Content-Type: image/jpeg";
    let bytes = fixture::png(300, 300);
    let processed = process(&bytes, &limits()).expect("a valid PNG");
    assert_eq!(processed.format, ImageFormat::Png);
    assert_eq!(processed.format.content_type(), "image/png");
    assert_ne!(processed.format.content_type(), declared_elsewhere);
}

#[test]
fn a_gif_a_text_file_and_other_formats_are_unsupported() {
    let gif = [b"GIF89a".as_slice(), &[1, 1, 1, 1, 0, 0, 0], b";"].concat();
    let riff_not_webp = [b"RIFF".as_slice(), &[0; 4], b"WAVEfmt "].concat();
    let bmp = [b"BM".as_slice(), &[0; 64]].concat();
    for bytes in [
        gif,
        b"hello, this is not an image".to_vec(),
        riff_not_webp,
        bmp,
        vec![0xFF, 0xD8],
    ] {
        assert_eq!(process(&bytes, &limits()), Err(ImageError::UnsupportedType));
    }
}

#[test]
fn an_empty_file_is_refused_as_empty() {
    assert_eq!(process(&[], &limits()), Err(ImageError::Empty));
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_anything_else() {
    let limit = limits().max_bytes;
    let mut bytes = fixture::png(300, 300);
    bytes.resize(limit + 1, 0);
    assert_eq!(
        process(&bytes, &limits()),
        Err(ImageError::TooLarge {
            bytes: limit + 1,
            max: limit
        })
    );
}

#[test]
fn an_image_with_a_side_under_256_is_too_small() {
    assert_eq!(
        process(&fixture::png(100, 100), &limits()),
        Err(ImageError::TooSmall {
            width: 100,
            height: 100,
            min: 256
        })
    );
    assert_eq!(
        process(&fixture::jpeg(255, 300), &limits()),
        Err(ImageError::TooSmall {
            width: 255,
            height: 300,
            min: 256
        })
    );
}

#[test]
fn an_image_with_a_side_over_4096_is_too_large() {
    assert_eq!(
        process(&fixture::png(5000, 300), &limits()),
        Err(ImageError::DimensionsTooLarge {
            width: 5000,
            height: 300,
            max: 4096
        })
    );
}

#[test]
fn sides_of_exactly_256_and_4096_are_accepted() {
    let processed = process(&fixture::png(4096, 256), &limits()).expect("within limits");
    assert_eq!((processed.width, processed.height), (4096, 256));
    let thumbnail = decode_thumbnail(&processed);
    assert_eq!((thumbnail.width(), thumbnail.height()), (512, 32));
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header_without_decoding() {
    let bomb = fixture::png_claiming(&fixture::png(8, 8), 60_000, 60_000);
    assert!(bomb.len() < 1_000);
    // A budget far too small for the claimed pixels proves nothing was allocated for them.
    let tight = ImageLimits {
        max_alloc: 1024 * 1024,
        ..limits()
    };
    assert_eq!(
        process(&bomb, &tight),
        Err(ImageError::DimensionsTooLarge {
            width: 60_000,
            height: 60_000,
            max: 4096
        })
    );
}

#[test]
fn a_png_whose_header_claims_more_pixels_than_its_data_holds_is_corrupt() {
    let liar = fixture::png_claiming(&fixture::png(300, 300), 4000, 4000);
    assert!(matches!(
        process(&liar, &limits()),
        Err(ImageError::Corrupt(_))
    ));
}

#[test]
fn an_image_needing_more_memory_than_allowed_is_too_complex() {
    let tight = ImageLimits {
        max_alloc: 100_000,
        ..limits()
    };
    assert_eq!(
        process(&fixture::png(300, 400), &tight),
        Err(ImageError::TooComplex { max_alloc: 100_000 })
    );
}

#[test]
fn truncated_jpeg_png_and_webp_files_are_corrupt() {
    for bytes in [
        fixture::jpeg(300, 400),
        fixture::png(300, 400),
        fixture::webp(300, 400),
    ] {
        let half = &bytes[..bytes.len() / 2];
        let result = process(half, &limits());
        assert!(
            matches!(result, Err(ImageError::Corrupt(_))),
            "{:?}: {result:?}",
            ImageFormat::sniff(half)
        );
    }
}

#[test]
fn a_jpeg_cut_inside_its_headers_is_corrupt() {
    let bytes = fixture::jpeg(300, 400);
    let result = process(&bytes[..40], &limits());
    assert!(matches!(result, Err(ImageError::Corrupt(_))), "{result:?}");
}

#[test]
fn a_jpeg_whose_header_claims_more_pixels_than_its_scan_holds_is_corrupt() {
    let scan = fixture::jpeg(640, 360);
    for (width, height) in [(4096, 4096), (1280, 720), (640, 720)] {
        let liar = fixture::jpeg_claiming(&scan, width, height);
        let result = process(&liar, &limits());
        assert!(
            matches!(&result, Err(ImageError::Corrupt(why)) if why.contains("scan data")),
            "{width} x {height}: {result:?}"
        );
    }
}

#[test]
fn a_progressive_jpeg_whose_header_claims_more_pixels_than_its_scans_hold_is_corrupt() {
    let scan = fixture::jpeg_with(&fixture::gradient(640, 360), |encoder| {
        encoder.set_progressive(true);
    });
    let liar = fixture::jpeg_claiming_any(&scan, 4096, 4096);
    let result = process(&liar, &limits());
    assert!(matches!(result, Err(ImageError::Corrupt(_))), "{result:?}");
}

#[test]
fn progressive_restart_marked_and_subsampled_jpegs_pass_with_their_pixels() {
    let image = fixture::gradient(640, 360);
    type Configure = fn(&mut jpeg_encoder::Encoder<&mut Vec<u8>>);
    let variants: [(&str, Configure); 4] = [
        ("progressive", |e| e.set_progressive(true)),
        ("restart markers", |e| e.set_restart_interval(3)),
        ("progressive with restart markers", |e| {
            e.set_progressive(true);
            e.set_restart_interval(2);
        }),
        ("4:2:0", |e| {
            e.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
        }),
    ];
    for (what, configure) in variants {
        let mut bytes = fixture::jpeg_with(&image, configure);
        bytes.extend_from_slice(b"trailer after EOI");
        let processed = process(&bytes, &limits()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((processed.width, processed.height), (640, 360), "{what}");
        let stored = image::load_from_memory(&processed.original)
            .unwrap_or_else(|e| panic!("{what}: the stored original decodes: {e}"));
        let uploaded = image::load_from_memory(&bytes).expect("decodes");
        assert_eq!(stored.to_rgb8(), uploaded.to_rgb8(), "{what}: same pixels");
    }
}

#[test]
fn bytes_after_the_end_of_a_jpeg_are_tolerated() {
    let mut bytes = fixture::jpeg(300, 400);
    bytes.extend_from_slice(b"SEFH trailer some phones append");
    let processed = process(&bytes, &limits()).expect("a complete JPEG");
    assert_eq!((processed.width, processed.height), (300, 400));
}

#[test]
fn garbage_with_a_valid_signature_is_corrupt() {
    let mut bytes = fixture::png(300, 400);
    for byte in bytes.iter_mut().skip(40) {
        *byte = 0x5A;
    }
    assert!(matches!(
        process(&bytes, &limits()),
        Err(ImageError::Corrupt(_))
    ));
}

#[test]
fn exif_orientation_6_swaps_the_displayed_sides_and_rotates_the_thumbnail() {
    let app1 = fixture::exif_app1(&fixture::tiff(
        vec![fixture::short(tags::ORIENTATION, 6)],
        vec![],
        vec![],
    ));
    let bytes =
        fixture::with_segment_after_soi(&fixture::jpeg_of(&fixture::marked(300, 400)), &app1);
    let processed = process(&bytes, &limits()).expect("a valid JPEG");
    assert_eq!(processed.orientation, 6);
    assert_eq!((processed.width, processed.height), (400, 300));
    let thumbnail = decode_thumbnail(&processed).to_rgb8();
    assert_eq!(thumbnail.dimensions(), (400, 300));
    // Rotated 90° clockwise: the red top-left quarter is now top-right.
    let red = |x: u32, y: u32| {
        let [r, _, b] = thumbnail.get_pixel(x, y).0;
        r > 200 && b < 60
    };
    assert!(red(350, 50), "top right should be red");
    assert!(!red(50, 50), "top left should no longer be red");
}

#[test]
fn orientations_that_do_not_turn_the_image_keep_its_sides() {
    for orientation in [1, 2, 3, 4] {
        let app1 = fixture::exif_app1(&fixture::tiff(
            vec![fixture::short(tags::ORIENTATION, orientation)],
            vec![],
            vec![],
        ));
        let bytes = fixture::with_segment_after_soi(&fixture::jpeg(300, 400), &app1);
        let processed = process(&bytes, &limits()).expect("a valid JPEG");
        assert_eq!(processed.orientation, orientation);
        assert_eq!((processed.width, processed.height), (300, 400));
    }
}

#[test]
fn an_out_of_range_orientation_counts_as_none() {
    let app1 = fixture::exif_app1(&fixture::tiff(
        vec![fixture::short(tags::ORIENTATION, 42)],
        vec![],
        vec![],
    ));
    let bytes = fixture::with_segment_after_soi(&fixture::jpeg(300, 400), &app1);
    let processed = process(&bytes, &limits()).expect("a valid JPEG");
    assert_eq!(processed.orientation, 1);
    assert_eq!((processed.width, processed.height), (300, 400));
}

#[test]
fn the_orientation_in_a_png_exif_chunk_is_honoured() {
    let tiff = fixture::tiff(vec![fixture::short(tags::ORIENTATION, 8)], vec![], vec![]);
    let bytes = fixture::png_with_chunk(&fixture::png(300, 400), b"eXIf", &tiff);
    let processed = process(&bytes, &limits()).expect("a valid PNG");
    assert_eq!(processed.orientation, 8);
    assert_eq!((processed.width, processed.height), (400, 300));
    let thumbnail = decode_thumbnail(&processed);
    assert_eq!((thumbnail.width(), thumbnail.height()), (400, 300));
}

fn jpeg_with_camera_and_location() -> Vec<u8> {
    let app1 = fixture::exif_app1(&fixture::tiff(
        vec![
            fixture::ascii(tags::MAKE, "Fujifilm  "),
            fixture::ascii(tags::MODEL, "X-T5"),
        ],
        vec![fixture::ascii(
            tags::DATE_TIME_ORIGINAL,
            "2025:06:01 07:45:12",
        )],
        vec![
            fixture::ascii(tags::GPS_LATITUDE_REF, "N"),
            fixture::rationals(tags::GPS_LATITUDE, &[(48, 1), (51, 1), (2940, 100)]),
            fixture::ascii(tags::GPS_LONGITUDE_REF, "E"),
            fixture::rationals(tags::GPS_LONGITUDE, &[(2, 1), (17, 1), (4020, 100)]),
        ],
    ));
    fixture::with_segment_after_soi(&fixture::jpeg(300, 400), &app1)
}

#[test]
fn camera_make_model_and_capture_time_are_extracted() {
    let processed = process(&jpeg_with_camera_and_location(), &limits()).expect("a valid JPEG");
    assert_eq!(
        processed.exif,
        ImageExif {
            camera_make: Some("Fujifilm".to_string()),
            camera_model: Some("X-T5".to_string()),
            taken_at: Some("2025-06-01T07:45:12".to_string()),
        }
    );
}

#[test]
fn gps_is_detected_but_never_returned_and_the_thumbnail_has_no_exif() {
    let bytes = jpeg_with_camera_and_location();
    assert!(fixture::contains(&bytes, b"Exif\0\0"));
    let processed = process(&bytes, &limits()).expect("a valid JPEG");
    assert!(processed.had_gps);
    assert!(!fixture::contains(&processed.thumbnail_jpeg, b"Exif"));
    assert!(!fixture::contains(&processed.thumbnail_jpeg, &[0xFF, 0xE1]));
    assert!(exif::Reader::new()
        .read_from_container(&mut Cursor::new(&processed.thumbnail_jpeg))
        .is_err());
}

#[test]
fn broken_exif_is_ignored_rather_than_refusing_the_image() {
    let app1 = fixture::exif_app1(b"II*\0\xff\xff\xff\xffgarbage");
    let bytes = fixture::with_segment_after_soi(&fixture::jpeg(300, 400), &app1);
    let processed = process(&bytes, &limits()).expect("a valid JPEG");
    assert_eq!(processed.orientation, 1);
    assert_eq!(processed.exif, ImageExif::default());
    assert!(!processed.had_gps);
}

#[test]
fn exif_texts_are_cleaned_and_bounded() {
    let long = "M".repeat(300);
    let app1 = fixture::exif_app1(&fixture::tiff(
        vec![
            fixture::ascii(tags::MAKE, "Evil\r\nCorp\u{7}"),
            fixture::ascii(tags::MODEL, &long),
        ],
        vec![fixture::ascii(tags::DATE_TIME_ORIGINAL, "yesterday")],
        vec![],
    ));
    let bytes = fixture::with_segment_after_soi(&fixture::jpeg(300, 400), &app1);
    let processed = process(&bytes, &limits()).expect("a valid JPEG");
    assert_eq!(processed.exif.camera_make.as_deref(), Some("EvilCorp"));
    assert_eq!(
        processed
            .exif
            .camera_model
            .map(|model| model.chars().count()),
        Some(MAX_EXIF_TEXT_CHARS)
    );
    assert_eq!(processed.exif.taken_at, None);
}

#[test]
fn transparent_areas_turn_white_in_the_thumbnail() {
    let processed = process(&fixture::transparent_png(300, 300), &limits()).expect("a PNG");
    let thumbnail = decode_thumbnail(&processed).to_rgb8();
    let [r, g, b] = thumbnail.get_pixel(150, 150).0;
    assert!(r > 240 && g > 240 && b > 240, "{r} {g} {b}");
}

#[test]
fn the_same_bytes_hash_alike_and_one_changed_byte_does_not() {
    let bytes = fixture::png(300, 300);
    let first = process(&bytes, &limits()).expect("a PNG");
    let again = process(&bytes, &limits()).expect("a PNG");
    assert_eq!(first.sha256, again.sha256);
    assert_eq!(first.sha256.len(), 64);
    let other = process(&fixture::png(300, 301), &limits()).expect("a PNG");
    assert_ne!(first.sha256, other.sha256);
}

#[test]
fn every_error_has_its_own_code() {
    let errors = [
        ImageError::Empty,
        ImageError::TooLarge { bytes: 2, max: 1 },
        ImageError::UnsupportedType,
        ImageError::Corrupt(String::new()),
        ImageError::TooSmall {
            width: 1,
            height: 1,
            min: 2,
        },
        ImageError::DimensionsTooLarge {
            width: 9,
            height: 9,
            max: 8,
        },
        ImageError::TooComplex { max_alloc: 1 },
        ImageError::Internal(String::new()),
    ];
    let mut codes: Vec<&str> = errors.iter().map(ImageError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

#[test]
fn the_debug_form_leaves_out_the_thumbnail_bytes() {
    let processed = process(&fixture::png(300, 300), &limits()).expect("a PNG");
    let shown = format!("{processed:?}");
    assert!(shown.contains("thumbnail_bytes"));
    assert!(shown.len() < 600, "{shown}");
}

//! Images made in the test itself, never read from disk: encoded with the `image` crate, and
//! where a test needs what no encoder writes (EXIF, a lying header) patched by hand with the
//! small TIFF and PNG-chunk builders below.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};

/// A gradient, so that orientation mistakes and scaling show in the pixels.
pub fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

/// Red in the top-left quarter, blue elsewhere: tells where "up" went after orientation.
pub fn marked(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        if x < width / 2 && y < height / 2 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    })
}

pub fn encode(image: DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("test images encode");
    bytes
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(
        DynamicImage::ImageRgb8(gradient(width, height)),
        image::ImageFormat::Png,
    )
}

pub fn transparent_png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_pixel(width, height, Rgba([0, 0, 0, 0]));
    encode(DynamicImage::ImageRgba8(image), image::ImageFormat::Png)
}

pub fn webp(width: u32, height: u32) -> Vec<u8> {
    encode(
        DynamicImage::ImageRgb8(gradient(width, height)),
        image::ImageFormat::WebP,
    )
}

pub fn jpeg_of(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(image)
        .expect("test images encode");
    bytes
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    jpeg_of(&gradient(width, height))
}

/// `jpeg` with `segment` inserted right after SOI.
pub fn with_segment_after_soi(jpeg: &[u8], segment: &[u8]) -> Vec<u8> {
    [&jpeg[..2], segment, &jpeg[2..]].concat()
}

/// A JPEG APP1 segment holding `tiff` as its Exif payload.
pub fn exif_app1(tiff: &[u8]) -> Vec<u8> {
    let length = u16::try_from(2 + 6 + tiff.len()).expect("a small segment");
    [&[0xFF, 0xE1][..], &length.to_be_bytes(), b"Exif\0\0", tiff].concat()
}

/// The CRC-32 of PNG chunks (ISO 3309, reflected, polynomial 0xEDB88320).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose IHDR claims `width` x `height` whatever its pixel data holds, with a valid
/// CRC so that only the size is a lie.
pub fn png_claiming(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png.to_vec();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// `png` with a chunk inserted right after IHDR (where eXIf may go).
pub fn png_with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let length = u32::try_from(data.len()).expect("a small chunk");
    let crc = crc32(&[&kind[..], data].concat());
    let chunk = [&length.to_be_bytes()[..], kind, data, &crc.to_be_bytes()].concat();
    [&png[..33], &chunk, &png[33..]].concat()
}

/// One little-endian TIFF directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    data: Vec<u8>,
}

pub fn short(tag: u16, value: u16) -> Entry {
    Entry {
        tag,
        kind: 3,
        count: 1,
        data: value.to_le_bytes().to_vec(),
    }
}

pub fn ascii(tag: u16, text: &str) -> Entry {
    let mut data = text.as_bytes().to_vec();
    data.push(0);
    Entry {
        tag,
        kind: 2,
        count: u32::try_from(data.len()).expect("a short text"),
        data,
    }
}

fn long(tag: u16, value: u32) -> Entry {
    Entry {
        tag,
        kind: 4,
        count: 1,
        data: value.to_le_bytes().to_vec(),
    }
}

pub fn rationals(tag: u16, values: &[(u32, u32)]) -> Entry {
    Entry {
        tag,
        kind: 5,
        count: u32::try_from(values.len()).expect("a few values"),
        data: values
            .iter()
            .flat_map(|(n, d)| [n.to_le_bytes(), d.to_le_bytes()].concat())
            .collect(),
    }
}

fn ifd_len(entries: &[Entry]) -> usize {
    let out_of_line: usize = entries
        .iter()
        .filter(|entry| entry.data.len() > 4)
        .map(|entry| entry.data.len().next_multiple_of(2))
        .sum();
    2 + 12 * entries.len() + 4 + out_of_line
}

fn write_ifd(out: &mut Vec<u8>, entries: &[Entry]) {
    let start = out.len();
    let mut data_at = start + 2 + 12 * entries.len() + 4;
    let mut data = Vec::new();
    out.extend_from_slice(&u16::try_from(entries.len()).expect("few").to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.tag.to_le_bytes());
        out.extend_from_slice(&entry.kind.to_le_bytes());
        out.extend_from_slice(&entry.count.to_le_bytes());
        if entry.data.len() <= 4 {
            let mut inline = entry.data.clone();
            inline.resize(4, 0);
            out.extend_from_slice(&inline);
        } else {
            let offset = u32::try_from(data_at).expect("a small TIFF");
            out.extend_from_slice(&offset.to_le_bytes());
            data.extend_from_slice(&entry.data);
            if entry.data.len() % 2 == 1 {
                data.push(0);
            }
            data_at += entry.data.len().next_multiple_of(2);
        }
    }
    out.extend_from_slice(&0_u32.to_le_bytes()); // no next IFD
    out.extend_from_slice(&data);
}

/// A TIFF (Exif payload) with IFD0 and, when not empty, an Exif and a GPS sub-IFD.
pub fn tiff(mut ifd0: Vec<Entry>, exif: Vec<Entry>, gps: Vec<Entry>) -> Vec<u8> {
    const EXIF_POINTER: u16 = 0x8769;
    const GPS_POINTER: u16 = 0x8825;
    let pointers = usize::from(!exif.is_empty()) + usize::from(!gps.is_empty());
    let ifd0_len = ifd_len(&ifd0) + 12 * pointers;
    let exif_at = 8 + ifd0_len;
    let gps_at = exif_at + if exif.is_empty() { 0 } else { ifd_len(&exif) };
    if !exif.is_empty() {
        ifd0.push(long(EXIF_POINTER, u32::try_from(exif_at).expect("small")));
    }
    if !gps.is_empty() {
        ifd0.push(long(GPS_POINTER, u32::try_from(gps_at).expect("small")));
    }
    ifd0.sort_by_key(|entry| entry.tag);
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8_u32.to_le_bytes());
    write_ifd(&mut out, &ifd0);
    for ifd in [exif, gps] {
        if !ifd.is_empty() {
            write_ifd(&mut out, &ifd);
        }
    }
    out
}

/// Tags used by the tests.
pub mod tags {
    pub const ORIENTATION: u16 = 0x0112;
    pub const MAKE: u16 = 0x010F;
    pub const MODEL: u16 = 0x0110;
    pub const DATE_TIME_ORIGINAL: u16 = 0x9003;
    pub const GPS_LATITUDE_REF: u16 = 0x0001;
    pub const GPS_LATITUDE: u16 = 0x0002;
    pub const GPS_LONGITUDE_REF: u16 = 0x0003;
    pub const GPS_LONGITUDE: u16 = 0x0004;
}

/// Whether `bytes` contain `needle` anywhere.
pub fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|window| window == needle)
}

/// A TIFF (Exif payload) with a camera make, `orientation` and a GPS position
/// (48°51'29.4" N, 2°17'40.2" E).
pub fn tiff_with_location(orientation: u16) -> Vec<u8> {
    tiff(
        vec![
            ascii(tags::MAKE, "Fujifilm"),
            short(tags::ORIENTATION, orientation),
        ],
        vec![ascii(tags::DATE_TIME_ORIGINAL, "2025:06:01 07:45:12")],
        vec![
            ascii(tags::GPS_LATITUDE_REF, "N"),
            rationals(tags::GPS_LATITUDE, &[(48, 1), (51, 1), (2940, 100)]),
            ascii(tags::GPS_LONGITUDE_REF, "E"),
            rationals(tags::GPS_LONGITUDE, &[(2, 1), (17, 1), (4020, 100)]),
        ],
    )
}

/// A JPEG marker segment `FF <marker>` with `payload`.
pub fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let length = u16::try_from(2 + payload.len()).expect("a small segment");
    [&[0xFF, marker][..], &length.to_be_bytes(), payload].concat()
}

/// A WEBP (lossless, extended format) of `image` carrying `tiff` in an EXIF chunk.
pub fn webp_with_exif(image: &RgbImage, tiff: &[u8]) -> Vec<u8> {
    use image::ImageEncoder as _;
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut bytes);
    encoder
        .set_exif_metadata(tiff.to_vec())
        .expect("the WEBP encoder takes EXIF");
    encoder
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("test images encode");
    bytes
}

/// The four-character names of a WEBP's RIFF chunks, in order.
pub fn webp_chunks(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 12;
    while at + 8 <= bytes.len() {
        names.push(String::from_utf8_lossy(&bytes[at..at + 4]).into_owned());
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("four bytes"));
        at += 8 + usize::try_from(size).expect("small") + (size as usize % 2);
    }
    names
}

/// The four-character names of a PNG's chunks, in order.
pub fn png_chunks(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        names.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        let length = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
        at += 12 + usize::try_from(length).expect("small");
    }
    names
}

/// Whether the pixel at (`x`, `y`) is the red of [`marked`] (after a lossy round trip).
pub fn is_red(image: &RgbImage, x: u32, y: u32) -> bool {
    let [r, g, b] = image.get_pixel(x, y).0;
    r > 200 && g < 60 && b < 60
}

/// `jpeg` with its frame header (SOF0) claiming `width` x `height`, its scan data unchanged.
pub fn jpeg_claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg.to_vec();
    let sof = bytes
        .windows(2)
        .position(|pair| pair == [0xFF, 0xC0])
        .expect("a baseline frame header");
    // FF C0, length (2), precision (1), then height and width.
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// A JPEG written by the `jpeg-encoder` crate, which (unlike the `image` crate's encoder)
/// can write progressive scans, restart markers and other chroma subsampling.
pub fn jpeg_with(
    image: &RgbImage,
    configure: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
    configure(&mut encoder);
    encoder
        .encode(
            image.as_raw(),
            u16::try_from(image.width()).expect("small"),
            u16::try_from(image.height()).expect("small"),
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("test images encode");
    bytes
}

/// Like [`jpeg_claiming`], for any frame header (SOF0–SOF2: baseline, extended, progressive).
pub fn jpeg_claiming_any(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg.to_vec();
    let sof = bytes
        .windows(2)
        .position(|pair| pair[0] == 0xFF && (0xC0..=0xC2).contains(&pair[1]))
        .expect("a frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

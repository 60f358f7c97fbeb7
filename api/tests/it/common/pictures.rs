//! Images made in the tests with the `image` crate; EXIF and lying headers are patched in by
//! hand.

use std::io::Cursor;

use image::{DynamicImage, RgbImage};

pub fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    })
}

pub fn encode(image: RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image)
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("test images encode");
    bytes
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(gradient(width, height), image::ImageFormat::Png)
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(gradient(width, height), image::ImageFormat::Jpeg)
}

pub fn webp(width: u32, height: u32) -> Vec<u8> {
    encode(gradient(width, height), image::ImageFormat::WebP)
}

/// Pixels that do not compress: a PNG of about 3 bytes a pixel.
pub fn noise_png(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545_F491_u32;
    let noise = RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    encode(noise, image::ImageFormat::Png)
}

pub fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|window| window == needle)
}

/// A PNG whose IHDR claims `width` x `height` (with a valid CRC) whatever its data holds.
pub fn png_claiming(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png.to_vec();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

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

/// A JPEG with an EXIF block: camera make, orientation and a GPS position (52°31'12.34" N,
/// 13°24'0" E) in its own IFD.
pub fn jpeg_with_exif(width: u32, height: u32, make: &str, orientation: u16) -> Vec<u8> {
    with_exif(&jpeg(width, height), make, orientation)
}

/// Red in the top-left quarter, blue elsewhere: shows where "up" went.
pub fn marked_jpeg(width: u32, height: u32) -> Vec<u8> {
    let marked = RgbImage::from_fn(width, height, |x, y| {
        if x < width / 2 && y < height / 2 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    encode(marked, image::ImageFormat::Jpeg)
}

/// `plain` (a JPEG) with the EXIF block of [`jpeg_with_exif`] right after its SOI.
pub fn with_exif(plain: &[u8], make: &str, orientation: u16) -> Vec<u8> {
    let ascii = |tag, text: &str| (tag, 2_u16, [text.as_bytes(), b"\0"].concat());
    let rationals = |tag, values: [(u32, u32); 3]| {
        let data = values
            .iter()
            .flat_map(|(n, d)| [n.to_le_bytes(), d.to_le_bytes()].concat())
            .collect();
        (tag, 5_u16, data)
    };
    let gps = vec![
        ascii(0x0001, "N"),
        rationals(0x0002, [(52, 1), (31, 1), (1234, 100)]),
        ascii(0x0003, "E"),
        rationals(0x0004, [(13, 1), (24, 1), (0, 1)]),
    ];
    let mut ifd0 = vec![
        ascii(0x010F, make),
        (0x0112, 3_u16, orientation.to_le_bytes().to_vec()),
        (0x8825, 4_u16, vec![0; 4]),
    ];
    let gps_at = 8 + ifd_len(&ifd0);
    ifd0[2].2 = u32::try_from(gps_at).expect("small").to_le_bytes().to_vec();
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    write_ifd(&mut tiff, &ifd0);
    write_ifd(&mut tiff, &gps);
    let length = u16::try_from(2 + 6 + tiff.len()).expect("a small segment");
    let app1 = [&[0xFF, 0xE1][..], &length.to_be_bytes(), b"Exif\0\0", &tiff].concat();
    [&plain[..2], &app1, &plain[2..]].concat()
}

type Entry = (u16, u16, Vec<u8>);

fn value_size(kind: u16) -> usize {
    match kind {
        3 => 2,
        4 => 4,
        5 => 8,
        _ => 1,
    }
}

fn ifd_len(entries: &[Entry]) -> usize {
    let out_of_line: usize = entries
        .iter()
        .filter(|(_, _, data)| data.len() > 4)
        .map(|(_, _, data)| data.len().next_multiple_of(2))
        .sum();
    2 + 12 * entries.len() + 4 + out_of_line
}

/// Writes one little-endian IFD (entries sorted by tag) with its out-of-line values after it.
fn write_ifd(out: &mut Vec<u8>, entries: &[Entry]) {
    let mut data_at = out.len() + 2 + 12 * entries.len() + 4;
    let mut data = Vec::new();
    out.extend_from_slice(&u16::try_from(entries.len()).expect("few").to_le_bytes());
    for (tag, kind, value) in entries {
        let count = u32::try_from(value.len() / value_size(*kind)).expect("small");
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        if value.len() <= 4 {
            let mut inline = value.clone();
            inline.resize(4, 0);
            out.extend_from_slice(&inline);
        } else {
            out.extend_from_slice(&u32::try_from(data_at).expect("small").to_le_bytes());
            data.extend_from_slice(value);
            if value.len() % 2 == 1 {
                data.push(0);
            }
            data_at += value.len().next_multiple_of(2);
        }
    }
    out.extend_from_slice(&0_u32.to_le_bytes());
    out.extend_from_slice(&data);
}

//! What the JPEG decoder does not do for us: walking the file's segments to prove it is
//! complete, and rewriting it without its metadata.
//!
//! zune-jpeg (behind the `image` crate) is lenient: it fills scan data that is missing with
//! grey instead of failing. Two shapes of broken file get through it: a file cut short
//! (no end-of-image marker: [`segments`] refuses it) and a file whose frame header claims
//! more pixels than its scan data holds (a 640 × 360 scan under a 4096 × 4096 header:
//! [`ensure_scan_covers_frame`] refuses it with a strict decode that runs into one-bits put
//! after the scan).
//!
//! [`strip_metadata`] keeps what the pixels need (tables, frame, scans, the colour profile
//! and the Adobe colour-transform flag) and drops every other application segment and
//! comment: EXIF (camera serial numbers, GPS), XMP, IPTC, MPF and whatever follows the
//! end-of-image marker (phones append secondary images there, with EXIF of their own). The
//! scan data is copied byte for byte, so nothing is re-encoded and no quality is lost.
//! Rotating a JPEG losslessly is only possible when its sides are whole MCUs, so the EXIF
//! orientation is kept instead, as the one tag of a new, minimal EXIF block: every browser
//! and photo viewer honours it, and the video worker applies it (`workers::media::still`).

use zune_core::bytestream::ZCursor;
use zune_core::options::DecoderOptions;

use super::processing::ImageError;

/// One marker segment, from its `FF xx` to the end of its payload; for a start-of-scan
/// (SOS) it also covers the entropy-coded data after it, up to the next marker that is
/// not a restart marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub marker: u8,
    pub start: usize,
    pub end: usize,
}

const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;
const APP0: u8 = 0xE0;
const APP1: u8 = 0xE1;
const APP2: u8 = 0xE2;
const APP14: u8 = 0xEE;
const APP15: u8 = 0xEF;
const COM: u8 = 0xFE;

/// The segments after SOI, the last one being EOI. Refuses a file that ends before its
/// end-of-image marker (a half-uploaded photo would otherwise be accepted with a grey lower
/// half) or has a segment with an impossible length. Bytes after the marker (some phones
/// append their own trailers) are not looked at.
pub(super) fn segments(bytes: &[u8]) -> Result<Vec<Segment>, ImageError> {
    let truncated = || ImageError::Corrupt("the JPEG ends before its end-of-image marker".into());
    let mut found: Vec<Segment> = Vec::new();
    let mut at = 2; // after SOI
    let mut in_scan = false;
    let mut scan_of_sos = false;
    loop {
        if in_scan {
            // Entropy-coded data: 0xFF is escaped as FF 00, restart markers FF D0–D7 and
            // fill bytes FF FF belong to it; any other marker ends the scan.
            let rest = bytes.get(at..).ok_or_else(truncated)?;
            let offset = rest
                .windows(2)
                .position(|pair| {
                    pair[0] == 0xFF
                        && pair[1] != 0x00
                        && pair[1] != 0xFF
                        && !(0xD0..=0xD7).contains(&pair[1])
                })
                .ok_or_else(truncated)?;
            at += offset;
            if scan_of_sos {
                if let Some(sos) = found.last_mut() {
                    sos.end = at;
                }
            }
            in_scan = false;
        }
        // Markers may be preceded by any number of fill bytes.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (&first, &marker) = (
            bytes.get(at).ok_or_else(truncated)?,
            bytes.get(at + 1).ok_or_else(truncated)?,
        );
        if first != 0xFF {
            // Stray bytes between segments: decoders skip to the next marker, and so do we
            // (they are not part of any segment, so a rewritten file leaves them out).
            in_scan = true;
            scan_of_sos = false;
            continue;
        }
        let start = at;
        match marker {
            EOI => {
                found.push(Segment {
                    marker,
                    start,
                    end: at + 2,
                });
                return Ok(found);
            }
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let length = bytes.get(at + 2..at + 4).ok_or_else(truncated)?;
                let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
                if length < 2 {
                    return Err(ImageError::Corrupt(
                        "a JPEG segment has a bad length".into(),
                    ));
                }
                at += 2 + length;
                if at > bytes.len() {
                    return Err(truncated());
                }
                in_scan = marker == SOS;
                scan_of_sos = in_scan;
            }
        }
        found.push(Segment {
            marker,
            start,
            end: at,
        });
    }
}

/// Refuses a JPEG whose scans hold fewer pixels than its frame header promises.
///
/// The lenient decode used for the pixels pads such a file with grey, and zune-jpeg does
/// so even in strict mode when the scan data stops at a marker (the end-of-image marker,
/// say): it takes the marker for the end of the data and feeds itself zeros. So the file,
/// rewritten without metadata and stray bytes ([`strip_metadata`]), is decoded strictly
/// once more with [`ONES`] one-bits put between its last scan's data and the end-of-image
/// marker. A complete scan never decodes them (the decoder only reads a few bytes ahead);
/// a short one runs into them, and a run of sixteen one-bits is no Huffman code (the
/// standard reserves it), so the strict decode fails. If it fails, a strict decode without
/// the one-bits tells a short scan (that one succeeds, padded with zeros) from strict
/// mode's other complaints (extra bytes, odd markers: things real cameras write and the
/// lenient decode handles), which are not refusals.
///
/// Only the last scan is checked this way; earlier scans of a progressive file end at the
/// next scan's marker and are padded silently, as before. It finds files cut short or
/// re-labelled, not files built to get past it (a Huffman table can be made to accept
/// one-bits; such a file is simply an image with grey in it). It costs a second decode of
/// JPEG uploads, a third when refusing; at ≤ 4096 px a side well under a second each.
pub(super) fn ensure_scan_covers_frame(bytes: &[u8]) -> Result<(), ImageError> {
    let clean = strip_metadata(bytes, 1)?;
    let Some(last_scan_end) = segments(&clean)?
        .iter()
        .rev()
        .find(|segment| segment.marker == SOS)
        .map(|segment| segment.end)
    else {
        return Err(ImageError::Corrupt("the JPEG has no scan data".into()));
    };
    let mut padded = Vec::with_capacity(last_scan_end + 2 * ONES + 2);
    padded.extend_from_slice(&clean[..last_scan_end]);
    for _ in 0..ONES {
        padded.extend_from_slice(&[0xFF, 0x00]); // 0xFF in scan data is escaped as FF 00
    }
    padded.extend_from_slice(&[0xFF, EOI]);
    if decodes_strictly(&padded) || !decodes_strictly(&clean) {
        return Ok(());
    }
    Err(ImageError::Corrupt(
        "the JPEG holds less scan data than its header promises".into(),
    ))
}

/// Bytes of one-bits after the last scan: more than the decoder's read-ahead (8 bytes).
const ONES: usize = 32;

fn decodes_strictly(bytes: &[u8]) -> bool {
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options)
        .decode()
        .is_ok()
}

/// The JPEG without its metadata: see the module docs for what is kept. `orientation`
/// (1–8, from the original's EXIF) is written back as the only EXIF tag unless it is 1.
pub(super) fn strip_metadata(bytes: &[u8], orientation: u16) -> Result<Vec<u8>, ImageError> {
    let segments = segments(bytes)?;
    let mut jfif = None;
    let mut kept = Vec::with_capacity(segments.len());
    for segment in &segments {
        let whole = &bytes[segment.start..segment.end];
        let payload = whole.get(4..).unwrap_or_default();
        match segment.marker {
            APP0 if payload.starts_with(b"JFIF\0") && payload.len() >= 14 => {
                // Version and pixel density; the embedded thumbnail, if any, is dropped.
                jfif.get_or_insert_with(|| {
                    [&[0xFF, APP0, 0x00, 0x10][..], &payload[..12], &[0, 0]].concat()
                });
            }
            APP2 if payload.starts_with(b"ICC_PROFILE\0") => kept.push(whole),
            APP14 if payload.starts_with(b"Adobe") => kept.push(whole),
            APP0..=APP15 | COM => {}
            _ => kept.push(whole),
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    if let Some(jfif) = jfif {
        out.extend_from_slice(&jfif);
    }
    if orientation != 1 {
        out.extend_from_slice(&exif_app1(&orientation_only_exif(orientation)));
    }
    for segment in kept {
        out.extend_from_slice(segment);
    }
    Ok(out)
}

/// A TIFF (an EXIF payload) whose only entry is the orientation.
pub(super) fn orientation_only_exif(orientation: u16) -> Vec<u8> {
    const ORIENTATION: u16 = 0x0112;
    const SHORT: u16 = 3;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8_u32.to_le_bytes()); // IFD0 right after the header
    tiff.extend_from_slice(&1_u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&ORIENTATION.to_le_bytes());
    tiff.extend_from_slice(&SHORT.to_le_bytes());
    tiff.extend_from_slice(&1_u32.to_le_bytes()); // one value, inline
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0_u32.to_le_bytes()); // no next IFD
    tiff
}

fn exif_app1(tiff: &[u8]) -> Vec<u8> {
    let length = u16::try_from(2 + 6 + tiff.len()).unwrap_or(u16::MAX);
    [&[0xFF, APP1][..], &length.to_be_bytes(), b"Exif\0\0", tiff].concat()
}

//! What an MP4 is, read from its boxes in-process: the containers every provider delivers,
//! without spawning ffprobe (whose start-up alone costs more than the rest of a probe).
//!
//! Only the plain, common shape is answered here: an `ftyp` box, one `moov` with a movie
//! duration, and tracks whose sample entry names a codec this module knows. Anything else
//! (fragmented files, unknown codecs, odd boxes, another container) is `None`, and the
//! caller asks ffprobe, so this module can only ever make probing faster, never looser.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The demuxer name ffprobe gives these files.
pub(super) const FORMAT_NAME: &str = "mov,mp4,m4a,3gp,3g2,mj2";

/// The largest `moov` read into memory; a bigger one is left to ffprobe.
const MAX_MOOV_BYTES: u64 = 64 * 1024 * 1024;

/// The facts ffprobe would report for the file's first video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mp4Facts {
    pub codec: &'static str,
    pub width: u32,
    pub height: u32,
    pub duration_ms: u64,
    pub has_audio: bool,
}

/// The facts of `file` if it is a plain MP4 this module understands, else `None`.
pub(super) fn read(file: &Path) -> Option<Mp4Facts> {
    let mut file = File::open(file).ok()?;
    let length = file.metadata().ok()?.len();
    let mut offset = 0;
    let mut saw_ftyp = false;
    while offset < length {
        file.seek(SeekFrom::Start(offset)).ok()?;
        let (kind, header, size) = box_header(&mut file, length - offset)?;
        match &kind {
            b"ftyp" => saw_ftyp = true,
            b"moof" => return None,
            b"moov" if saw_ftyp => {
                let body = size.checked_sub(header)?;
                if body > MAX_MOOV_BYTES {
                    return None;
                }
                let mut moov = vec![0; usize::try_from(body).ok()?];
                file.read_exact(&mut moov).ok()?;
                return movie(&moov);
            }
            _ if !saw_ftyp => return None,
            _ => {}
        }
        offset = offset.checked_add(size)?;
    }
    None
}

/// A box header at the reader's position: (type, header length, whole size).
fn box_header(file: &mut File, remaining: u64) -> Option<([u8; 4], u64, u64)> {
    let mut head = [0; 8];
    file.read_exact(&mut head).ok()?;
    let kind = [head[4], head[5], head[6], head[7]];
    let (header, size) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
        0 => (8, remaining),
        1 => {
            let mut large = [0; 8];
            file.read_exact(&mut large).ok()?;
            (16, u64::from_be_bytes(large))
        }
        size => (8, u64::from(size)),
    };
    (size >= header && size <= remaining).then_some((kind, header, size))
}

/// The child boxes of a box body: (type, body).
fn children(mut body: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut boxes = Vec::new();
    while !body.is_empty() {
        let size = usize::try_from(u32::from_be_bytes(body.get(0..4)?.try_into().ok()?)).ok()?;
        let kind: [u8; 4] = body.get(4..8)?.try_into().ok()?;
        // 64-bit and to-the-end sizes do not occur inside a `moov` written by an encoder.
        if size < 8 {
            return None;
        }
        boxes.push((kind, body.get(8..size)?));
        body = &body[size..];
    }
    Some(boxes)
}

fn child<'b>(boxes: &[([u8; 4], &'b [u8])], kind: &[u8; 4]) -> Option<&'b [u8]> {
    boxes.iter().find(|(k, _)| k == kind).map(|(_, body)| *body)
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// (timescale, duration) of an `mvhd` or `mdhd` body.
fn header_duration(body: &[u8]) -> Option<(u32, u64)> {
    match body.first()? {
        0 => Some((be32(body, 12)?, u64::from(be32(body, 16)?))),
        1 => Some((be32(body, 20)?, be64(body, 24)?)),
        _ => None,
    }
}

fn movie(moov: &[u8]) -> Option<Mp4Facts> {
    let boxes = children(moov)?;
    let (timescale, duration) = header_duration(child(&boxes, b"mvhd")?)?;
    if timescale == 0 || duration == 0 || duration == u64::from(u32::MAX) {
        return None;
    }
    let duration_ms = (duration as f64 * 1_000.0 / f64::from(timescale)).round() as u64;
    let mut video = None;
    let mut has_audio = false;
    for (_, trak) in boxes.iter().filter(|(kind, _)| kind == b"trak") {
        let trak = children(trak)?;
        let mdia = children(child(&trak, b"mdia")?)?;
        let handler = child(&mdia, b"hdlr")?.get(8..12)?;
        match handler {
            b"soun" => has_audio = true,
            b"vide" if video.is_none() => video = Some(visual_entry(&mdia)?),
            _ => {}
        }
    }
    let (codec, width, height) = video?;
    Some(Mp4Facts {
        codec,
        width,
        height,
        duration_ms,
        has_audio,
    })
}

/// The codec and coded frame size of a video track's first sample entry.
fn visual_entry(mdia: &[([u8; 4], &[u8])]) -> Option<(&'static str, u32, u32)> {
    let minf = children(child(mdia, b"minf")?)?;
    let stbl = children(child(&minf, b"stbl")?)?;
    let stsd = child(&stbl, b"stsd")?;
    // Version and flags, entry count, then the first entry as a box.
    let entry = stsd.get(8..)?;
    let kind: [u8; 4] = entry.get(4..8)?.try_into().ok()?;
    let codec = match &kind {
        b"avc1" | b"avc3" => "h264",
        b"hvc1" | b"hev1" => "hevc",
        b"av01" => "av1",
        b"vp09" => "vp9",
        _ => return None,
    };
    // Visual sample entry: 6 reserved, data reference index, 16 bytes pre-defined and
    // reserved, then width and height, after the 8-byte box header.
    let width = u32::from(u16::from_be_bytes(entry.get(32..34)?.try_into().ok()?));
    let height = u32::from(u16::from_be_bytes(entry.get(34..36)?.try_into().ok()?));
    (width > 0 && height > 0).then_some((codec, width, height))
}

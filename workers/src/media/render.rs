//! The simulator's renderer: a real H.264 MP4 of the requested size and length, showing the
//! prompt on a colour card whose hue turns over time, with a box sliding across and a running
//! clock, so every frame differs and players, thumbnails and checksums behave as with a real
//! provider. With a start image the video opens on it (a slow zoom) and fades to the card.
//!
//! The filter graph is built only from numbers we computed; the prompt, the font and the start
//! image never appear in it (see the module docs of `media`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::tools::{args, file_url, font_missing, MediaTools, PendingOutput, Tool};
use super::MediaError;

pub const DEFAULT_FPS: u32 = 24;
/// The longest video the simulator renders (the catalog offers up to 20 s).
pub const MAX_RENDER_SECONDS: u32 = 120;
const MAX_SIDE: u32 = 4096;
const MAX_FPS: u32 = 60;
/// Prompts longer than this many lines on screen end with an ellipsis.
const MAX_TEXT_LINES: usize = 6;

/// Demuxers a start image may be read with: still images only, never a playlist or a video.
const IMAGE_FORMATS: &str = "png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,tiff_pipe";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderRequest {
    pub prompt: String,
    pub duration_seconds: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Image-to-video: the video opens on this image (slowly zooming) and fades to the card.
    pub start_image: Option<PathBuf>,
    /// Varies colours and motion deterministically; without it they follow from the prompt.
    pub seed: Option<u64>,
}

impl RenderRequest {
    /// A text-to-video request at [`DEFAULT_FPS`].
    pub fn new(prompt: impl Into<String>, duration_seconds: u32, width: u32, height: u32) -> Self {
        RenderRequest {
            prompt: prompt.into(),
            duration_seconds,
            width,
            height,
            fps: DEFAULT_FPS,
            start_image: None,
            seed: None,
        }
    }

    fn validate(&self) -> Result<(), MediaError> {
        let invalid = |message: String| Err(MediaError::InvalidRequest(message));
        if self.duration_seconds == 0 || self.duration_seconds > MAX_RENDER_SECONDS {
            return invalid(format!(
                "duration must be 1 to {MAX_RENDER_SECONDS} seconds, not {}",
                self.duration_seconds
            ));
        }
        for (name, side) in [("width", self.width), ("height", self.height)] {
            // H.264 in yuv420p halves the chroma planes, so both sides must be even.
            if !(16..=MAX_SIDE).contains(&side) || !side.is_multiple_of(2) {
                return invalid(format!(
                    "{name} must be an even number from 16 to {MAX_SIDE}, not {side}"
                ));
            }
        }
        if self.fps == 0 || self.fps > MAX_FPS {
            return invalid(format!("fps must be 1 to {MAX_FPS}, not {}", self.fps));
        }
        Ok(())
    }
}

/// Frame size for an aspect ratio ("16:9", "9:16", "1:1") at a resolution ("480p", "720p",
/// "1080p", "4k"), named by its short side as providers do: 9:16 at 720p is 720x1280.
pub fn dimensions(aspect_ratio: &str, resolution: &str) -> Result<(u32, u32), MediaError> {
    let short: u32 = match resolution.trim().to_ascii_lowercase().as_str() {
        "480p" => 480,
        "720p" => 720,
        "1080p" => 1080,
        "4k" | "2160p" => 2160,
        other => {
            return Err(MediaError::InvalidRequest(format!(
                "unsupported resolution {other:?}; use 480p, 720p, 1080p or 4k"
            )))
        }
    };
    // 480 * 16 / 9 is 853.3: round up to the even 854 every encoder expects.
    let long = (short * 16).div_ceil(9).next_multiple_of(2);
    match aspect_ratio.trim() {
        "16:9" => Ok((long, short)),
        "9:16" => Ok((short, long)),
        "1:1" => Ok((short, short)),
        other => Err(MediaError::InvalidRequest(format!(
            "unsupported aspect ratio {other:?}; use 16:9, 9:16 or 1:1"
        ))),
    }
}

/// Renders `request` into `output` (an MP4), replacing it only once the render succeeded.
#[tracing::instrument(skip_all, fields(
    width = request.width,
    height = request.height,
    duration_seconds = request.duration_seconds,
    image = request.start_image.is_some(),
))]
pub async fn render_simulated(
    tools: &MediaTools,
    request: &RenderRequest,
    output: &Path,
) -> Result<(), MediaError> {
    request.validate()?;
    // The prompt and font go into a scratch directory that ffmpeg runs in, so the filter graph
    // names them by fixed relative names and never contains a user-controlled string.
    let work = tempfile::tempdir()?;
    let layout = TextLayout::for_frame(&request.prompt, request.width, request.height);
    tokio::fs::write(work.path().join(PROMPT_FILE), &layout.text).await?;
    tokio::fs::write(work.path().join(CLOCK_FILE), "%{pts:hms}").await?;
    let font = match &tools.font {
        Some(font) => {
            tokio::fs::copy(font, work.path().join(FONT_FILE))
                .await
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::NotFound => font_missing(font),
                    _ => MediaError::Io(error),
                })?;
            FontChoice::File
        }
        None => FontChoice::Fontconfig,
    };

    let mut command = args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-y",
    ]);
    if let Some(image) = &request.start_image {
        // Fail with the path in the message rather than ffmpeg's "No such file".
        tokio::fs::metadata(image).await.map_err(|error| {
            MediaError::Io(std::io::Error::new(
                error.kind(),
                format!("start image {}: {error}", image.display()),
            ))
        })?;
        command.extend(args([
            "-protocol_whitelist",
            "file",
            "-format_whitelist",
            IMAGE_FORMATS,
            "-i",
        ]));
        command.push(file_url(image)?);
    }
    let graph = filter_graph(request, &layout, font);
    let pending = PendingOutput::beside(output)?;
    command.extend(args(["-filter_complex"]));
    command.push(OsString::from(graph));
    command.extend(args([
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-movflags",
        "+faststart",
        "-t",
    ]));
    command.push(OsString::from(request.duration_seconds.to_string()));
    command.extend(args(["-f", "mp4"]));
    command.push(pending.url()?);

    tools.run(Tool::Ffmpeg, command, Some(work.path())).await?;
    pending.commit("ffmpeg").await
}

const PROMPT_FILE: &str = "prompt.txt";
const CLOCK_FILE: &str = "clock.txt";
const FONT_FILE: &str = "font.ttf";

#[derive(Debug, Clone, Copy)]
enum FontChoice {
    /// The configured font, copied to [`FONT_FILE`] in the working directory.
    File,
    Fontconfig,
}

impl FontChoice {
    fn option(self) -> String {
        match self {
            FontChoice::File => format!("fontfile={FONT_FILE}"),
            FontChoice::Fontconfig => "font=Sans".to_owned(),
        }
    }
}

/// The ffmpeg filter graph: `[v]` video and `[a]` silent stereo audio, both `duration` long.
fn filter_graph(request: &RenderRequest, layout: &TextLayout, font: FontChoice) -> String {
    let (w, h, fps) = (request.width, request.height, request.fps);
    let d = request.duration_seconds;
    let seed = request.seed.unwrap_or_else(|| prompt_seed(&request.prompt));
    let look = Look::from_seed(seed);
    let box_side = (w.min(h) / 8).max(4);
    let font = font.option();
    let font_size = layout.font_size;
    let border = (font_size / 12).max(1);
    let clock_size = (font_size * 2 / 3).max(8);
    let margin = clock_size / 2;
    // Expressions avoid commas, so they need no escaping inside the graph.
    let card = format!(
        "color=c=0x{bg}:s={w}x{h}:r={fps}:d={d},format=yuv420p,hue=H=2*PI*t/{d}[bg];\
         color=c=0x{fg}:s={box_side}x{box_side}:r={fps}:d={d}[box];\
         [bg][box]overlay=x='(W-w)*(0.5+0.5*sin(2*PI*(t/{d}+{phase})))':y='H-h-H/10':shortest=1,\
         drawtext={font}:textfile={PROMPT_FILE}:expansion=none:fontsize={font_size}:\
         fontcolor=white:borderw={border}:bordercolor=black@0.6:line_spacing={spacing}:\
         x=(w-text_w)/2:y=(h-text_h)/2:fix_bounds=1",
        bg = look.background,
        fg = look.box_colour,
        phase = look.phase,
        spacing = font_size / 4,
    );
    let clock = format!(
        "drawtext={font}:textfile={CLOCK_FILE}:fontsize={clock_size}:fontcolor=white@0.85:\
         borderw=1:bordercolor=black@0.5:x={margin}:y={margin}[v]"
    );
    let audio = format!("anullsrc=r=48000:cl=stereo,atrim=duration={d}[a]");
    if request.start_image.is_none() {
        return format!("{card},{clock};{audio}");
    }
    // Image-to-video: the image (scaled to cover the frame) zooms in slowly for the first half,
    // fading out from 30% to 50% of the video to reveal the card underneath.
    let total_frames = u64::from(d) * u64::from(fps);
    let image_frames = total_frames.div_ceil(2).max(1);
    let fade_start = f64::from(d) * 0.3;
    let fade_length = f64::from(d) * 0.2;
    let image = format!(
        "[0:v]trim=end_frame=1,scale={w}:{h}:force_original_aspect_ratio=increase,\
         crop={w}:{h},setsar=1,\
         zoompan=z='1+0.15*on/{image_frames}':x='iw/2-iw/zoom/2':y='ih/2-ih/zoom/2':\
         d={image_frames}:s={w}x{h}:fps={fps},\
         format=yuva420p,fade=t=out:st={fade_start}:d={fade_length}:alpha=1[image]"
    );
    format!("{card}[card];{image};[card][image]overlay=eof_action=pass,{clock};{audio}")
}

/// Colours and motion derived from a seed.
struct Look {
    background: String,
    box_colour: String,
    /// Where in its sweep the box starts, as a fraction of a cycle.
    phase: f64,
}

impl Look {
    fn from_seed(seed: u64) -> Look {
        let bits = splitmix64(seed);
        let hue = (bits % 360) as f64;
        let phase = ((bits >> 16) % 100) as f64 / 100.0;
        Look {
            background: rgb_hex(hue, 0.6, 0.45),
            box_colour: rgb_hex((hue + 180.0) % 360.0, 0.35, 0.95),
            phase,
        }
    }
}

fn prompt_seed(prompt: &str) -> u64 {
    let digest = Sha256::digest(prompt.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `RRGGBB` for a colour given as hue (degrees), saturation and value (0..=1).
fn rgb_hex(hue: f64, saturation: f64, value: f64) -> String {
    let chroma = value * saturation;
    let sector = hue / 60.0;
    let x = chroma * (1.0 - (sector % 2.0 - 1.0).abs());
    let (r, g, b) = match sector as u32 {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    let m = value - chroma;
    let byte = |c: f64| ((c + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

/// The prompt as it goes on screen: control characters gone, words wrapped to the frame,
/// at most [`MAX_TEXT_LINES`] lines (the last one ending in "…" if the prompt was longer).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TextLayout {
    text: String,
    font_size: u32,
}

impl TextLayout {
    fn for_frame(prompt: &str, width: u32, height: u32) -> TextLayout {
        let font_size = (width.min(height) / 16).clamp(8, 96);
        // DejaVu Sans averages about 0.55 em per character; 0.62 leaves room for wide ones,
        // and drawtext's fix_bounds keeps anything wider on screen.
        let columns = ((f64::from(width) * 0.9) / (f64::from(font_size) * 0.62)) as usize;
        let rows = ((f64::from(height) * 0.6) / (f64::from(font_size) * 1.25)) as usize;
        let text = wrap(prompt, columns.max(4), rows.clamp(1, MAX_TEXT_LINES));
        TextLayout { text, font_size }
    }
}

fn wrap(prompt: &str, columns: usize, rows: usize) -> String {
    let cleaned: String = prompt
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut truncated = false;
    'words: for word in cleaned.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let needed = word.len() + usize::from(used > 0);
            if used + needed <= columns {
                if used > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used == 0 {
                // A word longer than a line is split across lines.
                let rest = word.split_off(columns);
                line.extend(word.iter());
                word = rest;
            }
            lines.push(std::mem::take(&mut line));
            if lines.len() == rows {
                truncated = true;
                break 'words;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if truncated {
        if let Some(last) = lines.last_mut() {
            let mut kept: Vec<char> = last.chars().collect();
            kept.truncate(columns.saturating_sub(1));
            while kept.last().is_some_and(|c| c.is_whitespace()) {
                kept.pop();
            }
            *last = kept.into_iter().chain(['…']).collect();
        }
    }
    if lines.is_empty() {
        return "(empty prompt)".to_owned();
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_prompts_stay_on_one_line() {
        assert_eq!(wrap("a red fox", 20, 3), "a red fox");
    }

    #[test]
    fn long_prompts_wrap_at_word_boundaries() {
        assert_eq!(
            wrap("the quick brown fox jumps over", 10, 5),
            "the quick\nbrown fox\njumps over"
        );
    }

    #[test]
    fn prompts_beyond_the_last_line_end_with_an_ellipsis() {
        let text = wrap("one two three four five six seven eight", 9, 2);
        assert_eq!(text, "one two\nthree…");
        assert!(text.lines().all(|l| l.chars().count() <= 9));
    }

    #[test]
    fn words_longer_than_a_line_are_split() {
        assert_eq!(wrap("abcdefghij", 4, 5), "abcd\nefgh\nij");
    }

    #[test]
    fn control_characters_and_newlines_become_spaces() {
        assert_eq!(wrap("a\nb\tc\0d\r\ne", 40, 3), "a b c d e");
    }

    #[test]
    fn an_empty_prompt_is_shown_as_such() {
        assert_eq!(wrap(" \n\t", 10, 2), "(empty prompt)");
    }

    #[test]
    fn the_filter_graph_never_contains_the_prompt() {
        let mut request = RenderRequest::new("x'; drawbox=x=0:y=0 % \\ [v] {}", 2, 320, 180);
        let layout = TextLayout::for_frame(&request.prompt, 320, 180);
        let graph = filter_graph(&request, &layout, FontChoice::File);
        assert!(!graph.contains("drawbox"), "{graph}");
        request.start_image = Some(PathBuf::from("/tmp/it's:[0].png"));
        let graph = filter_graph(&request, &layout, FontChoice::File);
        assert!(
            !graph.contains("drawbox") && !graph.contains("it's"),
            "{graph}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_look_and_others_differ() {
        assert_eq!(Look::from_seed(7).background, Look::from_seed(7).background);
        let looks: std::collections::HashSet<String> =
            (0..20).map(|s| Look::from_seed(s).background).collect();
        assert!(looks.len() > 10);
    }

    #[test]
    fn colours_are_six_hex_digits() {
        for hue in [0.0, 59.9, 60.0, 180.0, 300.0, 359.9] {
            let hex = rgb_hex(hue, 0.6, 0.45);
            assert_eq!(hex.len(), 6, "{hue}");
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{hex}");
        }
        assert_eq!(rgb_hex(0.0, 1.0, 1.0), "ff0000");
        assert_eq!(rgb_hex(120.0, 1.0, 1.0), "00ff00");
    }

    #[test]
    fn requests_with_odd_or_zero_sizes_are_rejected() {
        for request in [
            RenderRequest::new("p", 0, 320, 180),
            RenderRequest::new("p", 2, 321, 180),
            RenderRequest::new("p", 2, 320, 8),
            RenderRequest::new("p", MAX_RENDER_SECONDS + 1, 320, 180),
            RenderRequest {
                fps: 0,
                ..RenderRequest::new("p", 2, 320, 180)
            },
        ] {
            assert!(
                matches!(request.validate(), Err(MediaError::InvalidRequest(_))),
                "{request:?}"
            );
        }
        assert!(RenderRequest::new("p", 2, 320, 180).validate().is_ok());
    }
}

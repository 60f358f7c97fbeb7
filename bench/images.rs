//! Image upload benchmark, printing figures (run: `cargo bench --bench images`).
//!
//! A 4096×4096 JPEG, quality 90 (a gradient with structure and grain, so it compresses like
//! a photo rather than like noise), goes through `framegate_api::images::process`: the whole
//! upload check (magic bytes, header, end-of-image walk, EXIF, full decode under limits, 512 px
//! thumbnail at quality 85, SHA-256). The same file goes through libvips' `vipsthumbnail -s 512`
//! at the same output quality, the usual reference for fast thumbnailing. Each figure is the
//! median of FRAMEGATE_BENCH_RUNS (10) runs after one warm-up run; vipsthumbnail's include
//! starting the process, whose share is timed on its own. Needs `vipsthumbnail`
//! (`scripts/install-bench-tools.sh`); without it that comparison is skipped with a message.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framegate_api::images::{process, ImageLimits, THUMBNAIL_MAX_SIDE};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use rand::{Rng as _, SeedableRng as _};

const SIDE: u32 = 4096;
const QUALITY: u8 = 90;
/// The quality `process` encodes thumbnails at, asked of vipsthumbnail too.
const THUMBNAIL_QUALITY: u8 = 85;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs `f` once to warm up, then `runs` times; the median time.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// A photo-like test image: smooth colour gradients, a few soft waves and per-pixel grain.
fn photo_like_jpeg() -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let side = f64::from(SIDE);
    let image = RgbImage::from_fn(SIDE, SIDE, |x, y| {
        let (u, v) = (f64::from(x) / side, f64::from(y) / side);
        let wave = 24.0 * ((u * 37.0).sin() * (v * 23.0).cos());
        let mut channel = |base: f64| {
            let grain = f64::from(rng.gen_range(-10_i32..=10));
            (base + wave + grain).clamp(0.0, 255.0) as u8
        };
        image::Rgb([
            channel(40.0 + 170.0 * u),
            channel(60.0 + 140.0 * v),
            channel(200.0 - 120.0 * (u + v) / 2.0),
        ])
    });
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, QUALITY)
        .encode_image(&image)
        .expect("encode the test JPEG");
    jpeg
}

fn vipsthumbnail_available() -> bool {
    Command::new("vipsthumbnail")
        .arg("--vips-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn run_vips(args: &[&std::ffi::OsStr]) {
    let output = Command::new("vipsthumbnail")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("run vipsthumbnail");
    assert!(
        output.status.success(),
        "vipsthumbnail failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn main() {
    let runs = env_usize("FRAMEGATE_BENCH_RUNS", 10).max(1);
    let limits = ImageLimits::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("photo-4096.jpg");

    let started = Instant::now();
    let bytes = photo_like_jpeg();
    std::fs::write(&input, &bytes).expect("write the test JPEG");
    println!(
        "== 4096x4096 JPEG upload: validation + thumbnail, median of {runs} runs (after 1 warm-up) =="
    );
    println!(
        "test image                    : {SIDE}x{SIDE}, quality {QUALITY}, {:.1} MiB (limit {:.0} MiB), made in {:.1} s",
        bytes.len() as f64 / (1024.0 * 1024.0),
        limits.max_bytes as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );

    let processed = process(&bytes, &limits).expect("the test JPEG is a valid upload");
    let thumbnail = image::load_from_memory(&processed.thumbnail_jpeg).expect("thumbnail");
    assert_eq!(
        thumbnail.width().max(thumbnail.height()),
        THUMBNAIL_MAX_SIDE,
        "the thumbnail's longest side"
    );
    let ours = median_of(runs, || {
        let processed = process(&bytes, &limits).expect("process");
        std::hint::black_box(processed);
    });
    let decode = median_of(runs, || {
        let decoded =
            image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).expect("decode");
        std::hint::black_box(decoded);
    });
    println!(
        "images::process               : {:>8.1} ms   ({}x{} thumbnail, {} bytes)",
        millis(ours),
        thumbnail.width(),
        thumbnail.height(),
        processed.thumbnail_jpeg.len()
    );
    println!(
        "  of which full-size decode   : {:>8.1} ms   (image crate, 4096x4096 RGB, no shrink-on-load)",
        millis(decode)
    );

    if !vipsthumbnail_available() {
        println!(
            "vipsthumbnail                 : not installed, comparison skipped. Install it with \
             scripts/install-bench-tools.sh (Debian: apt-get install -y libvips-tools) and run again."
        );
        return;
    }
    let output = dir
        .path()
        .join(format!("vips-thumbnail.jpg[Q={THUMBNAIL_QUALITY}]"));
    let size = THUMBNAIL_MAX_SIDE.to_string();
    let vips = median_of(runs, || {
        run_vips(&[
            input.as_os_str(),
            "-s".as_ref(),
            size.as_ref(),
            "-o".as_ref(),
            output.as_os_str(),
        ])
    });
    let start_only = median_of(runs, || run_vips(&["--vips-version".as_ref()]));
    check_vips_output(&dir.path().join("vips-thumbnail.jpg"));
    println!(
        "vipsthumbnail -s {THUMBNAIL_MAX_SIDE}          : {:>8.1} ms   (whole process, Q={THUMBNAIL_QUALITY})",
        millis(vips)
    );
    println!(
        "  of which process start      : {:>8.1} ms   (`vipsthumbnail --vips-version`)",
        millis(start_only)
    );
    println!(
        "ratio process / vipsthumbnail : {:>8.2}   (target <= 2)",
        ours.as_secs_f64() / vips.as_secs_f64()
    );
}

fn check_vips_output(path: &Path) {
    let thumbnail = image::open(path).expect("vipsthumbnail's output");
    assert_eq!(
        thumbnail.width().max(thumbnail.height()),
        THUMBNAIL_MAX_SIDE,
        "vipsthumbnail's longest side"
    );
}

//! The media module against the real ffmpeg and ffprobe: renders are tiny (320x180, 2 s) so the
//! suite stays fast on a small machine. Without ffmpeg these tests fail, pointing at
//! `scripts/install-ffmpeg.sh`: the simulator is the default provider, so a machine without
//! ffmpeg cannot run Framegate and must not pass its tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use framegate_workers::media::{
    dimensions, extract_poster, make_thumbnail, probe, render_simulated, validate_video,
    Expectation, MediaError, MediaTools, RenderRequest,
};
use tempfile::TempDir;

async fn tools() -> MediaTools {
    let tools = MediaTools {
        timeout: Duration::from_secs(120),
        ..MediaTools::from_env().expect("media configuration")
    };
    if let Err(error) = tools.check().await {
        panic!(
            "these tests need ffmpeg, ffprobe and the simulator font: {error}\n\
             install them with scripts/install-ffmpeg.sh"
        );
    }
    tools
}

fn small(prompt: &str) -> RenderRequest {
    RenderRequest {
        seed: Some(7),
        ..RenderRequest::new(prompt, 2, 320, 180)
    }
}

async fn rendered(tools: &MediaTools, dir: &TempDir, request: &RenderRequest) -> PathBuf {
    let output = dir.path().join("video.mp4");
    render_simulated(tools, request, &output)
        .await
        .expect("render");
    output
}

/// The average colour of the frame at `at_seconds`, decoded by ffmpeg.
async fn average_rgb(tools: &MediaTools, video: &Path, at_seconds: f64) -> [u8; 3] {
    let pixels = frame_pixels(tools, video, at_seconds, 1).await;
    [pixels[0], pixels[1], pixels[2]]
}

/// The frame at `at_seconds` scaled down to `side`x`side` RGB pixels.
async fn frame_pixels(tools: &MediaTools, video: &Path, at_seconds: f64, side: u32) -> Vec<u8> {
    let output = tokio::process::Command::new(&tools.ffmpeg)
        .args(["-v", "error", "-ss", &format!("{at_seconds}"), "-i"])
        .arg(video)
        .args(["-frames:v", "1", "-vf", &format!("scale={side}:{side}")])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout.len(), (side * side * 3) as usize);
    output.stdout
}

fn assert_close_to(duration_ms: u64, expected_ms: u64) {
    assert!(
        duration_ms.abs_diff(expected_ms) <= 100,
        "lasts {duration_ms} ms, expected {expected_ms} ± 100"
    );
}

#[tokio::test]
async fn a_landscape_render_is_an_h264_mp4_of_the_requested_size_and_length() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("a red fox running through snow")).await;

    let report = probe(&tools, &video).await.expect("probe");
    assert_eq!(report.codec, "h264");
    assert_eq!((report.width, report.height), (320, 180));
    assert_close_to(report.duration_ms, 2_000);
    assert!(report.format_name.contains("mp4"), "{}", report.format_name);
    assert!(report.has_audio, "the simulator adds a silent audio track");
    let bytes = std::fs::read(&video).expect("read video");
    assert_eq!(report.bytes, bytes.len() as u64);
    assert_eq!(report.sha256.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&video)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "published files are readable, not 0600"
        );
    }

    // +faststart: the index (moov) comes before the media data (mdat).
    let position = |tag: &[u8]| bytes.windows(4).position(|w| w == tag);
    let (moov, mdat) = (position(b"moov"), position(b"mdat"));
    assert!(
        moov.is_some() && moov < mdat,
        "moov {moov:?}, mdat {mdat:?}"
    );
}

#[tokio::test]
async fn frames_of_a_render_change_over_time() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("moving pictures")).await;

    let first = frame_pixels(&tools, &video, 0.0, 16).await;
    let later = frame_pixels(&tools, &video, 1.5, 16).await;
    assert_ne!(first, later);
}

#[tokio::test]
async fn a_portrait_render_is_taller_than_wide() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let request = RenderRequest::new("a lighthouse at dusk", 2, 180, 320);
    let video = rendered(&tools, &dir, &request).await;

    let report = probe(&tools, &video).await.expect("probe");
    assert_eq!(
        (report.codec.as_str(), report.width, report.height),
        ("h264", 180, 320)
    );
    assert_close_to(report.duration_ms, 2_000);
}

#[tokio::test]
async fn prompt_text_cannot_inject_filter_syntax() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    // Were this spliced into the graph, the frame would be filled red (or the graph broken).
    let prompt = "x'; drawbox=x=0:y=0:w=iw:h=ih:c=red:t=fill, [v] % %{pts} \\ \\n \n {} \"\"; \
                  drawtext=text=pwned:fontsize=400 \0 \u{1b}[31m";
    let video = rendered(&tools, &dir, &small(prompt)).await;

    let report = validate_video(
        &tools,
        &video,
        &Expectation {
            size: Some((320, 180)),
            codecs: vec!["h264".to_owned()],
            ..Expectation::duration(2, 100)
        },
    )
    .await
    .expect("valid video");
    assert_eq!((report.width, report.height), (320, 180));
    let [red, green, blue] = average_rgb(&tools, &video, 1.0).await;
    assert!(
        !(red > 200 && green < 60 && blue < 60),
        "the frame is red: {red},{green},{blue}"
    );
}

#[tokio::test]
async fn a_very_long_prompt_renders() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let prompt = "an extraordinarily long prompt ".repeat(200) + &"x".repeat(500);
    let video = rendered(&tools, &dir, &small(&prompt)).await;
    let report = probe(&tools, &video).await.expect("probe");
    assert_eq!((report.width, report.height), (320, 180));
}

#[tokio::test]
async fn a_render_with_a_start_image_opens_on_the_image_and_ends_on_the_card() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    // A '%' in the name would turn into a sequence pattern if read as an image2 pattern.
    let image = dir.path().join("start 100%.png");
    let status = tokio::process::Command::new(&tools.ffmpeg)
        .args(["-v", "error", "-f", "lavfi", "-i", "color=red:s=400x300"])
        .args(["-frames:v", "1", "-f", "image2", "-update", "1"])
        .arg(&image)
        .kill_on_drop(true)
        .status()
        .await
        .expect("run ffmpeg");
    assert!(status.success());
    let request = RenderRequest {
        start_image: Some(image),
        ..small("the red square becomes a title card")
    };
    let video = rendered(&tools, &dir, &request).await;

    let report = probe(&tools, &video).await.expect("probe");
    assert_eq!((report.width, report.height), (320, 180));
    assert_close_to(report.duration_ms, 2_000);
    let [red, green, blue] = average_rgb(&tools, &video, 0.1).await;
    assert!(
        red > 200 && green < 60 && blue < 60,
        "first frames are the image: {red},{green},{blue}"
    );
    let [red, green, blue] = average_rgb(&tools, &video, 1.8).await;
    assert!(
        !(red > 200 && green < 60 && blue < 60),
        "the end is the card: {red},{green},{blue}"
    );
}

#[tokio::test]
async fn a_missing_start_image_is_an_io_error_naming_it() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let request = RenderRequest {
        start_image: Some(dir.path().join("nowhere.png")),
        ..small("p")
    };
    let error = render_simulated(&tools, &request, &dir.path().join("video.mp4"))
        .await
        .expect_err("no image");
    assert!(matches!(error, MediaError::Io(_)), "{error:?}");
    assert!(error.to_string().contains("nowhere.png"), "{error}");
}

#[tokio::test]
async fn a_start_image_that_is_a_video_is_refused() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("first")).await;
    let request = RenderRequest {
        start_image: Some(video),
        ..small("second")
    };
    let output = dir.path().join("second.mp4");
    let error = render_simulated(&tools, &request, &output)
        .await
        .expect_err("a video is not a start image");
    assert!(matches!(error, MediaError::Failed { .. }), "{error:?}");
    assert!(!output.exists());
}

#[tokio::test]
async fn an_invalid_request_is_refused_before_running_ffmpeg() {
    let tools = MediaTools {
        ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
        ..MediaTools::default()
    };
    let dir = TempDir::new().expect("temp dir");
    let error = render_simulated(
        &tools,
        &RenderRequest::new("p", 2, 321, 180),
        &dir.path().join("video.mp4"),
    )
    .await
    .expect_err("odd width");
    assert_eq!(error.code(), "invalid_media_request");
}

#[tokio::test]
async fn a_render_over_its_time_limit_is_killed_and_leaves_no_file() {
    let tools = MediaTools {
        timeout: Duration::from_millis(1),
        ..tools().await
    };
    let dir = TempDir::new().expect("temp dir");
    let output = dir.path().join("video.mp4");
    let error = render_simulated(&tools, &small("slow"), &output)
        .await
        .expect_err("timed out");
    assert!(matches!(error, MediaError::TimedOut { .. }), "{error:?}");
    assert!(error.is_retryable());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_missing_font_is_reported_as_a_missing_tool() {
    let tools = MediaTools {
        font: Some(PathBuf::from("/nonexistent/font.ttf")),
        ..tools().await
    };
    let dir = TempDir::new().expect("temp dir");
    let error = render_simulated(&tools, &small("p"), &dir.path().join("v.mp4"))
        .await
        .expect_err("no font");
    assert_eq!(error.code(), "media_tool_missing");
    assert!(
        error.to_string().contains("FRAMEGATE_SIMULATOR_FONT"),
        "{error}"
    );
    let check = tools.check().await.expect_err("check sees it too");
    assert_eq!(check.code(), "media_tool_missing");
}

#[tokio::test]
async fn a_missing_ffmpeg_points_to_the_install_script() {
    let tools = MediaTools {
        ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
        ..MediaTools::default()
    };
    let error = tools.check().await.expect_err("no ffmpeg");
    assert!(
        matches!(&error, MediaError::ToolMissing { tool, .. } if tool == "ffmpeg"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("scripts/install-ffmpeg.sh"),
        "{error}"
    );
}

#[tokio::test]
async fn the_poster_is_a_full_size_jpeg_of_the_requested_moment() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("poster")).await;
    let poster = dir.path().join("poster.jpg");

    extract_poster(&tools, &video, 1.0, &poster)
        .await
        .expect("poster");
    let bytes = std::fs::read(&poster).expect("read poster");
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "JPEG magic");
    let report = probe(&tools, &poster).await.expect("probe poster");
    assert_eq!(report.codec, "mjpeg");
    assert_eq!((report.width, report.height), (320, 180));
}

#[tokio::test]
async fn a_poster_time_past_the_end_takes_the_last_moment() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("short")).await;
    let poster = dir.path().join("poster.jpg");

    extract_poster(&tools, &video, 60.0, &poster)
        .await
        .expect("poster");
    let report = probe(&tools, &poster).await.expect("probe poster");
    assert_eq!((report.width, report.height), (320, 180));

    let error = extract_poster(&tools, &video, f64::NAN, &poster)
        .await
        .expect_err("NaN");
    assert_eq!(error.code(), "invalid_media_request");
}

#[tokio::test]
async fn the_thumbnail_fits_its_longest_side_and_keeps_the_aspect_ratio() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &RenderRequest::new("tall", 2, 180, 320)).await;
    let thumbnail = dir.path().join("thumb.jpg");

    make_thumbnail(&tools, &video, 160, &thumbnail)
        .await
        .expect("thumbnail");
    let bytes = std::fs::read(&thumbnail).expect("read thumbnail");
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "JPEG magic");
    let report = probe(&tools, &thumbnail).await.expect("probe thumbnail");
    assert_eq!((report.width, report.height), (90, 160));
}

#[tokio::test]
async fn probing_a_text_file_is_an_invalid_video_naming_the_file() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let file = dir.path().join("notes.mp4");
    std::fs::write(&file, "this is not a video\n").expect("write");

    let error = probe(&tools, &file).await.expect_err("not a video");
    assert!(matches!(error, MediaError::InvalidVideo(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("notes.mp4") && message.contains("ffprobe"),
        "{message}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn probing_an_empty_or_missing_file_fails_clearly() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").expect("write");

    let error = probe(&tools, &empty).await.expect_err("empty");
    assert!(
        matches!(&error, MediaError::InvalidVideo(m) if m.contains("empty")),
        "{error:?}"
    );
    let error = probe(&tools, &dir.path().join("missing.mp4"))
        .await
        .expect_err("missing");
    assert!(matches!(error, MediaError::Io(_)), "{error:?}");
}

#[tokio::test]
async fn validation_rejects_a_duration_outside_the_expectation() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("two seconds")).await;

    validate_video(&tools, &video, &Expectation::duration(2, 100))
        .await
        .expect("two seconds is two seconds");
    let error = validate_video(&tools, &video, &Expectation::duration(8, 500))
        .await
        .expect_err("not eight seconds");
    assert!(
        matches!(&error, MediaError::InvalidVideo(m) if m.contains("expected 7500 to 8500 ms")),
        "{error:?}"
    );
}

#[tokio::test]
async fn validation_rejects_a_still_image() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("still")).await;
    let poster = dir.path().join("poster.jpg");
    extract_poster(&tools, &video, 0.5, &poster)
        .await
        .expect("poster");

    let error = validate_video(&tools, &poster, &Expectation::duration(0, 10_000))
        .await
        .expect_err("an image is not a video");
    assert!(
        matches!(&error, MediaError::InvalidVideo(m) if m.contains("still image")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_four_second_720p_render_finishes_well_within_the_default_timeout() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let (width, height) = dimensions("16:9", "720p").expect("dimensions");
    let started = Instant::now();
    let video = rendered(
        &tools,
        &dir,
        &RenderRequest::new("a full-size simulator render", 4, width, height),
    )
    .await;
    let elapsed = started.elapsed();

    let report = probe(&tools, &video).await.expect("probe");
    assert_eq!((report.width, report.height), (1280, 720));
    assert_close_to(report.duration_ms, 4_000);
    println!("4 s of 1280x720 rendered in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

#[test]
fn dimensions_cover_every_aspect_ratio_and_resolution() {
    let table = [
        ("16:9", "480p", (854, 480)),
        ("9:16", "480p", (480, 854)),
        ("1:1", "480p", (480, 480)),
        ("16:9", "720p", (1280, 720)),
        ("9:16", "720p", (720, 1280)),
        ("1:1", "720p", (720, 720)),
        ("16:9", "1080p", (1920, 1080)),
        ("9:16", "1080p", (1080, 1920)),
        ("1:1", "1080p", (1080, 1080)),
        ("16:9", "4k", (3840, 2160)),
    ];
    for (aspect, resolution, expected) in table {
        let size = dimensions(aspect, resolution).expect(resolution);
        assert_eq!(size, expected, "{aspect} at {resolution}");
        assert!(size.0.is_multiple_of(2) && size.1.is_multiple_of(2));
    }
    for (aspect, resolution) in [("4:3", "720p"), ("16:9", "360p"), ("", "")] {
        let error = dimensions(aspect, resolution).expect_err(aspect);
        assert_eq!(error.code(), "invalid_media_request");
    }
}

/// Runs ffmpeg with `args` (a test fixture maker, not the code under test).
fn ffmpeg(tools: &MediaTools, args: &[&str]) {
    let status = std::process::Command::new(&tools.ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
}

#[tokio::test]
async fn an_mp4_read_in_process_reports_what_ffprobe_reports() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let mut files = vec![rendered(&tools, &dir, &small("native")).await];
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    // With audio, moov at the front, HEVC, odd sizes and lengths, a 90 kHz timescale.
    let variants: [(&str, &[&str]); 4] = [
        (
            "audio.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=426x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440",
                "-t",
                "1.5",
                "-c:v",
                "libx264",
                "-c:a",
                "aac",
                "-pix_fmt",
                "yuv420p",
                "-shortest",
            ],
        ),
        (
            "faststart.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=200x356:rate=30",
                "-t",
                "3",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "+faststart",
            ],
        ),
        (
            "hevc.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x180:rate=24",
                "-t",
                "1",
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error",
                "-tag:v",
                "hvc1",
            ],
        ),
        (
            "timescale.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=24",
                "-t",
                "2.2",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-video_track_timescale",
                "90000",
            ],
        ),
    ];
    for (name, args) in variants {
        let mut all: Vec<&str> = args.to_vec();
        let out = path(name);
        all.push(&out);
        ffmpeg(&tools, &all);
        files.push(dir.path().join(name));
    }
    for file in &files {
        let native = probe(&tools, file).await.expect("probe");
        let reference = framegate_workers::media::probe_with_ffprobe(&tools, file)
            .await
            .expect("ffprobe");
        assert_eq!(native, reference, "{}", file.display());
    }
}

#[tokio::test]
async fn an_mp4_cut_short_or_with_a_broken_box_is_left_to_ffprobe_and_refused() {
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &small("cut")).await;
    let bytes = std::fs::read(&video).expect("read");
    // Cut inside the first box after `ftyp`: no movie header survives.
    let ftyp = u32::from_be_bytes(bytes[0..4].try_into().expect("size")) as usize;
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..ftyp + 12]).expect("write");
    let error = probe(&tools, &cut).await.expect_err("no moov");
    assert_eq!(error.code(), "invalid_video");
    // A box claiming more bytes than the file has.
    let mut broken = bytes.clone();
    broken[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let broken_path = dir.path().join("broken.mp4");
    std::fs::write(&broken_path, &broken).expect("write");
    assert!(probe(&tools, &broken_path).await.is_err());
}

#[tokio::test]
async fn poster_and_thumbnail_come_from_one_run_on_the_probe_report() {
    use framegate_workers::media::{extract_stills, Stills};
    let tools = tools().await;
    let dir = TempDir::new().expect("temp dir");
    let video = rendered(&tools, &dir, &RenderRequest::new("both", 2, 320, 180)).await;
    let report = probe(&tools, &video).await.expect("probe");
    let (poster, thumbnail) = (dir.path().join("p.jpg"), dir.path().join("t.jpg"));
    let stills = Stills {
        poster_at_seconds: 0.5,
        poster_jpeg: &poster,
        thumbnail_max_side: 160,
        thumbnail_jpeg: &thumbnail,
    };
    extract_stills(&tools, &video, &report, &stills)
        .await
        .expect("stills");
    let poster_report = probe(&tools, &poster).await.expect("poster");
    assert_eq!(
        (
            poster_report.codec.as_str(),
            poster_report.width,
            poster_report.height
        ),
        ("mjpeg", 320, 180)
    );
    let thumb_report = probe(&tools, &thumbnail).await.expect("thumbnail");
    assert_eq!((thumb_report.width, thumb_report.height), (160, 90));
    // The same frames the one-at-a-time functions take.
    let (single_poster, single_thumb) = (dir.path().join("sp.jpg"), dir.path().join("st.jpg"));
    extract_poster(&tools, &video, 0.5, &single_poster)
        .await
        .expect("poster");
    make_thumbnail(&tools, &video, 160, &single_thumb)
        .await
        .expect("thumbnail");
    assert_eq!(
        std::fs::read(&poster).expect("read"),
        std::fs::read(&single_poster).expect("read")
    );
    assert_eq!(
        std::fs::read(&thumbnail).expect("read"),
        std::fs::read(&single_thumb).expect("read")
    );
    // A video whose report says it is 2 s long but the stills are asked past a bad time.
    let bad = Stills {
        poster_at_seconds: f64::INFINITY,
        ..stills
    };
    let error = extract_stills(&tools, &video, &report, &bad)
        .await
        .expect_err("infinite");
    assert_eq!(error.code(), "invalid_media_request");
}

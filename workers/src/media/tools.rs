//! Where the ffmpeg binaries are, and how one invocation runs: spawned without a shell, bounded
//! by a timeout, killed if the caller goes away, its stderr kept for the error message. Outputs
//! are written beside their final path and renamed into place, so a killed or failed run never
//! leaves a half-written file under the name a caller will read.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{MediaError, INSTALL_HINT};

/// The font the simulator draws prompts with unless `FRAMEGATE_SIMULATOR_FONT` says otherwise
/// (Debian `fonts-dejavu-core`, pulled in by `ffmpeg`).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Long enough for a 20 s 1080p render on a small machine, short enough that a wedged ffmpeg
/// does not hold a worker slot for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How much of a failing tool's stderr ends up in the error.
const STDERR_TAIL_BYTES: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// TrueType font for the simulator's text. `None` lets ffmpeg ask fontconfig for "Sans".
    pub font: Option<PathBuf>,
    /// Upper bound for any single ffmpeg/ffprobe run.
    pub timeout: Duration,
}

impl Default for MediaTools {
    fn default() -> Self {
        MediaTools {
            ffmpeg: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
            font: Some(PathBuf::from(DEFAULT_FONT)),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Which binary an invocation runs; also its name in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Ffmpeg,
    Ffprobe,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ffmpeg => "ffmpeg",
            Tool::Ffprobe => "ffprobe",
        }
    }
}

impl MediaTools {
    /// Reads `FRAMEGATE_FFMPEG`, `FRAMEGATE_FFPROBE` (default: found on `PATH`),
    /// `FRAMEGATE_SIMULATOR_FONT` (default [`DEFAULT_FONT`]; empty means "ask fontconfig") and
    /// `FRAMEGATE_MEDIA_TIMEOUT_SECONDS` (default 300).
    pub fn from_env() -> Result<MediaTools, MediaError> {
        MediaTools::from_lookup(|name| std::env::var_os(name))
    }

    /// [`MediaTools::from_env`] over any source of variables (tests, config files).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<MediaTools, MediaError> {
        let defaults = MediaTools::default();
        let set = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let timeout = match lookup("FRAMEGATE_MEDIA_TIMEOUT_SECONDS") {
            None => defaults.timeout,
            Some(value) => {
                let seconds = value
                    .to_str()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .filter(|&s| s > 0)
                    .ok_or_else(|| {
                        MediaError::InvalidConfig(format!(
                            "FRAMEGATE_MEDIA_TIMEOUT_SECONDS must be a positive number of \
                             seconds, not {value:?}"
                        ))
                    })?;
                Duration::from_secs(seconds)
            }
        };
        Ok(MediaTools {
            ffmpeg: set("FRAMEGATE_FFMPEG").map_or(defaults.ffmpeg, PathBuf::from),
            ffprobe: set("FRAMEGATE_FFPROBE").map_or(defaults.ffprobe, PathBuf::from),
            font: match lookup("FRAMEGATE_SIMULATOR_FONT") {
                None => defaults.font,
                Some(value) if value.is_empty() => None,
                Some(value) => Some(PathBuf::from(value)),
            },
            timeout,
        })
    }

    /// Checks that ffmpeg and ffprobe run, that ffmpeg has what the simulator needs (libx264,
    /// drawtext) and that the configured font exists. Meant for start-up: fail fast with what to
    /// install rather than at the first video.
    #[tracing::instrument(skip_all)]
    pub async fn check(&self) -> Result<(), MediaError> {
        self.run(Tool::Ffprobe, args(["-hide_banner", "-version"]), None)
            .await?;
        self.run(Tool::Ffmpeg, args(["-hide_banner", "-version"]), None)
            .await?;
        let encoders = self
            .run(Tool::Ffmpeg, args(["-hide_banner", "-encoders"]), None)
            .await?;
        if !String::from_utf8_lossy(&encoders).contains("libx264") {
            return Err(missing(
                "the libx264 encoder in ffmpeg",
                format!("{} was built without libx264", self.ffmpeg.display()),
            ));
        }
        let filters = self
            .run(Tool::Ffmpeg, args(["-hide_banner", "-filters"]), None)
            .await?;
        if !String::from_utf8_lossy(&filters).contains("drawtext") {
            return Err(missing(
                "the drawtext filter in ffmpeg",
                format!(
                    "{} was built without libfreetype (drawtext)",
                    self.ffmpeg.display()
                ),
            ));
        }
        if let Some(font) = &self.font {
            if !tokio::fs::try_exists(font).await.unwrap_or(false) {
                return Err(font_missing(font));
            }
        }
        Ok(())
    }

    /// Runs one tool to completion and returns its stdout.
    pub(crate) async fn run(
        &self,
        tool: Tool,
        args: Vec<OsString>,
        cwd: Option<&Path>,
    ) -> Result<Vec<u8>, MediaError> {
        let program = match tool {
            Tool::Ffmpeg => &self.ffmpeg,
            Tool::Ffprobe => &self.ffprobe,
        };
        let mut command = Command::new(program);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let started = Instant::now();
        let child = command.spawn().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => missing(
                tool.name(),
                format!("could not run {} ({error})", program.display()),
            ),
            _ => MediaError::Io(error),
        })?;
        // On timeout the future owning the child is dropped, and kill_on_drop ends the process.
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| MediaError::TimedOut {
                tool: tool.name().to_owned(),
                after: self.timeout,
            })??;
        tracing::debug!(
            tool = tool.name(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            status = %output.status,
            "media tool finished"
        );
        if !output.status.success() {
            return Err(MediaError::Failed {
                tool: tool.name().to_owned(),
                status: output.status,
                stderr_tail: stderr_tail(&output.stderr),
            });
        }
        Ok(output.stdout)
    }
}

pub(crate) fn missing(tool: &str, detail: String) -> MediaError {
    MediaError::ToolMissing {
        tool: tool.to_owned(),
        hint: format!("{detail}; {INSTALL_HINT}"),
    }
}

pub(crate) fn font_missing(font: &Path) -> MediaError {
    missing(
        "the simulator font",
        format!(
            "{} does not exist (set FRAMEGATE_SIMULATOR_FONT to a TrueType file, or to an \
             empty value to use fontconfig)",
            font.display()
        ),
    )
}

/// The last lines of stderr, enough to see why ffmpeg gave up.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= STDERR_TAIL_BYTES {
        return text.to_owned();
    }
    let mut start = text.len() - STDERR_TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

pub(crate) fn args<const N: usize>(items: [&str; N]) -> Vec<OsString> {
    items.into_iter().map(OsString::from).collect()
}

/// An input or output path as ffmpeg must see it: absolute (renders run in their own working
/// directory) and behind the `file:` protocol, so names like `http:...` or `-y` stay file names.
pub(crate) fn file_url(path: &Path) -> Result<OsString, MediaError> {
    let absolute = std::path::absolute(path)?;
    let mut url = OsString::from("file:");
    url.push(absolute.as_os_str());
    Ok(url)
}

/// An output being written: a hidden temporary file beside the final path, renamed into place
/// by [`PendingOutput::commit`] and removed if dropped before that.
pub(crate) struct PendingOutput {
    temp: tempfile::TempPath,
    target: PathBuf,
}

impl PendingOutput {
    pub(crate) fn beside(target: &Path) -> Result<PendingOutput, MediaError> {
        let target = std::path::absolute(target)?;
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(MediaError::InvalidRequest(format!(
                "{} is not a file path",
                target.display()
            )));
        };
        let mut prefix = OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(OsStr::new(".partial"));
        // Temporary files are private (0600); a published video or poster is an ordinary file
        // that a web server or the blob store may read as another user.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let temp = builder.tempfile_in(dir)?.into_temp_path();
        Ok(PendingOutput { temp, target })
    }

    pub(crate) fn url(&self) -> Result<OsString, MediaError> {
        file_url(&self.temp)
    }

    /// Moves the finished file into place; an empty file means the tool produced nothing.
    pub(crate) async fn commit(self, tool: &str) -> Result<(), MediaError> {
        let written = tokio::fs::metadata(&self.temp).await?.len();
        if written == 0 {
            return Err(MediaError::InvalidVideo(format!(
                "{tool} wrote nothing for {}",
                self.target.display()
            )));
        }
        self.temp
            .persist(&self.target)
            .map_err(|error| MediaError::Io(error.error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn without_variables_the_tools_come_from_path_with_the_dejavu_font() {
        let tools = MediaTools::from_lookup(lookup(&[])).expect("defaults");
        assert_eq!(tools, MediaTools::default());
        assert_eq!(tools.font, Some(PathBuf::from(DEFAULT_FONT)));
    }

    #[test]
    fn variables_override_paths_font_and_timeout() {
        let tools = MediaTools::from_lookup(lookup(&[
            ("FRAMEGATE_FFMPEG", "/opt/ff/ffmpeg"),
            ("FRAMEGATE_FFPROBE", "/opt/ff/ffprobe"),
            ("FRAMEGATE_SIMULATOR_FONT", "/fonts/x.ttf"),
            ("FRAMEGATE_MEDIA_TIMEOUT_SECONDS", "42"),
        ]))
        .expect("config");
        assert_eq!(tools.ffmpeg, PathBuf::from("/opt/ff/ffmpeg"));
        assert_eq!(tools.ffprobe, PathBuf::from("/opt/ff/ffprobe"));
        assert_eq!(tools.font, Some(PathBuf::from("/fonts/x.ttf")));
        assert_eq!(tools.timeout, Duration::from_secs(42));
    }

    #[test]
    fn an_empty_font_variable_means_fontconfig() {
        let tools =
            MediaTools::from_lookup(lookup(&[("FRAMEGATE_SIMULATOR_FONT", "")])).expect("config");
        assert_eq!(tools.font, None);
    }

    #[test]
    fn a_malformed_timeout_is_rejected() {
        for bad in ["", "0", "ten", "-5"] {
            let error =
                MediaTools::from_lookup(lookup(&[("FRAMEGATE_MEDIA_TIMEOUT_SECONDS", bad)]))
                    .expect_err(bad);
            assert_eq!(error.code(), "invalid_media_config", "{bad}");
        }
    }

    #[test]
    fn stderr_tail_keeps_the_end_of_long_output() {
        let long = format!("{}the reason", "x".repeat(5_000));
        let tail = stderr_tail(long.as_bytes());
        assert!(tail.ends_with("the reason"));
        assert!(tail.len() <= STDERR_TAIL_BYTES + "…".len());
    }
}

//! Vertex AI access tokens. Google's OAuth tokens live about an hour, so a configured command
//! (typically `gcloud auth print-access-token`, which renews through the machine's credentials)
//! is re-run when the cached token is 45 minutes old or Vertex refuses it. The command is
//! operator configuration, run with `sh -c`, never with anything a user sent.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::Mutex;

use crate::provider::{codes, ProviderFailure};

use super::config::VertexToken;

/// Renew well before Google's one-hour expiry.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(45 * 60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TokenSource {
    source: VertexToken,
    /// The command's last token and when it was printed; one refresh at a time.
    cached: Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    pub fn new(source: VertexToken) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    /// Whether a refused token can be replaced by a fresh one.
    pub fn renewable(&self) -> bool {
        matches!(self.source, VertexToken::Command(_))
    }

    pub async fn token(&self) -> Result<String, ProviderFailure> {
        let command = match &self.source {
            VertexToken::Static(token) => return Ok(token.clone()),
            VertexToken::Command(command) => command,
        };
        let mut cached = self.cached.lock().await;
        if let Some((token, at)) = cached.as_ref() {
            if at.elapsed() < MAX_TOKEN_AGE {
                return Ok(token.clone());
            }
        }
        let token = run(command).await?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Forgets `refused` so the next call runs the command again. A token already replaced
    /// by a concurrent caller is kept.
    pub async fn discard(&self, refused: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(token, _)| token == refused) {
            *cached = None;
        }
    }
}

async fn run(command: &str) -> Result<String, ProviderFailure> {
    let failure = |detail: String| {
        ProviderFailure::new(
            codes::AUTH_FAILED,
            format!("FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND {detail}"),
            true,
            false,
        )
    };
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| failure(format!("could not start: {error}")))?;
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failure(format!("did not finish within {COMMAND_TIMEOUT:?}")))?
        .map_err(|error| failure(format!("failed: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_line: String = stderr
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(failure(format!("{}: {first_line}", output.status)));
    }
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    // It becomes an HTTP header: one line of visible ASCII.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(failure("printed no usable token".to_owned()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_token_is_cached_until_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = dir.path().join("n");
        let command = format!(
            "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo token-$n",
            counter.display()
        );
        let source = TokenSource::new(VertexToken::Command(command));
        assert!(source.renewable());
        assert_eq!(source.token().await.expect("token"), "token-1");
        assert_eq!(source.token().await.expect("token"), "token-1");
        source.discard("token-0").await;
        assert_eq!(source.token().await.expect("token"), "token-1");
        source.discard("token-1").await;
        assert_eq!(source.token().await.expect("token"), "token-2");
    }

    #[tokio::test]
    async fn a_failing_command_is_a_retryable_auth_failure() {
        for command in [
            "echo 'not logged in' >&2; exit 1",
            "true",
            "echo 'two words'",
        ] {
            let source = TokenSource::new(VertexToken::Command(command.to_owned()));
            let failure = source.token().await.expect_err(command);
            assert_eq!(failure.code, codes::AUTH_FAILED, "{command}");
            assert!(failure.retryable && !failure.charged, "{command}");
        }
        let failure = TokenSource::new(VertexToken::Command(
            "echo 'not logged in' >&2; exit 1".into(),
        ))
        .token()
        .await
        .expect_err("failing command");
        assert!(
            failure.message.contains("not logged in"),
            "{}",
            failure.message
        );
    }

    #[tokio::test]
    async fn a_static_token_is_used_as_is_and_cannot_be_renewed() {
        let source = TokenSource::new(VertexToken::Static("ya29.static".into()));
        assert!(!source.renewable());
        source.discard("ya29.static").await;
        assert_eq!(source.token().await.expect("token"), "ya29.static");
    }
}

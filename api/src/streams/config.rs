//! The limits of `GET /v1/videos/{id}/events` (`FRAMEGATE_SSE_*`), kept apart from the rest of
//! the API's configuration.

use std::time::Duration;

use crate::config::{positive, ConfigError};

/// How many event streams may be open, for how long, and how the shared watcher paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Streams one user may hold open in this process (`FRAMEGATE_SSE_MAX_STREAMS_PER_USER`);
    /// the next is refused with 429 and `Retry-After`.
    pub max_per_user: u32,
    /// Streams this process holds open at once (`FRAMEGATE_SSE_MAX_STREAMS`); the next is
    /// refused with 503 and `Retry-After`. Each holds a connection: keep it below
    /// `FRAMEGATE_HTTP_MAX_CONNECTIONS` so that streams cannot take every connection.
    pub max_total: u32,
    /// How long one stream lives (`FRAMEGATE_SSE_MAX_LIFETIME_SECONDS`); it then ends with a
    /// `retry:` hint and the client resumes with `Last-Event-ID`.
    pub max_lifetime: Duration,
    /// How often an idle stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// How often the watcher reads the watched videos when no notification woke it: the
    /// event store's trigger lets one writer at a time notify, and a lost listener hears
    /// nothing (docs/adr/0026-video-event-streams.md).
    pub recheck: Duration,
    /// The shortest time between two reads of the watched videos: notifications arriving
    /// closer than this are answered by one read.
    pub min_interval: Duration,
    /// How often a stream authenticates its request again without being told its user's
    /// credentials changed (a backstop for announcements missed while the listener was
    /// down, and what ends a stream whose access token expired).
    pub reauthenticate: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_per_user: 10,
            max_total: 512,
            max_lifetime: Duration::from_secs(30 * 60),
            keep_alive: Duration::from_secs(15),
            recheck: Duration::from_secs(1),
            min_interval: Duration::from_millis(100),
            reauthenticate: Duration::from_secs(60),
        }
    }
}

impl StreamConfig {
    /// The defaults with whatever `FRAMEGATE_SSE_*` variables `get` has; each is a whole
    /// number of at least 1.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(v) = get("FRAMEGATE_SSE_MAX_STREAMS_PER_USER") {
            config.max_per_user = positive("FRAMEGATE_SSE_MAX_STREAMS_PER_USER", &v)?;
        }
        if let Some(v) = get("FRAMEGATE_SSE_MAX_STREAMS") {
            config.max_total = positive("FRAMEGATE_SSE_MAX_STREAMS", &v)?;
        }
        if let Some(v) = get("FRAMEGATE_SSE_MAX_LIFETIME_SECONDS") {
            let seconds = positive("FRAMEGATE_SSE_MAX_LIFETIME_SECONDS", &v)?;
            config.max_lifetime = Duration::from_secs(u64::from(seconds));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let defaults = StreamConfig::from_lookup(|_| None).expect("defaults");
        assert_eq!(defaults, StreamConfig::default());
        assert_eq!(defaults.max_per_user, 10);
        let config = StreamConfig::from_lookup(|name| match name {
            "FRAMEGATE_SSE_MAX_STREAMS_PER_USER" => Some("3".to_owned()),
            "FRAMEGATE_SSE_MAX_STREAMS" => Some("100".to_owned()),
            "FRAMEGATE_SSE_MAX_LIFETIME_SECONDS" => Some("60".to_owned()),
            _ => None,
        })
        .expect("config");
        assert_eq!(
            (config.max_per_user, config.max_total, config.max_lifetime),
            (3, 100, Duration::from_secs(60))
        );
        for variable in [
            "FRAMEGATE_SSE_MAX_STREAMS_PER_USER",
            "FRAMEGATE_SSE_MAX_STREAMS",
            "FRAMEGATE_SSE_MAX_LIFETIME_SECONDS",
        ] {
            let error =
                StreamConfig::from_lookup(|name| (name == variable).then(|| "0".to_owned()))
                    .expect_err(variable);
            assert_eq!(error.variable, variable);
        }
    }
}

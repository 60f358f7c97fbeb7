//! Webhook delivery (issue 13, docs/adr/0031-webhook-delivery.md): the subscription that
//! turns events into rows of the delivery outbox (`enqueue`), and the sender that drains it
//! (`sender`: queues found and leased in `claim`, taken in turns in `turn`, one HTTP attempt
//! in `attempt`, what answers come to in `outcome`, and each run's record in `record`).
//!
//! The outbox itself (table, enqueue, listing, manual retry) is
//! `framegate_commands::webhook_deliveries`, shared with the API.

pub mod attempt;
pub mod claim;
pub mod enqueue;
pub mod http;
pub mod outcome;
mod record;
pub mod sender;
mod turn;

use std::time::Duration;

pub use enqueue::{WebhookEnqueuer, SUBSCRIPTION};
pub use sender::Sender;

/// `true` lets deliveries reach loopback, private, link-local and other non-public addresses.
pub const ALLOW_PRIVATE: &str = "FRAMEGATE_WEBHOOK_ALLOW_PRIVATE";
/// Delays between attempts, e.g. `5s,5m,30m,2h,5h,10h`; the last repeats.
pub const RETRY_SCHEDULE: &str = "FRAMEGATE_WEBHOOK_RETRY_SCHEDULE";
/// How long a delivery is retried before it is given up.
pub const RETRY_WINDOW: &str = "FRAMEGATE_WEBHOOK_RETRY_WINDOW";
/// How long an endpoint may fail without a success before it is disabled.
pub const DISABLE_AFTER: &str = "FRAMEGATE_WEBHOOK_DISABLE_AFTER";
/// Deliveries in flight at once per process.
pub const CONCURRENCY: &str = "FRAMEGATE_WEBHOOK_CONCURRENCY";
/// Connect and total time one attempt may take.
pub const TIMEOUT: &str = "FRAMEGATE_WEBHOOK_TIMEOUT";

/// What the sender and the subscription read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub allow_private: bool,
    /// Delay after attempt n (1-based) is `retry_schedule[min(n, len) - 1]`, with jitter.
    pub retry_schedule: Vec<Duration>,
    pub retry_window: Duration,
    pub disable_after: Duration,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Lifetime of the download links a `video.completed` delivery carries (signed at each
    /// attempt).
    pub link_ttl: Duration,
}

impl Default for WebhookConfig {
    /// The production posture.
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_schedule: parse_schedule("5s,5m,30m,2h,5h,10h").expect("the default parses"),
            retry_window: Duration::from_secs(3 * 24 * 3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            concurrency: 32,
            timeout: Duration::from_secs(10),
            link_ttl: Duration::from_secs(3600),
        }
    }
}

impl WebhookConfig {
    /// Reads the `FRAMEGATE_WEBHOOK_*` variables and `FRAMEGATE_DOWNLOAD_TTL_SECONDS`; blank
    /// means unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let set = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Self::default();
        if let Some(value) = set(ALLOW_PRIVATE) {
            config.allow_private = match value.to_ascii_lowercase().as_str() {
                "false" | "0" | "no" | "off" => false,
                "true" | "1" | "yes" | "on" => true,
                other => return Err(format!("{ALLOW_PRIVATE}: {other:?} is not a boolean")),
            };
        }
        if let Some(value) = set(RETRY_SCHEDULE) {
            config.retry_schedule =
                parse_schedule(&value).map_err(|e| format!("{RETRY_SCHEDULE}: {e}"))?;
        }
        let duration = |name: &str, value: String| {
            parse_duration(&value)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("{name}: {value:?} is not a duration (e.g. 500ms, 10s, 5m, 2h, 3d)")
                })
        };
        if let Some(value) = set(RETRY_WINDOW) {
            config.retry_window = duration(RETRY_WINDOW, value)?;
        }
        if let Some(value) = set(DISABLE_AFTER) {
            config.disable_after = duration(DISABLE_AFTER, value)?;
        }
        if let Some(value) = set(TIMEOUT) {
            config.timeout = duration(TIMEOUT, value)?;
        }
        if let Some(value) = set(CONCURRENCY) {
            config.concurrency = value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    format!("{CONCURRENCY}: {value:?} is not a number from 1 to 10000")
                })?;
        }
        if let Some(value) = set("FRAMEGATE_DOWNLOAD_TTL_SECONDS") {
            config.link_ttl = Duration::from_secs(
                value
                    .parse()
                    .map_err(|_| format!("FRAMEGATE_DOWNLOAD_TTL_SECONDS: {value:?}"))?,
            );
        }
        Ok(config)
    }

    /// The delay after attempt `attempts` (1-based), before jitter.
    pub fn delay_after(&self, attempts: i32) -> Duration {
        let index = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
        self.retry_schedule
            .get(index)
            .or(self.retry_schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

/// `5s,5m,30m`: durations separated by commas, at least one.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let delays: Vec<Duration> = text
        .split(',')
        .map(|part| {
            parse_duration(part.trim()).ok_or_else(|| {
                format!(
                    "{:?} is not a duration (e.g. 500ms, 5s, 5m, 2h)",
                    part.trim()
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if delays.is_empty() {
        return Err("no delays".to_owned());
    }
    Ok(delays)
}

/// `500ms`, `5s`, `5m`, `2h`, `3d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(number.checked_mul(millis)?))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_default_schedule_backs_off_and_repeats_its_last_delay() {
        let config = WebhookConfig::default();
        assert_eq!(config.delay_after(1), Duration::from_secs(5));
        assert_eq!(config.delay_after(2), Duration::from_secs(300));
        assert_eq!(config.delay_after(6), Duration::from_secs(36_000));
        assert_eq!(config.delay_after(40), Duration::from_secs(36_000));
        assert_eq!(config.retry_window, Duration::from_secs(259_200));
    }

    #[test]
    fn settings_are_read_and_bad_ones_refused_by_name() {
        let env = HashMap::from([
            (ALLOW_PRIVATE, "true"),
            (RETRY_SCHEDULE, "100ms, 1s,2m"),
            (RETRY_WINDOW, "2h"),
            (CONCURRENCY, "4"),
            (TIMEOUT, "2s"),
        ]);
        let config =
            WebhookConfig::from_lookup(|name| env.get(name).map(|v| (*v).to_owned())).expect("ok");
        assert!(config.allow_private);
        assert_eq!(
            config.retry_schedule,
            [100, 1000, 120_000].map(Duration::from_millis).to_vec()
        );
        assert_eq!(config.retry_window, Duration::from_secs(7200));
        assert_eq!(
            (config.concurrency, config.timeout),
            (4, Duration::from_secs(2))
        );
        for (name, bad) in [
            (RETRY_SCHEDULE, "5x"),
            (RETRY_WINDOW, "0s"),
            (CONCURRENCY, "0"),
            (ALLOW_PRIVATE, "maybe"),
        ] {
            let error =
                WebhookConfig::from_lookup(|n| (n == name).then(|| bad.to_owned())).expect_err(bad);
            assert!(error.starts_with(name), "{error}");
        }
    }
}

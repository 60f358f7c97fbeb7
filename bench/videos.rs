//! Video benchmarks, printing figures (run: `cargo bench --bench videos`).
//!
//! (a) Accepting: POST /v1/videos (simulator, 1 s, 480p) through the real router on loopback
//!     at 16 and 32 concurrent clients, each client its own user with plenty of credits, once
//!     without and once with a fresh Idempotency-Key per request, next to the raw single-row
//!     INSERT rate of the same Postgres at the same concurrency in the same run, and (to tell
//!     where the time goes) the same command sent straight to the event store, and the rows
//!     it writes written by hand in one transaction (`floor`). No worker runs.
//! (b) Platform overhead per job: the pipeline in-process, wired as `framegate worker` wires it
//!     (dispatcher, poller, settlement, plus the read-model projectors), with a provider that
//!     finishes at once and delivers a pre-rendered MP4, so no render is measured. For jobs one
//!     after another: VideoRequested to VideoCompleted as recorded in the log, and the events
//!     and transactions each cost from request to credit capture. The worker's
//!     post-processing (validation, one ffmpeg run for poster and thumbnail) is timed
//!     again on the same MP4 right after each job, next to the one plain ffmpeg command that
//!     writes the same two stills, so the overhead without media work and the media work's
//!     ratio to its baseline can both be stated.
//! (c) 1,000 jobs in flight: the real `framegate worker` binary with a simulator slow enough
//!     that none finishes; its peak RSS (VmHWM) while it follows them all.
//!
//! Settings: FRAMEGATE_BENCH_PARTS (`a,b,c`), FRAMEGATE_BENCH_SECONDS (10 per load run),
//! FRAMEGATE_BENCH_CONCURRENCY (`16,32`), FRAMEGATE_BENCH_JOBS (50), FRAMEGATE_BENCH_POLL_MS
//! (250, the worker role's poller interval), FRAMEGATE_BENCH_IN_FLIGHT (1000),
//! FRAMEGATE_BENCH_HOLD_SECONDS (15), FRAMEGATE_BIN (the binary for (c); default: the
//! `framegate` cargo builds along with this bench). Uses DATABASE_URL's server, in private
//! databases; needs ffmpeg (scripts/install-ffmpeg.sh). The machine should be otherwise idle:
//! the figures are only comparable with the raw INSERT rate measured in the same run.

use std::time::Duration;

use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits, ProviderPreference, UserId, VideoSpec};

#[path = "videos/accepting.rs"]
mod accepting;
#[path = "videos/in_flight.rs"]
mod in_flight;
#[path = "videos/overhead.rs"]
mod overhead;

use accepting::accepting;
use in_flight::in_flight;
use overhead::overhead;

const PROMPT: &str = "a paper boat drifting down a rainy street at dusk";
const SIGNING_KEY: &str = "framegate-bench-signing-key-0123456789";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn sorted(mut values: Vec<Duration>) -> Vec<Duration> {
    values.sort();
    values
}

#[tokio::main]
async fn main() {
    let parts = std::env::var("FRAMEGATE_BENCH_PARTS").unwrap_or_else(|_| "a,b,c".to_owned());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    if parts.contains(&"a") {
        accepting(env_u64("FRAMEGATE_BENCH_SECONDS", 10)).await;
    }
    if parts.contains(&"b") {
        overhead(
            env_u64("FRAMEGATE_BENCH_JOBS", 50) as usize,
            Duration::from_millis(env_u64("FRAMEGATE_BENCH_POLL_MS", 250)),
        )
        .await;
    }
    if parts.contains(&"c") {
        in_flight(
            env_u64("FRAMEGATE_BENCH_IN_FLIGHT", 1000) as usize,
            Duration::from_secs(env_u64("FRAMEGATE_BENCH_HOLD_SECONDS", 15)),
        )
        .await;
    }
}

/// Grants `user` more credits than any run can spend.
async fn grant(store: &EventStore, user: UserId) {
    let grant = CreditCommand::Grant {
        amount: Credits::new(1_000_000_000),
        reason: "benchmark".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(
            &user.to_string(),
            grant,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
}

fn spec(owner: UserId) -> VideoSpec {
    VideoSpec {
        owner,
        prompt: PROMPT.into(),
        negative_prompt: None,
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 1,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(1),
        generate_audio: false,
        external_id: None,
        webhook: None,
    }
}

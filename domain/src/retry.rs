//! What a failed submission leads to, and which providers may take a video next: the
//! dispatcher's retry and fallback policy as pure functions, next to the routing that ranks
//! the providers in the first place.
//!
//! A provider that refused a video for good (a non-retryable code), or failed it
//! [`MAX_ATTEMPTS_PER_PROVIDER`] times, is not asked again; a fallback never costs more than
//! the reservation; a video gets at most [`MAX_ATTEMPTS`] submissions in all. A failure the
//! provider charges for, a moderation refusal or a submission whose outcome is unknown ends
//! the video everywhere: trying elsewhere could make the user pay twice.

use std::time::Duration;

use crate::catalog::Quote;
use crate::credits::Credits;
use crate::provider::ProviderKind;
use crate::video::FailedAttempt;

/// How many submission attempts a video gets before it fails for good.
pub const MAX_ATTEMPTS: u32 = 6;
/// How many times one provider is tried for one video.
pub const MAX_ATTEMPTS_PER_PROVIDER: usize = 3;

/// The stable failure codes of provider calls.
pub mod codes {
    pub const MODERATED: &str = "moderated";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const AUTH_FAILED: &str = "auth_failed";
    pub const QUOTA_EXHAUSTED: &str = "quota_exhausted";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";
    pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
    pub const RESULT_EXPIRED: &str = "result_expired";
    pub const GENERATION_FAILED: &str = "generation_failed";
    pub const NOT_FOUND: &str = "not_found";
    pub const SUBMISSION_UNKNOWN: &str = "submission_unknown";
    /// The result is no usable video: refused by ffprobe, or its download pointed at a
    /// non-public address, was too large or of the wrong type.
    pub const INVALID_OUTPUT: &str = "invalid_output";
}

/// Whether a failure code may go away on its own (so the provider may be tried again).
pub fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        codes::UPSTREAM_UNAVAILABLE | codes::UPSTREAM_TIMEOUT | codes::RATE_LIMITED
    )
}

/// The providers of `ranked` (best first, as routing ordered them) that may still take a
/// video reserved at `reserved` after the attempts `failed`, each with how often it failed
/// this video; fewest failures first, the ranking's order kept among equals.
pub fn eligible(
    ranked: Vec<Quote>,
    reserved: Credits,
    failed: &[FailedAttempt],
) -> Vec<(Quote, usize)> {
    let mut candidates: Vec<(Quote, usize)> = ranked
        .into_iter()
        // The reservation was made for the estimate: never fall back to a dearer provider.
        .filter(|quote| quote.cost <= reserved)
        .filter_map(|quote| {
            let mine: Vec<&FailedAttempt> = failed
                .iter()
                .filter(|f| f.provider == quote.provider)
                .collect();
            let refused = mine.iter().any(|f| !is_retryable_code(&f.code));
            (!refused && mine.len() < MAX_ATTEMPTS_PER_PROVIDER).then_some((quote, mine.len()))
        })
        .collect();
    // Stable: equal failure counts keep the policy's order.
    candidates.sort_by_key(|(_, failures)| *failures);
    candidates
}

/// One failed submission, as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    pub provider: ProviderKind,
    pub attempt: u32,
    pub code: &'a str,
    pub retryable: bool,
    /// The provider bills the failed job.
    pub charged: bool,
    /// How long the provider asked us to wait.
    pub retry_after: Option<Duration>,
}

/// What the dispatcher does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The video fails.
    Fail,
    /// It goes back to the queue and is submitted again after `wait` (here or elsewhere).
    Retry { wait: Duration },
}

/// Decides what follows `failure`. `pinned`: the request named its provider. `candidates`
/// are [`eligible`] after the failed attempts including this one. `jitter` (0.0 to 1.0)
/// spreads retries of many videos apart.
pub fn after_failure(
    failure: &Failure<'_>,
    pinned: bool,
    failed: &[FailedAttempt],
    candidates: &[(Quote, usize)],
    jitter: f64,
) -> Next {
    let final_everywhere =
        matches!(failure.code, codes::MODERATED | codes::SUBMISSION_UNKNOWN) || failure.charged;
    let fallback = !pinned
        && candidates
            .iter()
            .any(|(q, _)| q.provider != failure.provider);
    let retry_here = failure.retryable
        && candidates
            .iter()
            .any(|(q, _)| q.provider == failure.provider);
    if final_everywhere || failure.attempt >= MAX_ATTEMPTS || !(fallback || retry_here) {
        return Next::Fail;
    }
    // A provider never tried yet goes at once; a retry waits, at least as asked.
    let next_is_fresh = candidates
        .first()
        .is_some_and(|(q, _)| !failed.iter().any(|f| f.provider == q.provider));
    let wait = if next_is_fresh {
        Duration::ZERO
    } else {
        backoff(failure.attempt, jitter).max(failure.retry_after.unwrap_or_default())
    };
    Next::Retry { wait }
}

/// Exponential backoff before submission attempt `attempt + 1`: 2 s, 4 s, 8 s... up to
/// 256 s, stretched by up to a quarter by `jitter` (0.0 to 1.0).
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base =
        Duration::from_secs(2u64.saturating_pow(attempt.min(8))).min(Duration::from_secs(300));
    base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(provider: ProviderKind, cost: i64) -> Quote {
        Quote {
            provider,
            model: "m".into(),
            credits_per_second: 1,
            cost: Credits::new(cost),
        }
    }

    fn attempt(n: u32, provider: ProviderKind, code: &str) -> FailedAttempt {
        FailedAttempt {
            attempt: n,
            provider,
            code: code.into(),
        }
    }

    fn failure(provider: ProviderKind, attempt: u32, code: &str) -> Failure<'_> {
        Failure {
            provider,
            attempt,
            code,
            retryable: is_retryable_code(code),
            charged: false,
            retry_after: None,
        }
    }

    use ProviderKind::{Kling, Sora, Veo};

    #[test]
    fn eligible_drops_dearer_refusing_and_worn_out_providers() {
        let ranked = vec![quote(Veo, 50), quote(Sora, 40), quote(Kling, 200)];
        let failed = [
            attempt(1, Veo, codes::UPSTREAM_TIMEOUT),
            attempt(2, Sora, codes::INVALID_REQUEST),
        ];
        let left = eligible(ranked.clone(), Credits::new(100), &failed);
        assert_eq!(
            left,
            vec![(quote(Veo, 50), 1)],
            "Sora refused, Kling too dear"
        );

        let worn: Vec<FailedAttempt> = (1..=3)
            .map(|n| attempt(n, Veo, codes::RATE_LIMITED))
            .collect();
        assert!(eligible(vec![quote(Veo, 50)], Credits::new(100), &worn).is_empty());
    }

    #[test]
    fn fewer_failures_go_first_and_ties_keep_the_ranking() {
        let ranked = vec![quote(Veo, 10), quote(Sora, 10), quote(Kling, 10)];
        let failed = [attempt(1, Veo, codes::UPSTREAM_UNAVAILABLE)];
        let order: Vec<ProviderKind> = eligible(ranked, Credits::new(10), &failed)
            .into_iter()
            .map(|(q, _)| q.provider)
            .collect();
        assert_eq!(order, vec![Sora, Kling, Veo]);
    }

    #[test]
    fn a_fresh_fallback_goes_at_once_and_a_retry_waits() {
        let failed = [attempt(1, Veo, codes::UPSTREAM_UNAVAILABLE)];
        let fresh = [(quote(Sora, 10), 0), (quote(Veo, 10), 1)];
        let next = after_failure(
            &failure(Veo, 1, codes::UPSTREAM_UNAVAILABLE),
            false,
            &failed,
            &fresh,
            0.0,
        );
        assert_eq!(
            next,
            Next::Retry {
                wait: Duration::ZERO
            }
        );

        let only_here = [(quote(Veo, 10), 1)];
        let mut asked = failure(Veo, 1, codes::RATE_LIMITED);
        asked.retry_after = Some(Duration::from_secs(30));
        let next = after_failure(&asked, true, &failed, &only_here, 0.0);
        assert_eq!(
            next,
            Next::Retry {
                wait: Duration::from_secs(30)
            },
            "at least as asked"
        );
        let next = after_failure(
            &failure(Veo, 1, codes::RATE_LIMITED),
            true,
            &failed,
            &only_here,
            1.0,
        );
        assert_eq!(
            next,
            Next::Retry {
                wait: Duration::from_millis(2500)
            }
        );
    }

    #[test]
    fn charged_moderated_unknown_and_exhausted_failures_end_the_video() {
        let failed = [attempt(1, Veo, codes::UPSTREAM_UNAVAILABLE)];
        let others = [(quote(Sora, 10), 0)];
        let mut charged = failure(Veo, 1, codes::GENERATION_FAILED);
        charged.charged = true;
        for end in [
            charged,
            failure(Veo, 1, codes::MODERATED),
            failure(Veo, 1, codes::SUBMISSION_UNKNOWN),
            failure(Veo, MAX_ATTEMPTS, codes::UPSTREAM_UNAVAILABLE),
        ] {
            assert_eq!(
                after_failure(&end, false, &failed, &others, 0.0),
                Next::Fail,
                "{end:?}"
            );
        }
        // Pinned with nothing left here: no fallback allowed.
        let next = after_failure(
            &failure(Veo, 1, codes::INVALID_REQUEST),
            true,
            &failed,
            &others,
            0.0,
        );
        assert_eq!(next, Next::Fail);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(20, 0.0), Duration::from_secs(256));
        assert_eq!(backoff(20, 1.0), Duration::from_secs(320));
    }
}

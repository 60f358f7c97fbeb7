//! What the dispatcher respects when it picks a provider: per-provider limits and the
//! routing settings.

use std::collections::HashMap;
use std::sync::Arc;

use framegate_domain::catalog::Catalog;
use framegate_domain::routing::RoutingPolicy;
use framegate_domain::ProviderKind;

/// Per-provider limits the dispatcher respects locally: jobs in flight at once, and
/// submissions per minute (absent: no limit). A provider at a limit is skipped for now, and
/// the video waits in the queue.
#[derive(Debug, Clone, Default)]
pub struct ProviderLimits {
    pub max_in_flight: HashMap<ProviderKind, i64>,
    pub submissions_per_minute: HashMap<ProviderKind, u32>,
}

/// The submission rate limiters, one per limited provider (in this process).
pub(super) type SubmissionLimiter = governor::DefaultDirectRateLimiter;

pub(super) fn submission_limiters(
    limits: &ProviderLimits,
) -> HashMap<ProviderKind, Arc<SubmissionLimiter>> {
    limits
        .submissions_per_minute
        .iter()
        .filter_map(|(provider, per_minute)| {
            let per_minute = std::num::NonZeroU32::new(*per_minute)?;
            let quota = governor::Quota::per_minute(per_minute);
            Some((*provider, Arc::new(governor::RateLimiter::direct(quota))))
        })
        .collect()
}

impl ProviderLimits {
    /// `FRAMEGATE_<PROVIDER>_MAX_CONCURRENCY` and `FRAMEGATE_<PROVIDER>_SUBMISSIONS_PER_MINUTE`
    /// for each provider, e.g. `FRAMEGATE_KLING_MAX_CONCURRENCY=5`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut limits = ProviderLimits::default();
        for provider in ProviderKind::ALL {
            let name = format!(
                "FRAMEGATE_{}_MAX_CONCURRENCY",
                provider.as_str().to_ascii_uppercase()
            );
            if let Some(value) = get(&name).filter(|v| !v.trim().is_empty()) {
                let limit: i64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}: expected a positive number, got {value:?}"))?;
                limits.max_in_flight.insert(provider, limit);
            }
            let name = format!(
                "FRAMEGATE_{}_SUBMISSIONS_PER_MINUTE",
                provider.as_str().to_ascii_uppercase()
            );
            if let Some(value) = get(&name).filter(|v| !v.trim().is_empty()) {
                let limit: u32 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}: expected a positive number, got {value:?}"))?;
                limits.submissions_per_minute.insert(provider, limit);
            }
        }
        Ok(limits)
    }
}

/// How the dispatcher chooses providers.
#[derive(Debug, Clone)]
pub struct Routing {
    pub catalog: Catalog,
    pub policy: RoutingPolicy,
    pub limits: ProviderLimits,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            catalog: Catalog::defaults(),
            policy: RoutingPolicy::Price,
            limits: ProviderLimits::default(),
        }
    }
}

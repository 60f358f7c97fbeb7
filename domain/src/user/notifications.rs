//! Email notifications a user opted into, and the low-credit rule they share with webhooks.
//!
//! Preferences are part of the `User` aggregate (issue 13.6): a change is recorded as
//! `NotificationPreferencesChanged` carrying the whole new set, so a reader of one event
//! knows every preference without folding the stream. Everything starts off: nobody is mailed
//! about videos or credits without asking for it.
//!
//! The low-credit threshold is one per user and decides both the `credits_low` mail and the
//! `credits.low` webhook. [`crossed_below`] is the one rule for "this event took the
//! available balance below it": only the event that crosses fires, not every event spent
//! below it, and a balance that climbs back and falls again fires again.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::UserError;
use crate::credits::Credits;

/// The low-credit threshold of a user who never set one.
pub const DEFAULT_LOW_CREDIT_THRESHOLD: Credits = Credits::new(100);

/// Which notification mails a user receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct NotificationPreferences {
    /// Mail when a video completes, with a link to it.
    pub video_completed: bool,
    /// Mail when a video fails, with the reason.
    pub video_failed: bool,
    /// Mail when the available balance falls below `credits_low_threshold`.
    pub credits_low: bool,
    /// Credits; zero or more. Shared with the `credits.low` webhook.
    pub credits_low_threshold: Credits,
}

impl Default for NotificationPreferences {
    fn default() -> Self {
        Self {
            video_completed: false,
            video_failed: false,
            credits_low: false,
            credits_low_threshold: DEFAULT_LOW_CREDIT_THRESHOLD,
        }
    }
}

/// A partial update: `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreferencesChange {
    pub video_completed: Option<bool>,
    pub video_failed: Option<bool>,
    pub credits_low: Option<bool>,
    pub credits_low_threshold: Option<Credits>,
}

impl NotificationPreferences {
    /// These preferences with `change` applied; a negative threshold is refused.
    pub fn with(self, change: PreferencesChange) -> Result<Self, UserError> {
        let threshold = change
            .credits_low_threshold
            .unwrap_or(self.credits_low_threshold);
        if threshold < Credits::ZERO {
            return Err(UserError::NegativeThreshold);
        }
        Ok(Self {
            video_completed: change.video_completed.unwrap_or(self.video_completed),
            video_failed: change.video_failed.unwrap_or(self.video_failed),
            credits_low: change.credits_low.unwrap_or(self.credits_low),
            credits_low_threshold: threshold,
        })
    }
}

/// Whether a credit event that moved the available balance from `before` to `after` took it
/// below `threshold`: from at or above it to under it. Every later event that stays below
/// is no crossing, so each fall below fires once; climbing back to the threshold or above
/// arms it again.
pub fn crossed_below(threshold: Credits, before: Credits, after: Credits) -> bool {
    before >= threshold && after < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(value: i64) -> Credits {
        Credits::new(value)
    }

    #[test]
    fn only_the_event_that_goes_below_the_threshold_crosses() {
        assert!(crossed_below(c(100), c(150), c(99)));
        assert!(crossed_below(c(100), c(100), c(0)));
        assert!(
            !crossed_below(c(100), c(150), c(100)),
            "at the threshold is not below"
        );
        assert!(!crossed_below(c(100), c(99), c(50)), "already below");
        assert!(!crossed_below(c(100), c(50), c(120)), "going up");
        assert!(!crossed_below(c(100), c(120), c(130)));
    }

    #[test]
    fn a_balance_that_climbs_back_and_falls_again_crosses_again() {
        let threshold = c(100);
        let balances = [200, 90, 40, 150, 60, 100, 99, 0];
        let crossings: Vec<i64> = balances
            .windows(2)
            .filter(|w| crossed_below(threshold, c(w[0]), c(w[1])))
            .map(|w| w[1])
            .collect();
        assert_eq!(crossings, vec![90, 60, 99]);
    }

    #[test]
    fn a_zero_threshold_never_fires_on_a_balance_that_cannot_go_negative() {
        assert!(!crossed_below(c(0), c(10), c(0)));
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name() {
        let start = NotificationPreferences::default();
        let changed = start
            .with(PreferencesChange {
                video_failed: Some(true),
                credits_low_threshold: Some(c(250)),
                ..PreferencesChange::default()
            })
            .expect("valid");
        assert_eq!(
            changed,
            NotificationPreferences {
                video_completed: false,
                video_failed: true,
                credits_low: false,
                credits_low_threshold: c(250),
            }
        );
        assert_eq!(changed.with(PreferencesChange::default()), Ok(changed));
    }

    #[test]
    fn a_negative_threshold_is_refused() {
        let change = PreferencesChange {
            credits_low_threshold: Some(c(-1)),
            ..PreferencesChange::default()
        };
        assert_eq!(
            NotificationPreferences::default().with(change),
            Err(UserError::NegativeThreshold)
        );
    }

    #[test]
    fn everything_starts_off_with_a_threshold_of_100() {
        let defaults = NotificationPreferences::default();
        assert!(!defaults.video_completed && !defaults.video_failed && !defaults.credits_low);
        assert_eq!(defaults.credits_low_threshold, c(100));
    }
}

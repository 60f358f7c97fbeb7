//! Names of the video generation backends, and the user's choice among them.
//!
//! These are closed enums rather than strings so that the router, the price list and the
//! provider adapters must all handle every backend; the snake_case names are what the API
//! accepts and what events store, so they must never change.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A provider name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}")]
pub struct UnknownProvider(pub String);

/// A backend that actually renders videos.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Veo,
    Sora,
    Kling,
    Simulator,
}

impl ProviderKind {
    /// Whether the provider's videos can carry a soundtrack (`generate_audio`): Veo 3 and
    /// Sora 2 render audio with every video; Kling's adapter and the simulator make silent
    /// videos (docs/adr/0042-versioned-events.md).
    pub fn makes_audio(self) -> bool {
        matches!(self, ProviderKind::Veo | ProviderKind::Sora)
    }

    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Veo,
        ProviderKind::Sora,
        ProviderKind::Kling,
        ProviderKind::Simulator,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Veo => "veo",
            ProviderKind::Sora => "sora",
            ProviderKind::Kling => "kling",
            ProviderKind::Simulator => "simulator",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownProvider(s.to_string()))
    }
}

/// What the user asked for: a specific provider, or `Auto` to let the router choose.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProviderPreference {
    #[default]
    Auto,
    Veo,
    Sora,
    Kling,
    Simulator,
}

impl ProviderPreference {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderPreference::Auto => "auto",
            ProviderPreference::Veo => "veo",
            ProviderPreference::Sora => "sora",
            ProviderPreference::Kling => "kling",
            ProviderPreference::Simulator => "simulator",
        }
    }

    /// The provider the user pinned, if any.
    pub const fn pinned(self) -> Option<ProviderKind> {
        match self {
            ProviderPreference::Auto => None,
            ProviderPreference::Veo => Some(ProviderKind::Veo),
            ProviderPreference::Sora => Some(ProviderKind::Sora),
            ProviderPreference::Kling => Some(ProviderKind::Kling),
            ProviderPreference::Simulator => Some(ProviderKind::Simulator),
        }
    }
}

impl From<ProviderKind> for ProviderPreference {
    fn from(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Veo => ProviderPreference::Veo,
            ProviderKind::Sora => ProviderPreference::Sora,
            ProviderKind::Kling => ProviderPreference::Kling,
            ProviderKind::Simulator => ProviderPreference::Simulator,
        }
    }
}

impl fmt::Display for ProviderPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderPreference {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(ProviderPreference::Auto);
        }
        s.parse::<ProviderKind>().map(ProviderPreference::from)
    }
}

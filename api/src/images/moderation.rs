//! The moderation hook every upload passes through before anything is stored.
//!
//! [`Moderation`] is the seam for a real classifier (a vendor API, a hash list service);
//! the default, [`AllowAll`], accepts everything. [`RuleSet`] is a small configurable policy
//! read from `FRAMEGATE_IMAGE_MODERATION_RULES`, e.g.
//! `max_megapixels=12;deny_sha256=<hex>,<hex>;deny_formats=webp`. Whatever decides, the
//! decision is recorded in the image's event (`ImageUploaded` or `ImageRejected`), and a
//! rejection names the rule that made it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use framegate_domain::{normalize_sha256, ModerationDecision};

use super::processing::{ImageFormat, ProcessedImage};

/// The environment variable [`RuleSet::parse`] is meant to read.
pub const RULES_ENV: &str = "FRAMEGATE_IMAGE_MODERATION_RULES";

/// Reviews a processed upload. Synchronous and cheap by contract: a hook that calls out
/// should be wrapped by the caller with its own timeout and failure policy.
pub trait Moderation: Send + Sync {
    fn review(&self, image: &ProcessedImage) -> ModerationDecision;
}

/// Accepts every image: the default when no rules are configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowAll;

impl Moderation for AllowAll {
    fn review(&self, _image: &ProcessedImage) -> ModerationDecision {
        ModerationDecision::allow()
    }
}

/// The moderation configured by `value` (the content of [`RULES_ENV`]): [`AllowAll`] when
/// it is unset or blank, the parsed [`RuleSet`] otherwise. Bad rules fail start-up.
pub fn from_config(value: Option<&str>) -> Result<Arc<dyn Moderation>, RuleSetError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Arc::new(AllowAll)),
        Some(rules) => Ok(Arc::new(RuleSet::parse(rules)?)),
    }
}

/// One configurable rule. Each rejects by itself; none of them ever allows what another
/// rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Rejects images with more pixels than this (as displayed; 1 megapixel = 10⁶ pixels).
    MaxMegapixels { max_pixels: u64 },
    /// Rejects these exact contents (lowercase hex SHA-256), e.g. known abusive files.
    DenySha256(BTreeSet<String>),
    /// Rejects these formats.
    DenyFormats(Vec<ImageFormat>),
}

impl Rule {
    /// The name the rule has in the configuration and in recorded decisions.
    pub const fn name(&self) -> &'static str {
        match self {
            Rule::MaxMegapixels { .. } => "max_megapixels",
            Rule::DenySha256(_) => "deny_sha256",
            Rule::DenyFormats(_) => "deny_formats",
        }
    }

    /// Why the rule rejects `image`, or `None` if it lets it through.
    fn rejects(&self, image: &ProcessedImage) -> Option<String> {
        match self {
            Rule::MaxMegapixels { max_pixels } => {
                let pixels = u64::from(image.width) * u64::from(image.height);
                (pixels > *max_pixels).then(|| {
                    format!(
                        "the image has {} megapixels, more than the {} allowed",
                        megapixels(pixels),
                        megapixels(*max_pixels)
                    )
                })
            }
            Rule::DenySha256(denied) => denied
                .contains(&image.sha256)
                .then(|| "this content is not accepted".to_string()),
            Rule::DenyFormats(denied) => denied
                .contains(&image.format)
                .then(|| format!("{} images are not accepted", image.format.content_type())),
        }
    }
}

/// `pixels` in megapixels, exactly, without trailing zeros: 12 500 000 → "12.5".
fn megapixels(pixels: u64) -> String {
    let whole = pixels / 1_000_000;
    let fraction = pixels % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSetError {
    #[error("{RULES_ENV}: `{0}` is not of the form name=value")]
    Malformed(String),
    #[error("{RULES_ENV}: unknown rule `{0}` (known: max_megapixels, deny_sha256, deny_formats)")]
    UnknownRule(String),
    #[error("{RULES_ENV}: rule `{0}` is given twice")]
    DuplicateRule(String),
    #[error("{RULES_ENV}: `{value}` is not a valid value for `{rule}`: {expected}")]
    InvalidValue {
        rule: String,
        value: String,
        expected: &'static str,
    },
}

/// An ordered list of rules; the first that rejects decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        RuleSet { rules }
    }

    /// Parses `name=value` items separated by `;`. Whitespace around items, names and
    /// values is ignored, as are empty items; lists inside a value are comma-separated.
    pub fn parse(spec: &str) -> Result<RuleSet, RuleSetError> {
        let mut rules: Vec<Rule> = Vec::new();
        for item in spec
            .split(';')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| RuleSetError::Malformed(item.to_string()))?;
            let (name, value) = (name.trim(), value.trim());
            let rule = parse_rule(name, value)?;
            if rules.iter().any(|known| known.name() == rule.name()) {
                return Err(RuleSetError::DuplicateRule(name.to_string()));
            }
            rules.push(rule);
        }
        Ok(RuleSet { rules })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl FromStr for RuleSet {
    type Err = RuleSetError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        RuleSet::parse(spec)
    }
}

impl fmt::Display for RuleSet {
    /// The configuration form, which [`RuleSet::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .rules
            .iter()
            .map(|rule| {
                let value = match rule {
                    Rule::MaxMegapixels { max_pixels } => megapixels(*max_pixels),
                    Rule::DenySha256(denied) => {
                        denied.iter().cloned().collect::<Vec<_>>().join(",")
                    }
                    Rule::DenyFormats(denied) => denied
                        .iter()
                        .map(|format| format_name(*format))
                        .collect::<Vec<_>>()
                        .join(","),
                };
                format!("{}={value}", rule.name())
            })
            .collect();
        f.write_str(&items.join(";"))
    }
}

impl Moderation for RuleSet {
    fn review(&self, image: &ProcessedImage) -> ModerationDecision {
        self.rules
            .iter()
            .find_map(|rule| rule.rejects(image).map(|reason| (rule.name(), reason)))
            .map_or_else(ModerationDecision::allow, |(rule, reason)| {
                ModerationDecision::reject(rule, reason)
            })
    }
}

fn parse_rule(name: &str, value: &str) -> Result<Rule, RuleSetError> {
    let invalid = |expected| RuleSetError::InvalidValue {
        rule: name.to_string(),
        value: value.to_string(),
        expected,
    };
    let list = || {
        value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
    };
    match name {
        "max_megapixels" => parse_megapixels(value)
            .map(|max_pixels| Rule::MaxMegapixels { max_pixels })
            .ok_or_else(|| invalid("a positive number of megapixels, e.g. 12 or 0.5")),
        "deny_sha256" => {
            let denied = list()
                .map(|hex| normalize_sha256(hex).ok())
                .collect::<Option<BTreeSet<String>>>()
                .filter(|denied| !denied.is_empty())
                .ok_or_else(|| invalid("a comma-separated list of SHA-256 digests in hex"))?;
            Ok(Rule::DenySha256(denied))
        }
        "deny_formats" => {
            let mut denied: Vec<ImageFormat> = Vec::new();
            for item in list() {
                let format = parse_format(item)
                    .ok_or_else(|| invalid("a comma-separated list of jpeg, png and webp"))?;
                if !denied.contains(&format) {
                    denied.push(format);
                }
            }
            if denied.is_empty() {
                return Err(invalid("a comma-separated list of jpeg, png and webp"));
            }
            Ok(Rule::DenyFormats(denied))
        }
        _ => Err(RuleSetError::UnknownRule(name.to_string())),
    }
}

/// Megapixels as whole pixels, with up to six decimals and no floating point: "12.5" →
/// 12 500 000. Zero, negatives and more than six decimals are refused.
fn parse_megapixels(value: &str) -> Option<u64> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits_only(whole)
        || !digits_only(fraction)
        || fraction.len() > 6
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: u64 = format!("{fraction:0<6}").parse().ok()?;
    let pixels = whole.checked_mul(1_000_000)?.checked_add(fraction)?;
    (pixels > 0).then_some(pixels)
}

fn parse_format(name: &str) -> Option<ImageFormat> {
    match name.to_ascii_lowercase().as_str() {
        "jpeg" | "jpg" | "image/jpeg" => Some(ImageFormat::Jpeg),
        "png" | "image/png" => Some(ImageFormat::Png),
        "webp" | "image/webp" => Some(ImageFormat::Webp),
        _ => None,
    }
}

const fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::Webp => "webp",
    }
}

#[cfg(test)]
mod tests {
    use framegate_domain::ImageExif;

    use super::*;

    const SHA_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const SHA_B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn image(format: ImageFormat, width: u32, height: u32, sha256: &str) -> ProcessedImage {
        ProcessedImage {
            format,
            width,
            height,
            orientation: 1,
            exif: ImageExif::default(),
            had_gps: false,
            sha256: sha256.to_string(),
            bytes: 1000,
            original: Vec::new(),
            thumbnail_jpeg: Vec::new(),
        }
    }

    fn jpeg(width: u32, height: u32) -> ProcessedImage {
        image(ImageFormat::Jpeg, width, height, SHA_A)
    }

    #[test]
    fn allow_all_allows_everything_and_names_no_rule() {
        assert_eq!(
            AllowAll.review(&jpeg(4096, 4096)),
            ModerationDecision {
                allowed: true,
                rule: None,
                reason: None
            }
        );
    }

    #[test]
    fn no_configuration_means_allow_all() {
        for value in [None, Some(""), Some("   ")] {
            let moderation = from_config(value).expect("valid");
            assert_eq!(
                moderation.review(&jpeg(4096, 4096)),
                ModerationDecision::allow()
            );
        }
    }

    #[test]
    fn a_configured_rule_set_is_used_and_bad_configuration_fails() {
        let moderation = from_config(Some("deny_formats=jpeg")).expect("valid");
        assert!(!moderation.review(&jpeg(300, 300)).allowed);
        assert!(from_config(Some("nonsense")).is_err());
    }

    #[test]
    fn the_example_configuration_parses_into_its_three_rules() {
        let rules = RuleSet::parse(&format!(
            "max_megapixels=12; deny_sha256={SHA_A},{} ;deny_formats=webp;",
            SHA_B.to_uppercase()
        ))
        .expect("valid");
        assert_eq!(
            rules.rules(),
            &[
                Rule::MaxMegapixels {
                    max_pixels: 12_000_000
                },
                Rule::DenySha256(BTreeSet::from([SHA_A.to_string(), SHA_B.to_string()])),
                Rule::DenyFormats(vec![ImageFormat::Webp]),
            ]
        );
    }

    #[test]
    fn an_empty_rule_set_allows_everything() {
        let rules = RuleSet::parse(" ; ").expect("valid");
        assert!(rules.is_empty());
        assert_eq!(rules.review(&jpeg(4096, 4096)), ModerationDecision::allow());
    }

    #[test]
    fn more_megapixels_than_allowed_are_rejected_and_the_limit_itself_is_not() {
        let rules = RuleSet::parse("max_megapixels=12").expect("valid");
        assert_eq!(
            rules.review(&jpeg(4000, 3001)),
            ModerationDecision::reject(
                "max_megapixels",
                "the image has 12.004 megapixels, more than the 12 allowed"
            )
        );
        assert_eq!(rules.review(&jpeg(4000, 3000)), ModerationDecision::allow());
    }

    #[test]
    fn fractional_megapixel_limits_are_exact() {
        let rules = RuleSet::parse("max_megapixels=0.25").expect("valid");
        assert_eq!(
            rules.rules(),
            &[Rule::MaxMegapixels {
                max_pixels: 250_000
            }]
        );
        assert_eq!(rules.review(&jpeg(500, 500)), ModerationDecision::allow());
        assert_eq!(
            rules.review(&jpeg(500, 501)).reason.as_deref(),
            Some("the image has 0.2505 megapixels, more than the 0.25 allowed")
        );
    }

    #[test]
    fn denied_contents_are_rejected_by_their_sha256() {
        let rules = RuleSet::parse(&format!("deny_sha256={SHA_B}")).expect("valid");
        assert_eq!(
            rules.review(&image(ImageFormat::Png, 300, 300, SHA_B)),
            ModerationDecision::reject("deny_sha256", "this content is not accepted")
        );
        assert_eq!(
            rules.review(&image(ImageFormat::Png, 300, 300, SHA_A)),
            ModerationDecision::allow()
        );
    }

    #[test]
    fn denied_formats_are_rejected() {
        let rules = RuleSet::parse("deny_formats=WEBP, jpg").expect("valid");
        assert_eq!(
            rules.review(&image(ImageFormat::Webp, 300, 300, SHA_A)),
            ModerationDecision::reject("deny_formats", "image/webp images are not accepted")
        );
        assert!(!rules.review(&jpeg(300, 300)).allowed);
        assert!(
            rules
                .review(&image(ImageFormat::Png, 300, 300, SHA_A))
                .allowed
        );
    }

    #[test]
    fn the_first_rejecting_rule_in_configuration_order_decides() {
        let huge_webp = image(ImageFormat::Webp, 4096, 4096, SHA_A);
        let formats_first = RuleSet::parse("deny_formats=webp;max_megapixels=1").expect("valid");
        let pixels_first = RuleSet::parse("max_megapixels=1;deny_formats=webp").expect("valid");
        assert_eq!(
            formats_first.review(&huge_webp).rule.as_deref(),
            Some("deny_formats")
        );
        assert_eq!(
            pixels_first.review(&huge_webp).rule.as_deref(),
            Some("max_megapixels")
        );
    }

    #[test]
    fn malformed_unknown_and_duplicate_rules_are_refused() {
        assert_eq!(
            RuleSet::parse("max_megapixels"),
            Err(RuleSetError::Malformed("max_megapixels".into()))
        );
        assert_eq!(
            RuleSet::parse("deny_everything=yes"),
            Err(RuleSetError::UnknownRule("deny_everything".into()))
        );
        assert_eq!(
            RuleSet::parse("deny_formats=png;deny_formats=webp"),
            Err(RuleSetError::DuplicateRule("deny_formats".into()))
        );
    }

    #[test]
    fn invalid_values_are_refused_with_the_rule_and_value_named() {
        for (spec, rule, value) in [
            ("max_megapixels=0", "max_megapixels", "0"),
            ("max_megapixels=-3", "max_megapixels", "-3"),
            ("max_megapixels=1.5e3", "max_megapixels", "1.5e3"),
            ("max_megapixels=0.0000001", "max_megapixels", "0.0000001"),
            ("max_megapixels=.", "max_megapixels", "."),
            ("max_megapixels=", "max_megapixels", ""),
            (
                "max_megapixels=99999999999999999",
                "max_megapixels",
                "99999999999999999",
            ),
            ("deny_sha256=abc", "deny_sha256", "abc"),
            ("deny_sha256=,", "deny_sha256", ","),
            ("deny_formats=gif", "deny_formats", "gif"),
            ("deny_formats=", "deny_formats", ""),
        ] {
            match RuleSet::parse(spec) {
                Err(RuleSetError::InvalidValue {
                    rule: got_rule,
                    value: got_value,
                    ..
                }) => assert_eq!((got_rule.as_str(), got_value.as_str()), (rule, value)),
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_environment_variable() {
        let error = RuleSet::parse("bogus=1").expect_err("unknown rule");
        assert!(error.to_string().starts_with(RULES_ENV), "{error}");
    }

    #[test]
    fn a_rule_set_prints_as_configuration_that_parses_back_to_itself() {
        let rules = RuleSet::parse(&format!(
            "max_megapixels=12.5;deny_sha256={SHA_B},{SHA_A};deny_formats=jpg,webp"
        ))
        .expect("valid");
        let printed = rules.to_string();
        assert_eq!(
            printed,
            format!("max_megapixels=12.5;deny_sha256={SHA_B},{SHA_A};deny_formats=jpeg,webp")
        );
        assert_eq!(printed.parse::<RuleSet>(), Ok(rules));
    }

    #[test]
    fn a_rule_set_can_be_shared_as_the_moderation_hook() {
        let hook: Arc<dyn Moderation> = Arc::new(RuleSet::new(vec![Rule::DenyFormats(vec![
            ImageFormat::Png,
        ])]));
        assert_eq!(
            hook.review(&image(ImageFormat::Png, 300, 300, SHA_A))
                .rule
                .as_deref(),
            Some("deny_formats")
        );
    }
}

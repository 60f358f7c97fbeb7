//! The settings every provider's result downloads share: how large a result may be and
//! whether an upstream may point us at non-public addresses.

/// `true` lets downloads reach loopback, private and link-local addresses (local fakes in
/// tests and `framegate dev`, or a deployment whose providers really live there).
pub const ALLOW_PRIVATE_UPSTREAMS: &str = "FRAMEGATE_ALLOW_PRIVATE_UPSTREAMS";
/// The largest video a provider may hand us, in bytes.
pub const MAX_DOWNLOAD_BYTES: &str = "FRAMEGATE_PROVIDER_MAX_DOWNLOAD_BYTES";

/// The default size cap, from the largest job any adapter can ask for: the longest duration
/// documented (Kling v3, 15 s; Sora stops at 12 s, Veo at 8 s) at the highest resolution (Veo's
/// 4k) at 100 Mbit/s, more than twice the bitrate YouTube recommends for a 4k upload at
/// 24–30 fps (the providers publish no bitrates; ours must simply never be the limit), doubled
/// for margin: 15 s × 100 Mbit/s ÷ 8 × 2 = 375 MB. A catalog that adds longer jobs needs
/// [`MAX_DOWNLOAD_BYTES`] raised with it.
pub const DEFAULT_MAX_VIDEO_BYTES: u64 = LONGEST_SECONDS * GENEROUS_BITS_PER_SECOND / 8 * MARGIN;
const LONGEST_SECONDS: u64 = 15;
const GENEROUS_BITS_PER_SECOND: u64 = 100_000_000;
const MARGIN: u64 = 2;
/// Thumbnails and other stills: a 4k WebP or JPEG is a few megabytes.
pub const MAX_IMAGE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadConfig {
    /// Results longer than this are refused (by `Content-Length` or while streaming).
    pub max_video_bytes: u64,
    /// Skip the address filter (see [`ALLOW_PRIVATE_UPSTREAMS`]).
    pub allow_private: bool,
}

impl Default for DownloadConfig {
    /// The production posture: public addresses only, [`DEFAULT_MAX_VIDEO_BYTES`].
    fn default() -> Self {
        Self {
            max_video_bytes: DEFAULT_MAX_VIDEO_BYTES,
            allow_private: false,
        }
    }
}

impl DownloadConfig {
    /// Reads [`ALLOW_PRIVATE_UPSTREAMS`] and [`MAX_DOWNLOAD_BYTES`]; blank means unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let set = |name: &str| {
            get(name)
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty())
        };
        let allow_private = match set(ALLOW_PRIVATE_UPSTREAMS).as_deref() {
            None | Some("false" | "0" | "no" | "off") => false,
            Some("true" | "1" | "yes" | "on") => true,
            Some(other) => {
                return Err(format!(
                    "{ALLOW_PRIVATE_UPSTREAMS}: {other:?} is not a boolean (true/false)"
                ))
            }
        };
        let max_video_bytes = match set(MAX_DOWNLOAD_BYTES) {
            None => DEFAULT_MAX_VIDEO_BYTES,
            Some(value) => match value.parse::<u64>() {
                Ok(bytes) if bytes > 0 => bytes,
                _ => {
                    return Err(format!(
                        "{MAX_DOWNLOAD_BYTES}: {value:?} is not a positive number of bytes"
                    ))
                }
            },
        };
        Ok(Self {
            max_video_bytes,
            allow_private,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn the_default_filters_addresses_and_caps_at_375_mb() {
        assert_eq!(DEFAULT_MAX_VIDEO_BYTES, 375_000_000);
        assert_eq!(
            DownloadConfig::from_lookup(lookup(&[])),
            Ok(DownloadConfig::default())
        );
        assert!(!DownloadConfig::default().allow_private);
    }

    #[test]
    fn both_settings_are_read_and_bad_values_name_their_variable() {
        let config = DownloadConfig::from_lookup(lookup(&[
            (ALLOW_PRIVATE_UPSTREAMS, "true"),
            (MAX_DOWNLOAD_BYTES, "1048576"),
        ]));
        assert_eq!(
            config,
            Ok(DownloadConfig {
                max_video_bytes: 1 << 20,
                allow_private: true
            })
        );
        for (pairs, variable) in [
            (
                &[(ALLOW_PRIVATE_UPSTREAMS, "maybe")][..],
                ALLOW_PRIVATE_UPSTREAMS,
            ),
            (&[(MAX_DOWNLOAD_BYTES, "0")][..], MAX_DOWNLOAD_BYTES),
            (&[(MAX_DOWNLOAD_BYTES, "1GB")][..], MAX_DOWNLOAD_BYTES),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = pairs;
            let error = DownloadConfig::from_lookup(lookup(pairs)).expect_err(variable);
            assert!(error.starts_with(variable), "{error}");
        }
    }
}

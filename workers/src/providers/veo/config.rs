//! The Veo adapter's configuration: which Google API it speaks (the Gemini API with a key, or
//! Vertex AI with an OAuth access token) and where. Exactly one of the two is configured; a
//! deployment with neither simply has no Veo provider.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::providers::download::DownloadConfig;

pub const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";
pub const DEFAULT_MODEL: &str = "veo-3.1-generate-001";
pub const DEFAULT_VERTEX_LOCATION: &str = "us-central1";
pub const DEFAULT_STORAGE_BASE_URL: &str = "https://storage.googleapis.com/storage/v1";

/// Everything the adapter needs to reach Veo.
#[derive(Clone)]
pub struct VeoConfig {
    pub api: VeoApi,
    /// The model used when a job names none (FRAMEGATE_VEO_MODEL).
    pub default_model: String,
    /// Timeout of one API call (submit, poll).
    pub request_timeout: Duration,
    /// Timeout of one result download, body included.
    pub download_timeout: Duration,
    /// The size cap and address filter of result downloads.
    pub downloads: DownloadConfig,
}

/// The two ways Google serves Veo.
#[derive(Clone)]
pub enum VeoApi {
    /// The Gemini API: `x-goog-api-key`, operations polled with GET.
    Gemini { base_url: String, api_key: String },
    /// Vertex AI: bearer token, operations polled with `fetchPredictOperation`.
    Vertex(VertexConfig),
}

#[derive(Clone)]
pub struct VertexConfig {
    /// Up to and including the version, e.g. `https://us-central1-aiplatform.googleapis.com/v1`.
    pub base_url: String,
    pub project: String,
    pub location: String,
    pub token: VertexToken,
    /// Cloud Storage JSON API base for `gcsUri` results.
    pub storage_base_url: String,
    /// A `gs://bucket/prefix/` Veo writes results to instead of returning them inline.
    pub output_uri: Option<String>,
}

/// Where Vertex access tokens come from.
#[derive(Clone)]
pub enum VertexToken {
    /// A fixed token (FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN); it expires and is not renewed.
    Static(String),
    /// A shell command printing a fresh token (FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND), e.g.
    /// `gcloud auth print-access-token`; re-run when the token ages or is refused.
    Command(String),
}

impl VeoConfig {
    pub fn from_env() -> Result<Option<Self>, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `None` when Veo is not configured at all. Errors name the offending variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        // An empty variable counts as unset (compose files often declare them all).
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let api_key = get("FRAMEGATE_VEO_API_KEY");
        let vertex_vars = [
            "FRAMEGATE_VEO_VERTEX_PROJECT",
            "FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN",
            "FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND",
        ];
        let vertex_wanted = vertex_vars.iter().any(|name| get(name).is_some());
        let api = match (api_key, vertex_wanted) {
            (None, false) => return Ok(None),
            (Some(_), true) => {
                return Err(
                    "FRAMEGATE_VEO_API_KEY: set either the Gemini API key or the \
                            FRAMEGATE_VEO_VERTEX_* settings, not both"
                        .to_owned(),
                )
            }
            (Some(api_key), false) => VeoApi::Gemini {
                base_url: base_url(
                    "FRAMEGATE_VEO_BASE_URL",
                    get("FRAMEGATE_VEO_BASE_URL"),
                    DEFAULT_GEMINI_BASE_URL,
                )?,
                api_key,
            },
            (None, true) => VeoApi::Vertex(vertex(&get)?),
        };
        let default_model = get("FRAMEGATE_VEO_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        if !is_model_id(&default_model) {
            return Err(format!(
                "FRAMEGATE_VEO_MODEL: {default_model:?} is not a model id (letters, digits, . _ -, starting alphanumeric)"
            ));
        }
        Ok(Some(Self {
            api,
            default_model,
            request_timeout: Duration::from_secs(60),
            download_timeout: Duration::from_secs(600),
            downloads: DownloadConfig::from_lookup(get)?,
        }))
    }
}

fn vertex(get: &impl Fn(&str) -> Option<String>) -> Result<VertexConfig, String> {
    let project = get("FRAMEGATE_VEO_VERTEX_PROJECT")
        .ok_or("FRAMEGATE_VEO_VERTEX_PROJECT: required when a Vertex AI token setting is given")?;
    let location =
        get("FRAMEGATE_VEO_VERTEX_LOCATION").unwrap_or_else(|| DEFAULT_VERTEX_LOCATION.to_owned());
    for (name, value) in [
        ("FRAMEGATE_VEO_VERTEX_PROJECT", &project),
        ("FRAMEGATE_VEO_VERTEX_LOCATION", &location),
    ] {
        if !is_model_id(value) {
            return Err(format!(
                "{name}: {value:?} contains characters not allowed in an id"
            ));
        }
    }
    let token = match (
        get("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN"),
        get("FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND"),
    ) {
        (Some(token), None) => VertexToken::Static(token),
        (None, Some(command)) => VertexToken::Command(command),
        (None, None) => {
            return Err("FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND: Vertex AI needs a token; set it \
                        (e.g. `gcloud auth print-access-token`) or FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN"
                .to_owned())
        }
        (Some(_), Some(_)) => {
            return Err("FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND: set it or \
                        FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN, not both"
                .to_owned())
        }
    };
    let output_uri = get("FRAMEGATE_VEO_VERTEX_OUTPUT_URI");
    if let Some(uri) = &output_uri {
        if !uri.starts_with("gs://") || uri.len() <= "gs://".len() {
            return Err(format!(
                "FRAMEGATE_VEO_VERTEX_OUTPUT_URI: expected gs://bucket/prefix/, got {uri:?}"
            ));
        }
    }
    Ok(VertexConfig {
        base_url: base_url(
            "FRAMEGATE_VEO_VERTEX_BASE_URL",
            get("FRAMEGATE_VEO_VERTEX_BASE_URL"),
            &format!("https://{location}-aiplatform.googleapis.com/v1"),
        )?,
        storage_base_url: base_url(
            "FRAMEGATE_VEO_STORAGE_BASE_URL",
            get("FRAMEGATE_VEO_STORAGE_BASE_URL"),
            DEFAULT_STORAGE_BASE_URL,
        )?,
        project,
        location,
        token,
        output_uri,
    })
}

/// An absolute http(s) URL without its trailing slash.
fn base_url(name: &str, value: Option<String>, default: &str) -> Result<String, String> {
    let value = value.unwrap_or_else(|| default.to_owned());
    match Url::parse(&value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        Ok(_) => Err(format!("{name}: expected an http(s) URL, got {value:?}")),
        Err(error) => Err(format!("{name}: {value:?} is not a URL: {error}")),
    }
}

/// Model, project and location ids end up in URL paths: nothing that could change the path
/// (no `/`, `?`, `%`, and no `.` or `..` segment since the first character is alphanumeric).
pub(crate) fn is_model_id(value: &str) -> bool {
    value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keys and tokens stay out of logs.
impl fmt::Debug for VeoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("VeoConfig");
        match &self.api {
            VeoApi::Gemini { base_url, .. } => {
                out.field("api", &"gemini").field("base_url", base_url);
            }
            VeoApi::Vertex(vertex) => {
                let token = match vertex.token {
                    VertexToken::Static(_) => "static (redacted)",
                    VertexToken::Command(_) => "command (redacted)",
                };
                out.field("api", &"vertex")
                    .field("base_url", &vertex.base_url)
                    .field("project", &vertex.project)
                    .field("location", &vertex.location)
                    .field("token", &token)
                    .field("storage_base_url", &vertex.storage_base_url)
                    .field("output_uri", &vertex.output_uri);
            }
        }
        out.field("default_model", &self.default_model)
            .field("request_timeout", &self.request_timeout)
            .field("download_timeout", &self.download_timeout)
            .field("downloads", &self.downloads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn nothing_configured_means_no_veo_provider() {
        assert!(VeoConfig::from_lookup(lookup(&[]))
            .expect("config")
            .is_none());
        let blank = lookup(&[("FRAMEGATE_VEO_API_KEY", " "), ("FRAMEGATE_VEO_MODEL", "x")]);
        assert!(VeoConfig::from_lookup(blank).expect("config").is_none());
    }

    #[test]
    fn an_api_key_selects_the_public_gemini_api_by_default() {
        let config = VeoConfig::from_lookup(lookup(&[("FRAMEGATE_VEO_API_KEY", "k")]))
            .expect("config")
            .expect("configured");
        let VeoApi::Gemini { base_url, api_key } = &config.api else {
            panic!("expected the Gemini API, got {config:?}");
        };
        assert_eq!(base_url, DEFAULT_GEMINI_BASE_URL);
        assert_eq!(api_key, "k");
        assert_eq!(config.default_model, DEFAULT_MODEL);
    }

    #[test]
    fn vertex_defaults_follow_the_location() {
        let config = VeoConfig::from_lookup(lookup(&[
            ("FRAMEGATE_VEO_VERTEX_PROJECT", "my-project"),
            ("FRAMEGATE_VEO_VERTEX_LOCATION", "europe-west4"),
            (
                "FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND",
                "gcloud auth print-access-token",
            ),
            ("FRAMEGATE_VEO_MODEL", "veo-3.1-fast-generate-001"),
        ]))
        .expect("config")
        .expect("configured");
        let VeoApi::Vertex(vertex) = &config.api else {
            panic!("expected Vertex AI, got {config:?}");
        };
        assert_eq!(
            vertex.base_url,
            "https://europe-west4-aiplatform.googleapis.com/v1"
        );
        assert_eq!(vertex.storage_base_url, DEFAULT_STORAGE_BASE_URL);
        assert!(matches!(vertex.token, VertexToken::Command(_)));
        assert_eq!(config.default_model, "veo-3.1-fast-generate-001");
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("FRAMEGATE_VEO_API_KEY", "k"),
                    ("FRAMEGATE_VEO_VERTEX_PROJECT", "p"),
                ],
                "FRAMEGATE_VEO_API_KEY",
            ),
            (
                &[
                    ("FRAMEGATE_VEO_API_KEY", "k"),
                    ("FRAMEGATE_VEO_BASE_URL", "not a url"),
                ],
                "FRAMEGATE_VEO_BASE_URL",
            ),
            (
                &[
                    ("FRAMEGATE_VEO_API_KEY", "k"),
                    ("FRAMEGATE_VEO_MODEL", "../files"),
                ],
                "FRAMEGATE_VEO_MODEL",
            ),
            (
                &[("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN", "t")],
                "FRAMEGATE_VEO_VERTEX_PROJECT",
            ),
            (
                &[("FRAMEGATE_VEO_VERTEX_PROJECT", "p")],
                "FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND",
            ),
            (
                &[
                    ("FRAMEGATE_VEO_VERTEX_PROJECT", "p"),
                    ("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN", "t"),
                    ("FRAMEGATE_VEO_VERTEX_OUTPUT_URI", "s3://bucket"),
                ],
                "FRAMEGATE_VEO_VERTEX_OUTPUT_URI",
            ),
            (
                &[
                    ("FRAMEGATE_VEO_VERTEX_PROJECT", "p"),
                    ("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN", "t"),
                    ("FRAMEGATE_VEO_STORAGE_BASE_URL", "ftp://x"),
                ],
                "FRAMEGATE_VEO_STORAGE_BASE_URL",
            ),
        ];
        for (pairs, variable) in cases {
            let error = VeoConfig::from_lookup(lookup(pairs)).expect_err(variable);
            assert!(error.starts_with(variable), "{variable}: {error}");
        }
    }

    #[test]
    fn debug_output_hides_keys_and_tokens() {
        for pairs in [
            &[("FRAMEGATE_VEO_API_KEY", "secret-key-1")][..],
            &[
                ("FRAMEGATE_VEO_VERTEX_PROJECT", "p"),
                ("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN", "secret-token-1"),
            ][..],
        ] {
            let config = VeoConfig::from_lookup(lookup(pairs))
                .expect("config")
                .expect("configured");
            let printed = format!("{config:?}");
            assert!(!printed.contains("secret"), "{printed}");
        }
    }
}

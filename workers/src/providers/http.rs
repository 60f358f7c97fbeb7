//! What every HTTP adapter shares: the client, the trace context header, Retry-After, and the
//! mapping of HTTP statuses and transport errors onto the one error model
//! ([`crate::provider::codes`]).

use std::time::Duration;

use framegate_commands::TraceContext;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};

use crate::provider::{codes, ProviderFailure};

/// The longest wait an upstream hint may impose on us.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The API client: connect and overall timeouts, and no redirects. An API answers where it
/// is asked; following a redirect would carry our credentials (reqwest strips
/// `Authorization` across hosts, but not `x-goog-api-key`) wherever the answer points, so a
/// 3xx is an unsuccessful status like any other. Result downloads have their own client in
/// [`super::download`].
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("framegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `request` with the W3C trace context of the current span (the `provider.*` call), so a
/// provider or a gateway in front of it that traces joins our trace. Without traces there is
/// no context and no header.
pub fn traced(mut request: RequestBuilder) -> RequestBuilder {
    if let Some(context) = TraceContext::current() {
        for (name, value) in context.headers() {
            request = request.header(name, value);
        }
    }
    request
}

/// `Retry-After` in seconds (the HTTP-date form is rare on APIs and ignored), capped.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds).min(MAX_RETRY_AFTER))
}

/// A millisecond hint header such as OpenAI's `openai-poll-after-ms`, capped.
pub fn millis_header(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let millis: u64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(millis).min(MAX_RETRY_AFTER))
}

/// The failure an unsuccessful HTTP status means when the body says nothing more specific.
pub fn status_failure(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    detail: &str,
) -> ProviderFailure {
    let message = format!("{provider} answered {status}: {detail}");
    let failure = match status.as_u16() {
        400 | 409 | 413 | 415 | 422 => {
            ProviderFailure::new(codes::INVALID_REQUEST, message, false, false)
        }
        401 | 403 => ProviderFailure::new(codes::AUTH_FAILED, message, false, false),
        402 => ProviderFailure::new(codes::QUOTA_EXHAUSTED, message, false, false),
        404 | 410 => ProviderFailure::new(codes::NOT_FOUND, message, false, false),
        408 | 504 => ProviderFailure::new(codes::UPSTREAM_TIMEOUT, message, true, false),
        429 => ProviderFailure::new(codes::RATE_LIMITED, message, true, false),
        _ if status.is_server_error() => {
            ProviderFailure::new(codes::UPSTREAM_UNAVAILABLE, message, true, false)
        }
        _ => ProviderFailure::new(codes::UPSTREAM_UNAVAILABLE, message, false, false),
    };
    failure.with_retry_after(retry_after(headers))
}

/// A request that never got an HTTP answer: always worth retrying later.
pub fn transport_failure(provider: &str, error: reqwest::Error) -> ProviderFailure {
    let code = if error.is_timeout() {
        codes::UPSTREAM_TIMEOUT
    } else {
        codes::UPSTREAM_UNAVAILABLE
    };
    // Without the URL: it may carry a key in its query string.
    let error = error.without_url();
    ProviderFailure::new(
        code,
        format!("{provider} unreachable: {error}"),
        true,
        false,
    )
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn statuses_map_onto_the_error_model() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let cases = [
            (400, codes::INVALID_REQUEST, false),
            (401, codes::AUTH_FAILED, false),
            (403, codes::AUTH_FAILED, false),
            (404, codes::NOT_FOUND, false),
            (429, codes::RATE_LIMITED, true),
            (500, codes::UPSTREAM_UNAVAILABLE, true),
            (503, codes::UPSTREAM_UNAVAILABLE, true),
            (504, codes::UPSTREAM_TIMEOUT, true),
        ];
        for (status, code, retryable) in cases {
            let status = StatusCode::from_u16(status).expect("status");
            let failure = status_failure("p", status, &headers, "x");
            assert_eq!(
                (failure.code.as_str(), failure.retryable),
                (code, retryable),
                "{status}"
            );
            assert!(!failure.charged);
            assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));
        }
    }

    #[test]
    fn retry_hints_are_parsed_and_capped() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
        headers.insert("openai-poll-after-ms", HeaderValue::from_static("2500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        assert_eq!(
            millis_header(&headers, "openai-poll-after-ms"),
            Some(Duration::from_millis(2500))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}

//! What users are told about a failed video or attempt: a short message of ours for each
//! stable failure code, never the provider's own text.
//!
//! Provider error bodies, gateway pages and the stderr of a token command can carry request
//! ids, internal hostnames, quota details or worse. The events keep that text (the audit
//! log and the admin view show it, the worker logs it); what the API shows a user is the code
//! and the sentence below.

/// The message shown to users for failure `code`.
pub fn public_message(code: &str) -> &'static str {
    match code {
        "moderated" => "the provider's content policy refused this request",
        "invalid_request" => "the provider refused the request's settings",
        "auth_failed" => "the platform could not authenticate with the provider",
        "quota_exhausted" => "the provider's quota for this platform is used up",
        "rate_limited" => "the provider is limiting requests; it will be tried again",
        "upstream_unavailable" | "provider_unavailable" => "the provider is unavailable",
        "upstream_timeout" => "the provider did not answer in time",
        "result_expired" => "the provider's result expired before it could be fetched",
        "generation_failed" => "the provider could not generate this video",
        "not_found" => "the provider no longer knows this job",
        "submission_unknown" => "whether the provider accepted the job could not be confirmed",
        "invalid_output" => "the provider's result is not a playable video",
        "invalid_image" | "image_unavailable" => "the start image could not be used",
        "deadline_exceeded" => "the video did not finish in time",
        "cancelled" => "the video was cancelled",
        _ => "the video could not be generated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::codes;

    #[test]
    fn every_provider_code_has_a_message_of_its_own() {
        let all = [
            codes::MODERATED,
            codes::INVALID_REQUEST,
            codes::AUTH_FAILED,
            codes::QUOTA_EXHAUSTED,
            codes::RATE_LIMITED,
            codes::UPSTREAM_UNAVAILABLE,
            codes::UPSTREAM_TIMEOUT,
            codes::RESULT_EXPIRED,
            codes::GENERATION_FAILED,
            codes::NOT_FOUND,
            codes::SUBMISSION_UNKNOWN,
            codes::INVALID_OUTPUT,
        ];
        let fallback = public_message("no such code");
        for code in all {
            assert_ne!(public_message(code), fallback, "{code}");
        }
    }
}

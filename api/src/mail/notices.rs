//! The notification mails users opt into (`PATCH /v1/me`): what each says.
//!
//! Plain text and short: what happened, a link, and how to stop them. The facts are fixed
//! when the notification is recorded (`crate::notifications`); the links are built when it
//! is sent, from the public URL the sending process is configured with. A failure is told
//! in our words (`public_message`), never the provider's.

use framegate_domain::public_message;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most characters of a prompt a mail quotes to say which video it is about.
const PROMPT_CHARS: usize = 80;

/// One notification, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    VideoCompleted {
        video_id: Uuid,
        prompt: String,
    },
    VideoFailed {
        video_id: Uuid,
        prompt: String,
        /// The stable failure code; the mail gives its public message.
        code: String,
    },
    /// An event took the available balance from `threshold` or more to `available`.
    CreditsLow {
        available: i64,
        threshold: i64,
    },
}

impl Notice {
    /// The outbox row's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::VideoCompleted { .. } => "video_completed",
            Notice::VideoFailed { .. } => "video_failed",
            Notice::CreditsLow { .. } => "credits_low",
        }
    }

    /// The preference that turns this notice off.
    fn preference(&self) -> &'static str {
        match self {
            Notice::VideoCompleted { .. } => "video_completed",
            Notice::VideoFailed { .. } => "video_failed",
            Notice::CreditsLow { .. } => "credits_low",
        }
    }

    /// Subject and body.
    pub fn text(&self, public_url: &str) -> (String, String) {
        let (subject, body) = match self {
            Notice::VideoCompleted { video_id, prompt } => (
                "Your video is ready".to_owned(),
                format!(
                    "Your video \"{}\" is ready.\n\n\
                     Watch or download it: {public_url}/v1/videos/{video_id}/content\n\
                     Details: {public_url}/v1/videos/{video_id}\n",
                    excerpt(prompt)
                ),
            ),
            Notice::VideoFailed {
                video_id,
                prompt,
                code,
            } => (
                "Your video could not be made".to_owned(),
                format!(
                    "Your video \"{}\" failed: {} ({code}).\n\n\
                     Details and credits: {public_url}/v1/videos/{video_id}\n",
                    excerpt(prompt),
                    public_message(code)
                ),
            ),
            Notice::CreditsLow {
                available,
                threshold,
            } => (
                "Your credits are running low".to_owned(),
                format!(
                    "Your available balance is {available} credits, below your alert \
                     threshold of {threshold}.\n\nBalance and history: {public_url}/v1/credits\n"
                ),
            ),
        };
        let unsubscribe = format!(
            "\n--\nYou get this email because you turned on {0} notifications. To stop them: \
             PATCH {public_url}/v1/me with {{\"notify\": {{\"{0}\": false}}}}\n",
            self.preference()
        );
        (subject, body + &unsubscribe)
    }
}

/// The start of a prompt on one line: what a reader needs to tell their videos apart.
fn excerpt(prompt: &str) -> String {
    let line: String = prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if line.chars().count() <= PROMPT_CHARS {
        return line;
    }
    let cut: String = line.chars().take(PROMPT_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://api.example.com";

    #[test]
    fn a_completed_video_mail_links_to_the_content_and_says_how_to_stop() {
        let id = Uuid::from_u128(7);
        let notice = Notice::VideoCompleted {
            video_id: id,
            prompt: "a paper boat\non a rainy street".to_owned(),
        };
        let (subject, body) = notice.text(URL);
        assert_eq!(subject, "Your video is ready");
        assert!(
            body.contains("\"a paper boat on a rainy street\""),
            "{body}"
        );
        assert!(
            body.contains(&format!("{URL}/v1/videos/{id}/content")),
            "{body}"
        );
        assert!(
            body.contains(&format!(
                "PATCH {URL}/v1/me with {{\"notify\": {{\"video_completed\": false}}}}"
            )),
            "{body}"
        );
    }

    #[test]
    fn a_failed_video_mail_gives_our_reason_not_the_providers() {
        let notice = Notice::VideoFailed {
            video_id: Uuid::from_u128(8),
            prompt: "x".to_owned(),
            code: "moderated".to_owned(),
        };
        let (_, body) = notice.text(URL);
        assert!(
            body.contains("failed: the provider's content policy refused this request (moderated)"),
            "{body}"
        );
        assert!(body.contains("\"video_failed\": false"), "{body}");
    }

    #[test]
    fn a_low_credit_mail_names_the_balance_and_the_threshold() {
        let (_, body) = Notice::CreditsLow {
            available: 40,
            threshold: 100,
        }
        .text(URL);
        assert!(
            body.contains("is 40 credits, below your alert threshold of 100"),
            "{body}"
        );
        assert!(body.contains("\"credits_low\": false"), "{body}");
    }

    #[test]
    fn long_prompts_are_cut_on_one_line() {
        let long = format!("{}\tend", "word ".repeat(40));
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), PROMPT_CHARS);
        assert!(cut.ends_with('…') && !cut.contains('\t'));
        assert_eq!(excerpt("short"), "short");
    }

    #[test]
    fn a_notice_round_trips_through_the_outbox_json() {
        let notice = Notice::CreditsLow {
            available: 3,
            threshold: 10,
        };
        let json = serde_json::to_value(&notice).expect("json");
        assert_eq!(json["type"], "credits_low");
        assert_eq!(
            serde_json::from_value::<Notice>(json).expect("back"),
            notice
        );
    }
}

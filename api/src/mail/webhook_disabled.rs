//! The mail telling an owner that the platform disabled one of their webhook endpoints (it
//! answered 410 Gone, or failed for days), and how to turn it back on.

use framegate_domain::UserId;
use framegate_projections::read_models::users;
use uuid::Uuid;

use crate::state::AppState;

pub(super) struct Notice<'a> {
    pub endpoint_id: Uuid,
    pub url: Option<&'a str>,
    /// `gone` or `failing`.
    pub reason: &'a str,
    pub detail: &'a str,
}

pub(super) async fn send(
    state: &AppState,
    user_id: UserId,
    notice: &Notice<'_>,
) -> Result<(), String> {
    let Some(user) = users::get(&state.pool, user_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let text = text(&state.config.public_url, notice);
    state
        .mailer
        .send(&user.email, "A webhook endpoint was disabled", &text)
        .await
        .map_err(|e| e.to_string())
}

fn text(public_url: &str, notice: &Notice<'_>) -> String {
    let why = match notice.reason {
        "gone" => "it answered 410 Gone, which says it no longer wants deliveries",
        _ => "every delivery to it failed for days",
    };
    format!(
        "Framegate stopped sending webhooks to your endpoint {url} ({id}): {why}.\n\n\
         Last problem: {detail}\n\n\
         Deliveries queued for it are not sent while it is disabled. Once it works again, \
         enable it:\n\n  PATCH {public_url}/v1/webhooks/{id}  {{\"enabled\": true}}\n\n\
         and send any delivery again with\n\n  POST {public_url}/v1/webhooks/{id}/deliveries/<delivery id>/retry\n\n\
         The delivery log is at GET {public_url}/v1/webhooks/{id}/deliveries.\n",
        url = notice.url.unwrap_or("(deleted)"),
        id = notice.endpoint_id,
        detail = notice.detail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mail_names_the_endpoint_the_reason_and_how_to_enable_it() {
        let id = Uuid::nil();
        let text = text(
            "https://api.example.com",
            &Notice {
                endpoint_id: id,
                url: Some("https://hooks.example.com/in"),
                reason: "failing",
                detail: "answered 500",
            },
        );
        assert!(text.contains("https://hooks.example.com/in"));
        assert!(text.contains("failed for days"));
        assert!(text.contains("answered 500"));
        assert!(text.contains(&format!("PATCH https://api.example.com/v1/webhooks/{id}")));
    }
}

//! The signed-in user: `GET /v1/me`, and `PATCH /v1/me` for the notification preferences.
//!
//! Preferences are recorded on the `User` aggregate (`NotificationPreferencesChanged`, the
//! whole new set) and shown from the `users` read model, written in the same transaction, so
//! the answer to the PATCH and the next GET show the change. A patch names only what it
//! changes; `null` is refused rather than read as "leave alone", so a client that meant to
//! clear something learns that it cannot.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use framegate_domain::{Credits, NotificationPreferences, PreferencesChange, UserCommand};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{metadata, user_or_404, UserResponse};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{user_agent, ApiJson, ClientIp};
use crate::state::AppState;

/// Which notification mails a user receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct NotifyPreferences {
    /// Mail when a video completes, with a link to it.
    pub video_completed: bool,
    /// Mail when a video fails, with the reason.
    pub video_failed: bool,
    /// Mail when the available balance falls below `credits_low_threshold` (once per fall).
    pub credits_low: bool,
    /// Credits, zero or more (default 100); also the `credits.low` webhook's threshold.
    pub credits_low_threshold: i64,
}

impl From<NotificationPreferences> for NotifyPreferences {
    fn from(p: NotificationPreferences) -> Self {
        Self {
            video_completed: p.video_completed,
            video_failed: p.video_failed,
            credits_low: p.credits_low,
            credits_low_threshold: p.credits_low_threshold.value(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[serde(default, deserialize_with = "present")]
    pub notify: Option<NotifyPatch>,
}

/// The preferences to change; those left out keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyPatch {
    #[serde(default, deserialize_with = "present")]
    pub video_completed: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub video_failed: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub credits_low: Option<bool>,
    /// Credits, zero or more.
    #[serde(default, deserialize_with = "present")]
    pub credits_low_threshold: Option<i64>,
}

/// A field that, when present, must hold a value: `null` is refused (`invalid_field`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl NotifyPatch {
    fn change(&self) -> Result<PreferencesChange, ApiError> {
        if self.credits_low_threshold.is_some_and(|t| t < 0) {
            return Err(ApiError::field(
                "notify.credits_low_threshold",
                "out_of_range",
                "the threshold is a number of credits, zero or more",
            ));
        }
        Ok(PreferencesChange {
            video_completed: self.video_completed,
            video_failed: self.video_failed,
            credits_low: self.credits_low,
            credits_low_threshold: self.credits_low_threshold.map(Credits::new),
        })
    }
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", tag = "auth", responses((status = 200, body = UserResponse)),
    security(("bearer" = [])))]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<UserResponse>, ApiError> {
    Ok(Json(user_or_404(&state, principal.user_id).await?.into()))
}

/// Changes the signed-in user's notification preferences (opt-in email for completed and
/// failed videos and a low balance; all off until set). With an API key, only a key holding
/// every scope may.
#[utoipa::path(patch, path = "/v1/me", tag = "auth", request_body = UpdateMeRequest,
    responses((status = 200, body = UserResponse),
              (status = 422, description = "validation_failed: invalid_field / duplicate_field / out_of_range")),
    security(("bearer" = [])))]
pub async fn update_me(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let change = body.notify.unwrap_or_default().change()?;
    if change != PreferencesChange::default() {
        let meta = metadata(Some(&principal), ip, user_agent(&headers));
        let command = UserCommand::ChangeNotificationPreferences { change };
        state
            .store
            .users()
            .execute(&principal.user_id.to_string(), command, &meta)
            .await?;
    }
    Ok(Json(user_or_404(&state, principal.user_id).await?.into()))
}

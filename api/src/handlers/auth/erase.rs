//! `DELETE /v1/me`: the right to erasure, asked for by the user (with their password).
//!
//! `framegate_commands::erasure` records `UserErased`, destroys the data key and scrubs the
//! copies in one transaction (docs/adr/0043-crypto-shredding.md). The answer is 204; the
//! account's tokens stop working at once, and its email address can register again.

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use framegate_commands::erasure;
use framegate_domain::ErasedBy;
use serde::Deserialize;
use utoipa::ToSchema;

use super::super::metadata;
use crate::auth::{Credential, Principal};
use crate::error::ApiError;
use crate::extract::{user_agent, ApiJson, ClientIp};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseMeRequest {
    /// The account's password, confirming the erasure.
    pub password: String,
}

/// Erases the signed-in account for good: email, IP addresses and prompts become unreadable
/// everywhere, files are deleted; credits and videos stay as anonymous records. Only with a
/// token (an API key cannot erase its owner).
#[utoipa::path(delete, path = "/v1/me", tag = "auth", request_body = EraseMeRequest,
    responses((status = 204, description = "erased"),
              (status = 403, description = "forbidden (an API key)"),
              (status = 422, description = "validation_failed: invalid_password"),
              (status = 429, description = "rate_limited (wrong passwords count as failed logins)")),
    security(("bearer" = [])))]
pub async fn delete_me(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    extensions: Extensions,
    ApiJson(body): ApiJson<EraseMeRequest>,
) -> Result<StatusCode, ApiError> {
    if matches!(principal.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::Forbidden);
    }
    let id = principal.user_id;
    // A wrong password here is a failed login: a stolen session must not make this a way to
    // guess the password faster than the login allows.
    let attempt = state
        .limits
        .check_login_attempt(ip, &format!("user:{id}"), &extensions)?;
    let user = state.store.users().load(&id.to_string()).await?;
    let accepted = state
        .passwords
        .verify(&body.password, user.password_hash())
        .await
        .map_err(ApiError::internal)?;
    if !accepted {
        return Err(ApiError::field(
            "password",
            "invalid_password",
            "the password is not the account's",
        ));
    }
    attempt.password_accepted();
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    erasure::erase(&state.store, id, ErasedBy::Owner, &meta).await?;
    state.credentials.forget_user(id.as_uuid());
    Ok(StatusCode::NO_CONTENT)
}

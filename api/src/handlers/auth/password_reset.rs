//! Password reset: a request mails a token (from the outbox, off the request path), the
//! confirmation sets the password and ends every session in the same transaction.

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use framegate_commands::sessions::{self, EndReason};
use framegate_domain::{normalize_email, UserCommand};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    check_password, metadata, token_command_error, token_user, MAX_PASSWORD, MIN_PASSWORD,
};
use crate::error::{ApiError, FieldError};
use crate::extract::{user_agent, ApiJson, ClientIp};
use crate::mail::outbox::{self, Outgoing};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    pub email: String,
}

/// Emails a password-reset token if the address has an account. Always 202, after the same
/// work either way: the mail is sent from the outbox, off the request path.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = PasswordResetRequest,
    responses((status = 202, description = "if the account exists, an email is on its way")))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    extensions: Extensions,
    ApiJson(body): ApiJson<PasswordResetRequest>,
) -> Result<StatusCode, ApiError> {
    let Ok(email) = normalize_email(&body.email) else {
        return Err(ApiError::field(
            "email",
            "invalid_email",
            "this is not a valid email address",
        ));
    };
    state.limits.check_password_reset(ip, &extensions)?;
    // The same one statement whether or not the address has an account: the outbox's sender
    // decides, off the request path, so the answer's timing tells nothing.
    let meta = metadata(None, ip, user_agent(&headers));
    let request = Outgoing::PasswordReset {
        email,
        request_id: meta.request_id,
        ip,
        user_agent: meta.user_agent,
    };
    let mut conn = state.pool.acquire().await?;
    outbox::enqueue(&mut conn, &request).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    pub token: String,
    pub new_password: String,
}

/// Sets a new password with a reset token. Every session of the user ends with it (their
/// refresh and access tokens stop working at once), and the user is emailed a confirmation
/// listing their API keys, which a reset does not revoke.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = PasswordResetConfirm,
    responses((status = 204, description = "password changed"), (status = 422, description = "invalid_token / token_expired")))]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    extensions: Extensions,
    ApiJson(body): ApiJson<PasswordResetConfirm>,
) -> Result<StatusCode, ApiError> {
    let user_id = token_user(&body.token)?;
    state.limits.check_password_reset(ip, &extensions)?;
    check_password(&body.new_password).map_err(|_| {
        ApiError::Validation(vec![FieldError::new(
            "new_password",
            "invalid_length",
            format!("passwords are {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        )])
    })?;
    let password_hash = state
        .passwords
        .hash(&body.new_password)
        .await
        .map_err(ApiError::internal)?;
    let meta = metadata(None, ip, user_agent(&headers));
    let command = UserCommand::CompletePasswordReset {
        token: body.token,
        password_hash,
    };
    let confirmation = Outgoing::PasswordWasReset {
        user_id: user_id.as_uuid(),
    };
    let also = sessions::also_in_transaction(|conn| {
        let confirmation = confirmation.clone();
        Box::pin(async move { outbox::enqueue(conn, &confirmation).await })
    });
    sessions::execute_ending_sessions(
        &state.store,
        user_id,
        command,
        EndReason::PasswordReset,
        &meta,
        Some(&also),
    )
    .await
    .map_err(token_command_error)?;
    state.credentials.forget_user(user_id.as_uuid());
    Ok(StatusCode::NO_CONTENT)
}

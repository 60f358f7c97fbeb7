//! Log in, refresh, log out (one session or all): each login is a session, and ending one
//! ends its refresh and access tokens at once (`framegate_commands::sessions`).

use axum::extract::State;
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use framegate_commands::users::registered_user_by_email;
use framegate_commands::CommandError;
use framegate_domain::{normalize_email, Role, UserError, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::refresh::{self, Rotation};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
}

async fn token_pair(
    state: &AppState,
    user_id: UserId,
    role: Role,
    session_id: Uuid,
    refresh_token: String,
) -> Result<TokenResponse, ApiError> {
    let access = state.tokens.issue(user_id, role, session_id)?;
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in.as_secs(),
        refresh_token,
    })
}

/// Exchanges email and password for an access token and a refresh token (a new session).
///
/// Throttled per client IP (every attempt) and by failures: an IP that keeps failing on an
/// account gets 429 for it, and while an account takes more failures than its budget only
/// IPs that have not been failing on it may try. The right password from elsewhere still
/// works, so guessing cannot lock the owner out.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_credentials"),
              (status = 403, description = "account_disabled"),
              (status = 429, description = "rate_limited (too many attempts from this IP, or failures from this IP on this account; see Retry-After)")))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    extensions: Extensions,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = normalize_email(&body.email).unwrap_or_else(|_| body.email.trim().to_lowercase());
    // Counted as a failure unless the password is accepted below (rate_limit::login).
    let attempt = state.limits.check_login_attempt(ip, &email, &extensions)?;
    let invalid =
        || ApiError::unauthenticated("invalid_credentials", "the email or password is wrong");
    let user_id = registered_user_by_email(&state.pool, &email).await?;
    // With the sequence it is at: the session starts only if nothing changed since.
    let user = match user_id {
        Some(id) => Some(state.store.users().replay(&id.to_string()).await?),
        None => None,
    };
    let verified = state
        .passwords
        .verify(
            &body.password,
            user.as_ref().and_then(|(u, _)| u.password_hash()),
        )
        .await
        .map_err(ApiError::internal)?;
    let (Some(user_id), Some((user, checked_at)), true) = (user_id, user, verified) else {
        return Err(invalid());
    };
    attempt.password_accepted();
    if user.is_disabled() {
        return Err(ApiError::AccountDisabled);
    }
    let Some(login) =
        refresh::start_session(&state.pool, user_id, checked_at, state.config.refresh_ttl).await?
    else {
        // A reset, a disable or another change landed while the password was checked: the
        // password may no longer be the account's. The client logs in again.
        return Err(CommandError::<UserError>::Conflict.into());
    };
    let tokens = token_pair(
        &state,
        user_id,
        user.role(),
        login.session_id,
        login.refresh_token,
    )
    .await?;
    Ok(Json(tokens).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Rotates a refresh token: returns a new pair; the presented token is spent.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "invalid_refresh_token / refresh_token_reused / refresh_token_expired")))]
pub async fn refresh_tokens(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    match refresh::rotate(&state.pool, &body.refresh_token, state.config.refresh_ttl).await? {
        Rotation::Rotated {
            user_id,
            session_id,
            token,
        } => {
            let user = state.store.users().load(&user_id.to_string()).await?;
            if user.is_disabled() {
                return Err(ApiError::unauthenticated(
                    "account_disabled",
                    "this account is disabled",
                ));
            }
            let tokens = token_pair(&state, user_id, user.role(), session_id, token).await?;
            Ok(Json(tokens).into_response())
        }
        Rotation::Reused { user_id } => {
            // Other API processes hear the announcement; this one refuses the session's
            // access tokens from the next request on.
            state.credentials.forget_user(user_id.as_uuid());
            Err(ApiError::unauthenticated(
                "refresh_token_reused",
                "this refresh token was already used; its session has ended, log in again",
            ))
        }
        Rotation::Expired => Err(ApiError::unauthenticated(
            "refresh_token_expired",
            "the refresh token has expired",
        )),
        Rotation::Invalid => Err(ApiError::unauthenticated(
            "invalid_refresh_token",
            "the refresh token is not valid",
        )),
    }
}

/// Ends the session the refresh token belongs to: its refresh tokens and the access tokens
/// issued in it stop working at once (again: still 204). A token never issued is 401, so a
/// client learns that its logout did not log anything out.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "logged out"),
              (status = 401, description = "invalid_refresh_token")))]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let Some(user_id) = refresh::end_session(&state.pool, &body.refresh_token).await? else {
        return Err(ApiError::unauthenticated(
            "invalid_refresh_token",
            "the refresh token is not valid",
        ));
    };
    // Other API processes hear the announcement; this one answers its caller's next request.
    state.credentials.forget_user(user_id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutAllResponse {
    /// How many sessions were live and have ended (the caller's own included).
    pub sessions_ended: u64,
}

/// "Log out everywhere": ends every session of the signed-in user, with their refresh and
/// access tokens, at once. API keys are not sessions and keep working (revoke them under
/// `/v1/api-keys`).
#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "auth",
    responses((status = 200, body = LogoutAllResponse), (status = 401, description = "unauthenticated")),
    security(("bearer" = [])))]
pub async fn logout_all(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<LogoutAllResponse>, ApiError> {
    let sessions_ended = refresh::end_all_sessions(&state.pool, principal.user_id).await?;
    state.credentials.forget_user(principal.user_id.as_uuid());
    Ok(Json(LogoutAllResponse { sessions_ended }))
}

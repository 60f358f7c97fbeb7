//! Accounts and sessions: register, verify email, log in, refresh, log out, reset password.
//!
//! One-time tokens are `<user id>.<random>`: the id finds the aggregate, the random part is
//! checked against the hash stored in its events (single use, expiring). Unknown emails and
//! wrong passwords get the same answer after the same work, and password-reset requests always
//! answer 202, so neither reveals which addresses have accounts.

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_commands::users::{
    register as register_user, registered_user_by_email, Registration,
};
use framegate_commands::verification::{verify_email as verify_email_with_credits, VerifyError};
use framegate_domain::{
    hash_token, normalize_email, CreditCommand, Credits, Role, UserCommand, UserId,
};
use framegate_projections::read_models::users;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::metadata;
use crate::auth::refresh::{self, generate_secret, Rotation};
use crate::auth::Principal;
use crate::config::SignupCreditsOn;
use crate::error::{ApiError, FieldError};
use crate::extract::{user_agent, ApiJson, ClientIp};
use crate::state::AppState;

const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 256;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<users::UserRow> for UserResponse {
    fn from(row: users::UserRow) -> Self {
        Self {
            id: row.id,
            email: row.email,
            email_verified: row.email_verified,
            role: row.role,
            disabled: row.disabled,
            created_at: row.created_at,
        }
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        return Err(ApiError::field(
            "password",
            "invalid_length",
            format!("passwords are {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// A one-time token naming its user: `<user id>.<random>`.
fn one_time_token(user_id: UserId) -> String {
    format!("{user_id}.{}", generate_secret(""))
}

fn token_user(token: &str) -> Result<UserId, ApiError> {
    token
        .split_once('.')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| ApiError::field("token", "invalid_token", "this token is not valid"))
}

/// A one-time token naming a user who does not exist is just an invalid token.
fn token_command_error(
    error: framegate_commands::CommandError<framegate_domain::UserError>,
) -> ApiError {
    match error {
        framegate_commands::CommandError::Domain(framegate_domain::UserError::NotRegistered) => {
            ApiError::field("token", "invalid_token", "this token is not valid")
        }
        other => other.into(),
    }
}

pub(crate) async fn user_or_404(
    state: &AppState,
    user_id: UserId,
) -> Result<users::UserRow, ApiError> {
    users::get(&state.pool, user_id)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Registers a user and emails a verification link. The sign-up credits are granted when the
/// address is verified (`FRAMEGATE_SIGNUP_CREDITS_ON=verify`, the default) or at once
/// (`register`); the answer's `signup_credits` says which.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse), (status = 409, description = "email_taken"),
              (status = 422, description = "validation_failed / invalid_email")))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let email = normalize_email(&body.email).map_err(|_| {
        ApiError::field(
            "email",
            "invalid_email",
            "this is not a valid email address",
        )
    })?;
    check_password(&body.password)?;
    // A taken address is refused before the (deliberately slow) hash is paid for; the
    // event store's unique index still decides between concurrent registrations.
    if registered_user_by_email(&state.pool, &email)
        .await?
        .is_some()
    {
        return Err(
            framegate_commands::CommandError::<framegate_domain::UserError>::EmailTaken.into(),
        );
    }
    let user_id = UserId::from_uuid(Uuid::now_v7());
    let meta = metadata(None, ip, user_agent(&headers));
    let token = one_time_token(user_id);
    let password_hash = state
        .passwords
        .hash(&body.password)
        .await
        .map_err(ApiError::internal)?;
    let registration = Registration {
        user_id,
        email: email.clone(),
        password_hash,
        verification_token_hash: hash_token(&token),
        verification_expires_at: Utc::now()
            + chrono::Duration::from_std(state.config.verification_ttl).unwrap_or_default(),
        role: Role::User,
    };
    register_user(&state.store, registration, &meta).await?;
    let signup = SignupCredits::of(&state.config);
    if signup.granted {
        let grant = CreditCommand::GrantSignup {
            amount: Credits::new(signup.amount),
        };
        state
            .store
            .credits()
            .execute(&user_id.to_string(), grant, &meta)
            .await?;
    }
    send_verification(&state, &email, &token).await;
    let user = users::get(&state.pool, user_id).await?;
    let user = match user {
        Some(row) => UserResponse::from(row),
        None => UserResponse {
            id: user_id.as_uuid(),
            email,
            email_verified: false,
            role: "user".into(),
            disabled: false,
            created_at: Utc::now(),
        },
    };
    let body = RegisterResponse {
        user,
        signup_credits: signup,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A registration's answer: the user, and what becomes of the sign-up credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    #[serde(flatten)]
    pub user: UserResponse,
    pub signup_credits: SignupCredits,
}

/// The sign-up credits of a new account.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignupCredits {
    pub amount: i64,
    /// `verification` (the default: granted when the email address is verified, with
    /// `POST /v1/auth/verify-email`) or `registration`.
    pub granted_on: &'static str,
    /// Whether they are on the account already.
    pub granted: bool,
}

impl SignupCredits {
    fn of(config: &crate::config::ApiConfig) -> Self {
        Self {
            amount: config.signup_credits,
            granted_on: config.signup_credits_on.as_str(),
            granted: config.signup_credits > 0
                && config.signup_credits_on == SignupCreditsOn::Register,
        }
    }
}

async fn send_verification(state: &AppState, email: &str, token: &str) {
    let link = format!("{}/verify-email?token={token}", state.config.public_url);
    let text = format!(
        "Welcome to Framegate.\n\nConfirm your email address with this token:\n\n{token}\n\nor open {link}\n\nThe token expires in {} hours.\n",
        state.config.verification_ttl.as_secs() / 3600
    );
    if let Err(error) = state
        .mailer
        .send(email, "Confirm your email address", &text)
        .await
    {
        // The account exists either way; the user can ask for a new link.
        tracing::error!(%error, "could not send the verification email");
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub token: String,
}

/// Confirms an email address with the emailed token, and grants the sign-up credits that
/// waited for it in the same transaction (once per account).
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = UserResponse), (status = 422, description = "invalid_token / token_expired / already_verified")))]
pub async fn verify_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let user_id = token_user(&body.token)?;
    let meta = metadata(None, ip, user_agent(&headers));
    // Whatever the policy now: an account granted at registration is left alone (the grant
    // is once per account), and one registered while credits waited for verification still
    // gets them after the operator switched to `register`.
    let signup =
        (state.config.signup_credits > 0).then(|| Credits::new(state.config.signup_credits));
    verify_email_with_credits(&state.store, user_id, body.token, signup, &meta)
        .await
        .map_err(|error| match error {
            VerifyError::User(error) => token_command_error(error),
            VerifyError::Credits(error) => error.into(),
        })?;
    let user = user_or_404(&state, user_id).await?;
    Ok(Json(UserResponse::from(user)).into_response())
}

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
    refresh_token: String,
) -> Result<TokenResponse, ApiError> {
    let access = state.tokens.issue(user_id, role)?;
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in.as_secs(),
        refresh_token,
    })
}

/// Exchanges email and password for an access token and a refresh token.
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
    let user = match user_id {
        Some(id) => Some(state.store.users().load(&id.to_string()).await?),
        None => None,
    };
    let verified = state
        .passwords
        .verify(
            &body.password,
            user.as_ref().and_then(|u| u.password_hash()),
        )
        .await
        .map_err(ApiError::internal)?;
    let (Some(user_id), Some(user), true) = (user_id, user, verified) else {
        return Err(invalid());
    };
    attempt.password_accepted();
    if user.is_disabled() {
        return Err(ApiError::AccountDisabled);
    }
    let refresh_token =
        refresh::start_family(&state.pool, user_id, state.config.refresh_ttl).await?;
    Ok(Json(token_pair(&state, user_id, user.role(), refresh_token).await?).into_response())
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
        Rotation::Rotated { user_id, token } => {
            let user = state.store.users().load(&user_id.to_string()).await?;
            if user.is_disabled() {
                return Err(ApiError::unauthenticated(
                    "account_disabled",
                    "this account is disabled",
                ));
            }
            Ok(Json(token_pair(&state, user_id, user.role(), token).await?).into_response())
        }
        Rotation::Reused => Err(ApiError::unauthenticated(
            "refresh_token_reused",
            "this refresh token was already used; every session of this login has been revoked",
        )),
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

/// Ends the session the refresh token belongs to (again: still 204); a token never issued
/// is 401, so a client learns that its logout did not log anything out.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "logged out"),
              (status = 401, description = "invalid_refresh_token")))]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    if !refresh::revoke_family(&state.pool, &body.refresh_token).await? {
        return Err(ApiError::unauthenticated(
            "invalid_refresh_token",
            "the refresh token is not valid",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    pub email: String,
}

/// Emails a password-reset token if the address has an account. Always 202.
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
    state.limits.check_login(ip, &email, &extensions)?;
    if let Some(user_id) = registered_user_by_email(&state.pool, &email).await? {
        let token = one_time_token(user_id);
        let command = UserCommand::RequestPasswordReset {
            token_hash: hash_token(&token),
            expires_at: Utc::now()
                + chrono::Duration::from_std(state.config.reset_ttl).unwrap_or_default(),
        };
        let meta = metadata(None, ip, user_agent(&headers));
        match state
            .store
            .users()
            .execute(&user_id.to_string(), command, &meta)
            .await
        {
            Ok(_) => {
                let text = format!(
                    "Someone asked to reset your Framegate password.\n\nReset token:\n\n{token}\n\nIt expires in {} minutes. If it was not you, ignore this email.\n",
                    state.config.reset_ttl.as_secs() / 60
                );
                if let Err(error) = state
                    .mailer
                    .send(&email, "Reset your password", &text)
                    .await
                {
                    tracing::error!(%error, "could not send the password reset email");
                }
            }
            // A disabled account gets no reset email; the answer stays the same.
            Err(framegate_commands::CommandError::Domain(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    pub token: String,
    pub new_password: String,
}

/// Sets a new password with a reset token; every session of the user is revoked.
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
    state
        .limits
        .check_login(ip, &user_id.to_string(), &extensions)?;
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
    state
        .store
        .users()
        .execute(&user_id.to_string(), command, &meta)
        .await
        .map_err(token_command_error)?;
    refresh::revoke_user(&state.pool, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
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

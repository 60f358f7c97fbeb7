//! Accounts and sessions: register, verify email, log in, refresh, log out, reset password.
//!
//! `sessions` (log in, refresh, log out), `password_reset` and `me` (the signed-in user and
//! their notification preferences) grew their own files; the helpers they share live here.
//!
//! One-time tokens are `<user id>.<random>`: the id finds the aggregate, the random part is
//! checked against the hash stored in its events (single use, expiring). Unknown emails and
//! wrong passwords get the same answer after the same work, and password-reset requests always
//! answer 202, so neither reveals which addresses have accounts.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_commands::users::{
    register as register_user, registered_user_by_email, Registration,
};
use framegate_commands::verification::{verify_email as verify_email_with_credits, VerifyError};
use framegate_domain::{
    hash_token, normalize_email, CreditCommand, Credits, NotificationPreferences, Role, UserId,
};
use framegate_projections::read_models::users;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

mod erase;
mod me;
mod password_reset;
mod sessions;

pub use erase::*;
pub use me::*;
pub use password_reset::*;
pub use sessions::*;

use super::metadata;
use crate::auth::one_time_token;
use crate::config::SignupCreditsOn;
use crate::error::ApiError;
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
    /// Which notification mails the user receives (`PATCH /v1/me` changes them).
    pub notify: NotifyPreferences,
}

impl From<users::UserRow> for UserResponse {
    fn from(row: users::UserRow) -> Self {
        Self {
            notify: row.notification_preferences().into(),
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
            notify: NotificationPreferences::default().into(),
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
    let link = crate::console::email_link(&state.config.public_url, "verify-email", token);
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

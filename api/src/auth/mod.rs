//! Who is calling: JWT access tokens, refresh-token sessions and API keys.
//!
//! `authenticate` turns an `Authorization: Bearer ...` header into a `Principal`. A value
//! starting with `fg_` is an API key (looked up by its SHA-256 in the api_keys read model);
//! anything else must be an access token signed by us. The caller's current state comes
//! from `cache` while its listener is connected, else from the read models. Handlers take `Principal` (or `Admin`)
//! as an extractor, so an endpoint cannot forget to authenticate.

pub mod api_keys;
pub mod cache;
pub mod jwt;
pub mod refresh;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use framegate_domain::{Role, UserId};
use framegate_projections::read_models::users;
use uuid::Uuid;

use self::cache::UserState;
use crate::error::ApiError;
use crate::state::AppState;

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccessToken { jti: Uuid },
    ApiKey { key_id: Uuid },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The key rate limits and idempotency records are kept under.
    pub fn scope(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

/// Resolves the caller from the request headers: `Ok(None)` without an Authorization header,
/// an error for a header that does not authenticate.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::unauthenticated("invalid_credentials", "malformed Authorization header")
    })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthenticated("invalid_credentials", "use `Authorization: Bearer <token>`")
        })?;
    if token.starts_with(api_keys::KEY_PREFIX) {
        return api_keys::authenticate(state, token).await.map(Some);
    }
    let mut principal = state.tokens.verify(token)?;
    // The token is valid for 15 minutes; disabling a user or changing a role must not wait
    // that long, so the current account state decides.
    let (disabled, role) = match user_state(state, principal.user_id).await? {
        Some(user) => (
            user.disabled,
            if user.admin { Role::Admin } else { Role::User },
        ),
        // A token is only issued to a registered user, so a miss means the read model has
        // not caught up with a registration yet: the event store decides (read-your-writes).
        None => {
            let user = state
                .store
                .users()
                .load(&principal.user_id.to_string())
                .await
                .map_err(ApiError::internal)?;
            if user.user_id().is_none() {
                return Err(ApiError::unauthenticated(
                    "invalid_token",
                    "the access token is not valid",
                ));
            }
            (user.is_disabled(), user.role())
        }
    };
    if disabled {
        return Err(ApiError::unauthenticated(
            "account_disabled",
            "this account is disabled",
        ));
    }
    principal.role = role;
    Ok(Some(principal))
}

/// The user's role and state from the cache or the users read model; `None` when the read
/// model has no row for them (yet).
async fn user_state(state: &AppState, user_id: UserId) -> Result<Option<UserState>, ApiError> {
    let uuid = user_id.as_uuid();
    if let Some(cached) = state.credentials.user(uuid) {
        return Ok(Some(cached));
    }
    let seen = state.credentials.generation();
    let Some(user) = users::get(&state.pool, user_id).await? else {
        return Ok(None);
    };
    let current = UserState {
        admin: user.role == "admin",
        disabled: user.disabled,
    };
    state.credentials.keep_user(uuid, current, seen);
    Ok(Some(current))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Resolved (and charged) by the rate-limit layer already.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let principal = authenticate(state, &parts.headers).await?.ok_or_else(|| {
            ApiError::unauthenticated(
                "unauthenticated",
                "this endpoint needs a bearer token or API key",
            )
        })?;
        state
            .limits
            .check_principal(&principal, &parts.extensions)?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// An authenticated administrator.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if principal.is_admin() {
            Ok(Admin(principal))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

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
use framegate_commands::sessions;
use framegate_domain::{Role, UserId};
use framegate_projections::read_models::users;
use uuid::Uuid;

use self::cache::UserState;
use crate::error::ApiError;
use crate::state::AppState;

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccessToken { jti: Uuid, session_id: Uuid },
    ApiKey { key_id: Uuid, scopes: Vec<String> },
}

/// What a request needs from an API key's scopes, decided by its method and path. Access
/// tokens (a signed-in user) may do everything their role allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any key of the user.
    Any,
    Scope(&'static str),
    /// A key holding every scope: managing keys (so a narrow key cannot mint a wider one),
    /// the admin endpoints, and any route not named here.
    Full,
}

/// Set on a request by a door mounted at another prefix (the OpenAI-compatible API,
/// `crate::openai`): its routes are `/v1` routes under another name, and scopes apply to them
/// as to those.
#[derive(Debug, Clone)]
pub struct MountedAt(pub std::sync::Arc<str>);

/// The path that scopes are decided on: without the prefix of the door it came through.
pub fn policy_path<'a>(path: &'a str, extensions: &axum::http::Extensions) -> &'a str {
    match extensions.get::<MountedAt>() {
        Some(MountedAt(prefix)) => path.strip_prefix(&**prefix).unwrap_or(path),
        None => path,
    }
}

/// The first segment of an API path, with or without the `/v1` that nesting strips from the
/// handlers' view of the URI.
pub(crate) fn route_family(path: &str) -> &str {
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    rest.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

impl Access {
    pub fn of(method: &axum::http::Method, path: &str) -> Self {
        use axum::http::Method;
        let read = method == Method::GET || method == Method::HEAD;
        let head = route_family(path);
        match head {
            "videos" | "providers" if read => Self::Scope("videos:read"),
            "videos" => Self::Scope("videos:write"),
            "images" if read => Self::Scope("images:read"),
            "images" => Self::Scope("images:write"),
            "credits" | "billing" if read => Self::Scope("credits:read"),
            "me" | "api-keys" if read => Self::Any,
            _ => Self::Full,
        }
    }
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

    /// Refuses (403 `insufficient_scope`) an API key whose scopes do not cover `access`.
    pub fn check_access(&self, access: Access) -> Result<(), ApiError> {
        let Credential::ApiKey { scopes, .. } = &self.credential else {
            return Ok(());
        };
        // Writing a resource includes reading it (keys minted before `images:read` existed
        // hold `images:write` alone).
        let holds = |scope: &str| {
            let write = scope
                .strip_suffix(":read")
                .map(|kind| format!("{kind}:write"));
            scopes
                .iter()
                .any(|held| held == scope || write.as_deref() == Some(held.as_str()))
        };
        let (allowed, needed) = match access {
            Access::Any => (true, String::new()),
            Access::Scope(scope) => (holds(scope), format!("the scope {scope:?}")),
            Access::Full => (
                crate::handlers::api_keys::SCOPES
                    .iter()
                    .all(|scope| holds(scope)),
                "a key with every scope (or a signed-in session)".to_owned(),
            ),
        };
        if allowed {
            return Ok(());
        }
        Err(ApiError::BadRequest {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "insufficient_scope",
            message: format!("this API key lacks {needed} for this request"),
        })
    }

    /// What the route's extractors would refuse this caller (scope, admin role), for layers
    /// that answer before the handler runs: an Idempotency-Key replay must not hand a stored
    /// response to a caller who could not make the request now.
    pub fn authorize(&self, method: &axum::http::Method, path: &str) -> Result<(), ApiError> {
        self.check_access(Access::of(method, path))?;
        if route_family(path) == "admin" && !self.is_admin() {
            return Err(ApiError::Forbidden);
        }
        Ok(())
    }

    /// The key rate limits and idempotency records are kept under.
    pub fn scope(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

/// A one-time token naming its user: `<user id>.<random>` (email verification, password
/// reset).
pub fn one_time_token(user_id: UserId) -> String {
    format!("{user_id}.{}", refresh::generate_secret(""))
}

/// The API key in the Authorization header, if that is what it carries.
pub fn presented_api_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    token.starts_with(api_keys::KEY_PREFIX).then_some(token)
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
    if let Credential::AccessToken { session_id, .. } = principal.credential {
        check_session(state, principal.user_id, session_id).await?;
    }
    principal.role = role;
    Ok(Some(principal))
}

/// Refuses an access token whose session has ended (logout, a reused refresh token, a
/// password reset, disabling, "log out everywhere"): the token dies with its session rather
/// than at its expiry.
async fn check_session(
    state: &AppState,
    user_id: UserId,
    session_id: Uuid,
) -> Result<(), ApiError> {
    let session = match state.credentials.session(session_id) {
        Some(cached) => Some(cached),
        None => {
            let seen = state.credentials.generation();
            let found = sessions::state(&state.pool, session_id).await?;
            if let Some(found) = found {
                state.credentials.keep_session(session_id, found, seen);
            }
            found
        }
    };
    match session {
        Some(session) if session.user_id == user_id.as_uuid() && session.live => Ok(()),
        Some(session) if session.user_id == user_id.as_uuid() => Err(ApiError::unauthenticated(
            "session_ended",
            "this session has ended (logged out, or every session was ended); log in again",
        )),
        _ => Err(ApiError::unauthenticated(
            "invalid_token",
            "the access token is not valid",
        )),
    }
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
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.path().to_owned(), |uri| uri.path().to_owned());
        let access = Access::of(&parts.method, policy_path(&path, &parts.extensions));
        // Resolved (and charged) by the rate-limit layer already.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            principal.check_access(access)?;
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
        principal.check_access(access)?;
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

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn each_route_family_needs_its_scope_with_or_without_the_v1_prefix() {
        for (method, path, access) in [
            (Method::GET, "/v1/videos", Access::Scope("videos:read")),
            (
                Method::GET,
                "/videos/abc/events",
                Access::Scope("videos:read"),
            ),
            (Method::GET, "/providers", Access::Scope("videos:read")),
            (Method::POST, "/v1/videos", Access::Scope("videos:write")),
            (
                Method::POST,
                "/videos/abc/cancel",
                Access::Scope("videos:write"),
            ),
            (Method::GET, "/images/abc", Access::Scope("images:read")),
            (
                Method::DELETE,
                "/v1/images/abc",
                Access::Scope("images:write"),
            ),
            (
                Method::GET,
                "/credits/ledger",
                Access::Scope("credits:read"),
            ),
            (Method::GET, "/me", Access::Any),
            (Method::GET, "/api-keys", Access::Any),
            (Method::POST, "/api-keys", Access::Full),
            (Method::DELETE, "/v1/api-keys/abc", Access::Full),
            (Method::GET, "/admin/users", Access::Full),
            (Method::POST, "/credits", Access::Full),
            (
                Method::GET,
                "/v1/billing/purchases",
                Access::Scope("credits:read"),
            ),
            (Method::POST, "/v1/billing/checkout", Access::Full),
        ] {
            assert_eq!(Access::of(&method, path), access, "{method} {path}");
        }
    }

    #[test]
    fn only_api_keys_are_limited_by_scopes() {
        let user_id = UserId::from_uuid(Uuid::new_v4());
        let token = Principal {
            user_id,
            role: Role::User,
            credential: Credential::AccessToken {
                jti: Uuid::new_v4(),
                session_id: Uuid::new_v4(),
            },
        };
        assert!(token.check_access(Access::Full).is_ok());
        let key = |scopes: &[&str]| Principal {
            credential: Credential::ApiKey {
                key_id: Uuid::new_v4(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
            ..token.clone()
        };
        let narrow = key(&["credits:read"]);
        assert!(narrow.check_access(Access::Scope("credits:read")).is_ok());
        assert!(narrow.check_access(Access::Any).is_ok());
        let refused = narrow
            .check_access(Access::Scope("videos:read"))
            .expect_err("refused");
        assert_eq!(refused.code(), "insufficient_scope");
        assert!(narrow.check_access(Access::Full).is_err());
        assert!(key(crate::handlers::api_keys::SCOPES)
            .check_access(Access::Full)
            .is_ok());
        let writer = key(&["images:write"]);
        assert!(writer.check_access(Access::Scope("images:read")).is_ok());
        assert!(writer.check_access(Access::Scope("videos:read")).is_err());
        let legacy_default = key(&[
            "videos:read",
            "videos:write",
            "images:write",
            "credits:read",
        ]);
        assert!(legacy_default.check_access(Access::Full).is_ok());
    }
}

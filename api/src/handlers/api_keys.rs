//! API keys of the signed-in user: create (secret shown once), list, revoke.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_commands::CommandError;
use framegate_domain::{ApiKeyId, UserCommand, UserError};
use framegate_projections::read_models::api_keys;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::metadata;
use crate::auth::api_keys::generate;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{user_agent, ApiJson, ApiPath, ClientIp};
use crate::state::AppState;

/// Scopes a key may carry. Keys created without scopes get all of them. What each allows is
/// `auth::Access::of`; managing keys and the admin endpoints need a key holding all of them.
pub const SCOPES: &[&str] = &[
    "videos:read",
    "videos:write",
    "images:read",
    "images:write",
    "credits:read",
];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    /// Any of `videos:read`, `videos:write`, `images:read`, `images:write`, `credits:read`
    /// (a write scope includes reading); none means all. Creating or revoking keys and the
    /// admin endpoints need a key with every scope; a narrower key gets 403
    /// `insufficient_scope` outside its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_keys::ApiKeyRow> for ApiKeyResponse {
    fn from(row: api_keys::ApiKeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scopes: row.scopes,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKeyResponse,
    /// The secret, shown this once. Send it as `Authorization: Bearer fg_...`.
    pub secret: String,
}

/// Creates an API key. The secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 422, description = "validation_failed")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    let mut scopes = if body.scopes.is_empty() {
        SCOPES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        body.scopes
    };
    scopes.sort();
    scopes.dedup();
    if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::field(
            "scopes",
            "unknown_scope",
            format!("unknown scope {unknown:?}; allowed: {}", SCOPES.join(", ")),
        ));
    }
    let key = generate();
    let key_id = ApiKeyId::from_uuid(Uuid::now_v7());
    let key_hash = key.hash.as_str().to_owned();
    let name = body.name.trim().to_owned();
    let command = UserCommand::IssueApiKey {
        key_id,
        name: body.name,
        prefix: key.prefix.clone(),
        key_hash: key.hash,
        scopes: scopes.clone(),
    };
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    state
        .store
        .users()
        .execute(&principal.user_id.to_string(), command, &meta)
        .await
        .map_err(|e| match e {
            CommandError::Domain(UserError::InvalidApiKeyName) => {
                ApiError::field("name", "invalid_length", "names are 1 to 100 characters")
            }
            other => other.into(),
        })?;
    // The stored row (server timestamps) when the projector has it; otherwise what was issued.
    let stored = api_keys::find_by_hash(&state.pool, &key_hash).await?;
    let key_response = stored.map_or_else(
        || ApiKeyResponse {
            id: key_id.as_uuid(),
            name,
            prefix: key.prefix,
            scopes,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        },
        ApiKeyResponse::from,
    );
    let created = CreatedKey {
        key: key_response,
        secret: key.secret,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// The caller's keys, newest first, revoked ones included. Never the secrets.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = [ApiKeyResponse])), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<ApiKeyResponse>>, ApiError> {
    let rows = api_keys::list_for_user(&state.pool, principal.user_id).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Revokes a key; it stops working before this call returns.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path, description = "key id")),
    responses((status = 204, description = "revoked"), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let command = UserCommand::RevokeApiKey {
        key_id: ApiKeyId::from_uuid(id),
    };
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    // The key is looked up in the caller's own aggregate: another user's key id is unknown
    // here, so ownership needs no separate check.
    state
        .store
        .users()
        .execute(&principal.user_id.to_string(), command, &meta)
        .await
        .map_err(|e| match e {
            CommandError::Domain(UserError::UnknownApiKey) => ApiError::NotFound,
            CommandError::Domain(UserError::ApiKeyAlreadyRevoked) => ApiError::Conflict {
                code: "api_key_already_revoked",
                message: "this key is already revoked".to_owned(),
            },
            other => other.into(),
        })?;
    // The projector's announcement reaches every API process; this one forgets at once.
    state.credentials.forget_user(principal.user_id.as_uuid());
    Ok(StatusCode::NO_CONTENT.into_response())
}

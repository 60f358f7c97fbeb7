//! Administration: list users, grant credits, change roles, disable and erase accounts.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use framegate_commands::erasure;
use framegate_commands::sessions::{self, EndReason};
use framegate_domain::{CreditCommand, Credits, ErasedBy, Role, UserCommand, UserId};
use framegate_projections::read_models::{credits, users};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{user_or_404, UserResponse};
use super::credits::CreditsResponse;
use super::PageQuery;
use super::{check_reason, decode_cursor, metadata, page_limit, time_cursor, Page};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{user_agent, ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::state::AppState;

/// All users, oldest first.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", params(PageQuery),
    responses((status = 200, body = Page<UserResponse>), (status = 403, description = "forbidden")),
    security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<UserResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = users::list(&state.pool, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |r| time_cursor(r.created_at, r.id),
        UserResponse::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Whole credits, at least 1.
    pub amount: i64,
    pub reason: String,
}

/// Grants credits to a user.
#[utoipa::path(post, path = "/v1/admin/users/{id}/credits", tag = "admin", request_body = GrantRequest,
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, body = CreditsResponse), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn grant_credits(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<GrantRequest>,
) -> Result<Response, ApiError> {
    let user_id = UserId::from_uuid(id);
    user_or_404(&state, user_id).await?;
    if body.amount < 1 {
        return Err(ApiError::field(
            "amount",
            "out_of_range",
            "amount must be at least 1",
        ));
    }
    if body.reason.trim().is_empty() {
        return Err(ApiError::field(
            "reason",
            "required",
            "say why the credits are granted",
        ));
    }
    check_reason("reason", &body.reason)?;
    let command = CreditCommand::Grant {
        amount: Credits::new(body.amount),
        reason: body.reason,
        granted_by: format!("user:{}", admin.user_id),
    };
    let meta = metadata(Some(&admin), ip, user_agent(&headers));
    state
        .store
        .credits()
        .execute(&user_id.to_string(), command, &meta)
        .await?;
    let account: CreditsResponse = credits::account(&state.pool, user_id).await?.into();
    Ok(Json(account).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// `user` or `admin`.
    #[schema(value_type = String, example = "admin")]
    pub role: Role,
}

/// Changes a user's role.
#[utoipa::path(post, path = "/v1/admin/users/{id}/role", tag = "admin", request_body = RoleRequest,
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, body = UserResponse), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn change_role(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleRequest>,
) -> Result<Response, ApiError> {
    let user_id = UserId::from_uuid(id);
    user_or_404(&state, user_id).await?;
    let meta = metadata(Some(&admin), ip, user_agent(&headers));
    let command = UserCommand::ChangeRole { role: body.role };
    state
        .store
        .users()
        .execute(&user_id.to_string(), command, &meta)
        .await?;
    state.credentials.forget_user(user_id.as_uuid());
    Ok(Json(UserResponse::from(user_or_404(&state, user_id).await?)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    pub reason: String,
}

/// Disables a user: their sessions and API keys stop working at once.
#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "admin", request_body = DisableRequest,
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, body = UserResponse), (status = 404, description = "not_found"),
              (status = 422, description = "already_disabled")),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<DisableRequest>,
) -> Result<Response, ApiError> {
    check_reason("reason", &body.reason)?;
    let user_id = UserId::from_uuid(id);
    user_or_404(&state, user_id).await?;
    let meta = metadata(Some(&admin), ip, user_agent(&headers));
    let command = UserCommand::Disable {
        reason: body.reason,
    };
    sessions::execute_ending_sessions(
        &state.store,
        user_id,
        command,
        EndReason::Disabled,
        &meta,
        None,
    )
    .await?;
    state.credentials.forget_user(user_id.as_uuid());
    Ok(Json(UserResponse::from(user_or_404(&state, user_id).await?)).into_response())
}

/// Erases a user for good (the right to erasure): email, IP addresses and prompts become
/// unreadable everywhere, files are deleted; credits and videos stay as anonymous records.
/// The event names the admin who asked (docs/adr/0043-crypto-shredding.md).
#[utoipa::path(post, path = "/v1/admin/users/{id}/erase", tag = "admin",
    params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, body = UserResponse), (status = 404, description = "not_found"),
              (status = 409, description = "erase_yourself, admin_account"),
              (status = 422, description = "already_erased")),
    security(("bearer" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let user_id = UserId::from_uuid(id);
    let target = user_or_404(&state, user_id).await?;
    if user_id == admin.user_id {
        // `DELETE /v1/me` asks for the password; an admin's key or stolen session must not
        // be enough to erase its own account.
        return Err(ApiError::Conflict {
            code: "erase_yourself",
            message: "erase your own account with DELETE /v1/me, which asks for your password"
                .to_owned(),
        });
    }
    if target.role == "admin" {
        return Err(ApiError::Conflict {
            code: "admin_account",
            message: "this account is an admin: change its role to user first".to_owned(),
        });
    }
    let meta = metadata(Some(&admin), ip, user_agent(&headers));
    erasure::erase(&state.store, user_id, ErasedBy::Admin, &meta).await?;
    state.credentials.forget_user(user_id.as_uuid());
    Ok(Json(UserResponse::from(user_or_404(&state, user_id).await?)).into_response())
}

//! The caller's credits: balance and ledger.

use crate::extract::ApiQuery;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_projections::read_models::credits;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{page_limit, value_cursor, Page, PageQuery};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsResponse {
    pub balance: i64,
    pub reserved: i64,
    pub available: i64,
}

impl From<credits::CreditAccountRow> for CreditsResponse {
    fn from(row: credits::CreditAccountRow) -> Self {
        Self {
            balance: row.balance,
            reserved: row.reserved,
            available: row.available,
        }
    }
}

/// Balance, credits reserved by videos in flight, and what is available to spend.
#[utoipa::path(get, path = "/v1/credits", tag = "credits",
    responses((status = 200, body = CreditsResponse)), security(("bearer" = [])))]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<CreditsResponse>, ApiError> {
    Ok(Json(
        credits::account(&state.pool, principal.user_id)
            .await?
            .into(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntryResponse {
    pub kind: String,
    /// Change to the balance (negative when credits are spent).
    pub balance_change: i64,
    /// Change to the reserved amount.
    pub reserved_change: i64,
    pub video_id: Option<Uuid>,
    pub reason: Option<String>,
    pub payment_reference: Option<String>,
    pub actor: String,
    pub recorded_at: DateTime<Utc>,
}

/// Every credit movement, newest first.
#[utoipa::path(get, path = "/v1/credits/ledger", tag = "credits", params(PageQuery),
    responses((status = 200, body = Page<LedgerEntryResponse>)), security(("bearer" = [])))]
pub async fn ledger(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<LedgerEntryResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = value_cursor::<i64>(query.cursor.as_deref())?;
    let rows = credits::ledger(&state.pool, principal.user_id, before, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |r| r.position.to_string(),
        |r| LedgerEntryResponse {
            kind: r.kind,
            balance_change: r.balance_change,
            reserved_change: r.reserved_change,
            video_id: r.video_id,
            reason: r.reason,
            payment_reference: r.payment_reference,
            actor: r.actor,
            recorded_at: r.recorded_at,
        },
    )))
}

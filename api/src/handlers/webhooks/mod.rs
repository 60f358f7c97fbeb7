//! Webhooks: the endpoints a user registers (`endpoints`) and what was delivered to them
//! (`deliveries`).

pub mod deliveries;
pub mod endpoints;

use framegate_domain::WebhookEndpointId;
use framegate_projections::read_models::webhook_endpoints::{self, WebhookEndpointRow};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// The caller's endpoint `id`, or 404 (someone else's, or a deleted one, does not exist for
/// them).
async fn owned(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<WebhookEndpointRow, ApiError> {
    webhook_endpoints::get(
        &state.pool,
        principal.user_id,
        WebhookEndpointId::from_uuid(id),
    )
    .await?
    .ok_or(ApiError::NotFound)
}

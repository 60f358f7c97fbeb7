//! The `webhook_endpoints` read model: one row per endpoint with its current settings, for
//! the API's `/v1/webhooks` and for the delivery subscription that finds who wants an event.
//!
//! Written inline and by its projector (versioned). Endpoints change rarely, so a batch is
//! projected event by event; a deleted endpoint keeps its row (and version) with `deleted_at`,
//! and every query here hides it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{UserId, WebhookEndpoint, WebhookEndpointId, WebhookEvent};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use super::batch::SetBased;
use super::versioned::{self, Versioned, VersionedModel, Writer};
use super::{aggregate_uuid, decode, expect_row};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

pub const SUBSCRIPTION: &str = "read_model.webhook_endpoints";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct WebhookEndpointRow {
    pub endpoint_id: Uuid,
    pub owner_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `None` while enabled; `owner`, `gone` or `failing` otherwise.
    pub disabled_reason: Option<String>,
    pub disabled_detail: Option<String>,
    pub secret_fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpointRow {
    pub fn is_enabled(&self) -> bool {
        self.disabled_reason.is_none()
    }
}

pub struct WebhookEndpointsProjector;

#[async_trait]
impl EventHandler for WebhookEndpointsProjector {
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[WebhookEndpoint::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != WebhookEndpoint::TYPE {
            return Ok(());
        }
        versioned::apply::<Self>(conn, event, Writer::Projector).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        versioned::handle_batch(self, conn, events).await
    }
}

/// Few events, rarely: the "set" is the events one by one (the versions are recorded by the
/// caller, for the whole batch).
#[async_trait]
impl SetBased for WebhookEndpointsProjector {
    const AGGREGATE_TYPE: &'static str = WebhookEndpoint::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == WebhookEndpoint::TYPE)
        {
            Self::project_one(conn, event).await?;
        }
        Ok(())
    }
}

impl VersionedModel for WebhookEndpointsProjector {
    const VERSIONS: Versioned = Versioned {
        aggregate_type: WebhookEndpoint::TYPE,
        table: "webhook_endpoints",
        key: "endpoint_id",
    };

    async fn project_one(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        let id = aggregate_uuid(event)?;
        let at = event.recorded_at;
        let result =
            match decode::<WebhookEvent>(event)? {
                WebhookEvent::WebhookEndpointCreated {
                    owner,
                    url,
                    events,
                    description,
                    secret_fingerprint,
                    ..
                } => {
                    sqlx::query(
                        "INSERT INTO webhook_endpoints (endpoint_id, owner_id, url, events,
                         description, secret_fingerprint, created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0)",
                    )
                    .bind(id)
                    .bind(owner.as_uuid())
                    .bind(url)
                    .bind(events)
                    .bind(description)
                    .bind(secret_fingerprint)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?
                }
                WebhookEvent::WebhookEndpointUpdated {
                    url,
                    events,
                    description,
                } => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4,
                         updated_at = $5
                      WHERE endpoint_id = $1",
                    )
                    .bind(id)
                    .bind(url)
                    .bind(events)
                    .bind(description)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?
                }
                WebhookEvent::WebhookEndpointSecretRotated {
                    secret_fingerprint, ..
                } => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET secret_fingerprint = $2, updated_at = $3
                      WHERE endpoint_id = $1",
                    )
                    .bind(id)
                    .bind(secret_fingerprint)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?
                }
                WebhookEvent::WebhookEndpointDisabled { reason, detail } => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET disabled_reason = $2, disabled_detail = $3,
                         updated_at = $4
                      WHERE endpoint_id = $1",
                    )
                    .bind(id)
                    .bind(reason.as_str())
                    .bind(detail)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?
                }
                WebhookEvent::WebhookEndpointEnabled {} => sqlx::query(
                    "UPDATE webhook_endpoints SET disabled_reason = NULL, disabled_detail = NULL,
                         updated_at = $2
                      WHERE endpoint_id = $1",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?,
                WebhookEvent::WebhookEndpointDeleted {} => {
                    sqlx::query(
                        "UPDATE webhook_endpoints SET deleted_at = $2, updated_at = $2
                      WHERE endpoint_id = $1",
                    )
                    .bind(id)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?
                }
            };
        expect_row(&result, || format!("webhook endpoint {id} has no row"))?;
        Ok(())
    }
}

const COLUMNS: &str = "endpoint_id, owner_id, url, events, description, disabled_reason,
    disabled_detail, secret_fingerprint, created_at, updated_at";

/// Endpoint `id` of `owner`, unless deleted.
pub async fn get(
    executor: impl PgExecutor<'_>,
    owner: UserId,
    id: WebhookEndpointId,
) -> Result<Option<WebhookEndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE endpoint_id = $1 AND owner_id = $2 AND deleted_at IS NULL"
    ))
    .bind(id.as_uuid())
    .bind(owner.as_uuid())
    .fetch_optional(executor)
    .await
}

/// An owner's endpoints, oldest first, after the `after` cursor (an endpoint id: ids are
/// UUID v7, so their order is creation order).
pub async fn list(
    executor: impl PgExecutor<'_>,
    owner: UserId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<WebhookEndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE owner_id = $1 AND deleted_at IS NULL
            AND ($2::uuid IS NULL OR endpoint_id > $2)
          ORDER BY endpoint_id
          LIMIT $3"
    ))
    .bind(owner.as_uuid())
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// How many endpoints `owner` has (not deleted).
pub async fn count(executor: impl PgExecutor<'_>, owner: UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM webhook_endpoints WHERE owner_id = $1 AND deleted_at IS NULL",
    )
    .bind(owner.as_uuid())
    .fetch_one(executor)
    .await
}

/// The enabled endpoints of `owner` subscribed to `event_type`: who a delivery goes to.
pub async fn subscribed(
    executor: impl PgExecutor<'_>,
    owner: UserId,
    event_type: &str,
) -> Result<Vec<WebhookEndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
          WHERE owner_id = $1 AND deleted_at IS NULL AND disabled_reason IS NULL
            AND $2 = ANY(events)
          ORDER BY endpoint_id"
    ))
    .bind(owner.as_uuid())
    .bind(event_type)
    .fetch_all(executor)
    .await
}

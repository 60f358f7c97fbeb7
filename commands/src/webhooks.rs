//! Webhook endpoints and their signing secrets (issue 13, docs/adr/0030-webhook-endpoints.md).
//!
//! Creating an endpoint and rotating its secret append the event and write the secret into
//! `webhook_secrets` in one transaction, so there is never an endpoint without a secret nor a
//! secret without the event that says it exists. The events carry the secret's fingerprint,
//! never the secret. Deleting an endpoint deletes its secrets in the transaction that records
//! the deletion. Per-request `webhook_url`s are signed with the owner's default secret.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use framegate_domain::{UserId, WebhookCommand, WebhookEndpoint, WebhookEndpointId, WebhookError};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor};

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::sessions::{also_in_transaction, AlsoInTransaction};
use crate::store::EventStore;
use crate::unit::serialize;
use crate::webhook_signature::WebhookSecret;
use crate::LogPosition;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// The first 16 hex digits of the SHA-256 of the secret as its owner sees it: what events
/// record so that one can tell which secret signed what, without being able to sign.
pub fn fingerprint(secret: &WebhookSecret) -> String {
    let digest = Sha256::digest(secret.expose().as_bytes());
    hex::encode(&digest[..8])
}

/// What the endpoint's settings are on creation.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub endpoint_id: WebhookEndpointId,
    pub owner: UserId,
    pub url: String,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Creates the endpoint with a fresh secret; returns the secret (to be shown once).
pub async fn create(
    store: &EventStore,
    endpoint: NewEndpoint,
    metadata: &CommandMetadata,
) -> Result<WebhookSecret, CommandError<WebhookError>> {
    let secret = WebhookSecret::generate();
    let command = WebhookCommand::Create {
        endpoint_id: endpoint.endpoint_id,
        owner: endpoint.owner,
        url: endpoint.url,
        events: endpoint.events,
        description: endpoint.description,
        secret_fingerprint: fingerprint(&secret),
    };
    let id = endpoint.endpoint_id.to_string();
    let decided = store.webhooks().decide_new(command).await?;
    let events = to_rows(&id, decided.current_sequence, &decided.events, metadata)?;
    let mut unit = store.begin().await.map_err(internal)?;
    unit.append_serialized(&events).await?;
    insert_secret(unit.conn(), endpoint.endpoint_id, &secret)
        .await
        .map_err(internal)?;
    unit.commit().await?;
    Ok(secret)
}

/// Rotates the endpoint's secret: the new one signs from now on, the current one beside it
/// until [`ROTATION_OVERLAP`] from now. Returns the new secret and when the old one expires.
pub async fn rotate(
    store: &EventStore,
    endpoint_id: WebhookEndpointId,
    by: UserId,
    metadata: &CommandMetadata,
) -> Result<(WebhookSecret, DateTime<Utc>), CommandError<WebhookError>> {
    let secret = WebhookSecret::generate();
    let expires_at = Utc::now() + ROTATION_OVERLAP;
    let command = WebhookCommand::RotateSecret {
        by,
        secret_fingerprint: fingerprint(&secret),
        previous_expires_at: expires_at.timestamp(),
    };
    let statements = also_in_transaction(|conn| {
        let secret = secret.clone();
        Box::pin(async move {
            // The current secret expires then; older ones keep their (earlier) expiry.
            sqlx::query(
                "UPDATE webhook_secrets SET expires_at = $2
                  WHERE endpoint_id = $1 AND expires_at IS NULL",
            )
            .bind(endpoint_id.as_uuid())
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
            insert_secret(&mut *conn, endpoint_id, &secret).await
        })
    });
    execute_with(store, endpoint_id, command, metadata, &statements).await?;
    Ok((secret, expires_at))
}

/// Deletes the endpoint and its secrets in one transaction.
pub async fn delete(
    store: &EventStore,
    endpoint_id: WebhookEndpointId,
    by: UserId,
    metadata: &CommandMetadata,
) -> Result<(), CommandError<WebhookError>> {
    let statements = also_in_transaction(|conn| {
        Box::pin(async move {
            sqlx::query("DELETE FROM webhook_secrets WHERE endpoint_id = $1")
                .bind(endpoint_id.as_uuid())
                .execute(conn)
                .await?;
            Ok(())
        })
    });
    execute_with(
        store,
        endpoint_id,
        WebhookCommand::Delete { by },
        metadata,
        &statements,
    )
    .await
}

/// Executes `command` on the endpoint and runs `also` in the transaction that appends its
/// events, deciding again after a conflict.
async fn execute_with(
    store: &EventStore,
    endpoint_id: WebhookEndpointId,
    command: WebhookCommand,
    metadata: &CommandMetadata,
    also: AlsoInTransaction<'_>,
) -> Result<(), CommandError<WebhookError>> {
    let id = endpoint_id.to_string();
    let _endpoint = store.webhooks().lock(&id).await;
    let mut attempt = 0;
    loop {
        let decided = store.webhooks().decide(&id, command.clone()).await?;
        let events = to_rows(&id, decided.current_sequence, &decided.events, metadata)?;
        let Some(mut unit) = store.append_or_retry(&events, &mut attempt).await? else {
            continue;
        };
        also(unit.conn()).await.map_err(internal)?;
        unit.commit().await?;
        return Ok(());
    }
}

/// Any other change (settings, enabling, disabling): nothing to write beside the events.
pub async fn execute(
    store: &EventStore,
    endpoint_id: WebhookEndpointId,
    command: WebhookCommand,
    metadata: &CommandMetadata,
) -> Result<Option<LogPosition>, CommandError<WebhookError>> {
    store
        .webhooks()
        .execute(&endpoint_id.to_string(), command, metadata)
        .await
}

/// The secrets that sign a delivery to the endpoint now: the current one first, then any
/// rotated-out one still inside its overlap.
pub async fn signing_secrets(
    executor: impl PgExecutor<'_>,
    endpoint_id: WebhookEndpointId,
) -> Result<Vec<WebhookSecret>, sqlx::Error> {
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT secret FROM webhook_secrets
          WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())
          ORDER BY expires_at DESC NULLS FIRST, created_at DESC",
    )
    .bind(endpoint_id.as_uuid())
    .fetch_all(executor)
    .await?;
    texts.iter().map(|text| parse_stored(text)).collect()
}

/// The secret `owner`'s per-request `webhook_url`s are signed with, made on first use.
pub async fn default_secret(
    conn: &mut PgConnection,
    owner: UserId,
) -> Result<WebhookSecret, sqlx::Error> {
    let fresh = WebhookSecret::generate();
    sqlx::query(
        "INSERT INTO webhook_default_secrets (owner_id, secret) VALUES ($1, $2)
         ON CONFLICT (owner_id) DO NOTHING",
    )
    .bind(owner.as_uuid())
    .bind(fresh.expose())
    .execute(&mut *conn)
    .await?;
    let text: String =
        sqlx::query_scalar("SELECT secret FROM webhook_default_secrets WHERE owner_id = $1")
            .bind(owner.as_uuid())
            .fetch_one(&mut *conn)
            .await?;
    parse_stored(&text)
}

/// Rows are only ever written from generated secrets; one that does not parse is corruption.
fn parse_stored(text: &str) -> Result<WebhookSecret, sqlx::Error> {
    WebhookSecret::parse(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

async fn insert_secret(
    conn: &mut PgConnection,
    endpoint_id: WebhookEndpointId,
    secret: &WebhookSecret,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_secrets (endpoint_id, fingerprint, secret) VALUES ($1, $2, $3)",
    )
    .bind(endpoint_id.as_uuid())
    .bind(fingerprint(secret))
    .bind(secret.expose())
    .execute(conn)
    .await?;
    Ok(())
}

fn to_rows(
    id: &str,
    current_sequence: usize,
    events: &[<WebhookEndpoint as cqrs_es::Aggregate>::Event],
    metadata: &CommandMetadata,
) -> Result<Vec<SerializedEvent>, CommandError<WebhookError>> {
    serialize::<WebhookEndpoint>(id, current_sequence, events, metadata)
        .map_err(|e| CommandError::Internal(Box::new(e)))
}

fn internal(error: sqlx::Error) -> CommandError<WebhookError> {
    CommandError::Internal(Box::new(error))
}

//! Provider health: a circuit breaker per provider, kept in Postgres (`provider_health`) so
//! that every worker shares it and the API can show it in `GET /v1/providers`.
//!
//! Each upstream call that fails for reasons of the provider's own (unavailable, timeout,
//! rate limit) counts a failure; any success resets the count. After `threshold` failures in
//! a row the circuit opens for `cooldown`: the dispatcher routes around the provider (or, for
//! a pinned provider, waits). When the cooldown ends, the next call is the trial: success
//! closes the circuit, failure opens it again.

use std::time::Duration;

use framegate_domain::ProviderKind;
use sqlx::PgPool;

use crate::provider::{codes, ProviderFailure};

#[derive(Debug, Clone)]
pub struct ProviderHealth {
    pool: PgPool,
    pub threshold: i32,
    pub cooldown: Duration,
}

impl ProviderHealth {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            threshold: 5,
            cooldown: Duration::from_secs(60),
        }
    }

    /// Whether `failure` says something about the provider's health (rather than about
    /// the request or the account).
    pub fn counts(failure: &ProviderFailure) -> bool {
        matches!(
            failure.code.as_str(),
            codes::UPSTREAM_UNAVAILABLE | codes::UPSTREAM_TIMEOUT | codes::RATE_LIMITED
        )
    }

    pub async fn record_success(&self, provider: ProviderKind) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO provider_health (provider, consecutive_failures, open_until, updated_at)
             VALUES ($1, 0, NULL, now())
             ON CONFLICT (provider) DO UPDATE
                SET consecutive_failures = 0, open_until = NULL, updated_at = now()
              WHERE provider_health.consecutive_failures <> 0
                 OR provider_health.open_until IS NOT NULL",
        )
        .bind(provider.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts a failure if it is the provider's; returns whether the circuit is now open.
    pub async fn record_failure(
        &self,
        provider: ProviderKind,
        failure: &ProviderFailure,
    ) -> Result<bool, sqlx::Error> {
        if !Self::counts(failure) {
            return Ok(false);
        }
        let open: bool = sqlx::query_scalar(
            "INSERT INTO provider_health (provider, consecutive_failures, last_error, updated_at)
             VALUES ($1, 1, $2, now())
             ON CONFLICT (provider) DO UPDATE
                SET consecutive_failures = provider_health.consecutive_failures + 1,
                    last_error = $2, updated_at = now()
             RETURNING consecutive_failures >= $3",
        )
        .bind(provider.as_str())
        .bind(failure.to_string())
        .bind(self.threshold)
        .fetch_one(&self.pool)
        .await?;
        if open {
            sqlx::query(
                "UPDATE provider_health SET open_until = now() + make_interval(secs => $2)
                  WHERE provider = $1",
            )
            .bind(provider.as_str())
            .bind(self.cooldown.as_secs_f64())
            .execute(&self.pool)
            .await?;
            tracing::warn!(provider = %provider, %failure, "circuit open: provider marked unhealthy");
        }
        Ok(open)
    }

    /// Whether calls to `provider` are currently suspended.
    pub async fn is_open(&self, provider: ProviderKind) -> Result<bool, sqlx::Error> {
        let open: Option<Option<bool>> = sqlx::query_scalar(
            "SELECT open_until > now() FROM provider_health WHERE provider = $1",
        )
        .bind(provider.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(open.flatten().unwrap_or(false))
    }
}

//! The API's secrets and what the deployment (`FRAMEGATE_ENV`) demands of them.
//!
//! In production every secret in the environment is checked first, by the one list every
//! role shares (`framegate_commands::deployment::SECRETS`: placeholders, length, entropy),
//! and the JWT secret is required. Elsewhere a missing JWT secret is generated per process,
//! with a warning. Secrets are kept in `Secret` so the config's `Debug` never shows them.

use framegate_commands::deployment::{Deployment, DeploymentError, Secret};
use rand::RngCore as _;

use super::ConfigError;

const JWT_SECRET: &str = "FRAMEGATE_JWT_SECRET";

/// The shortest accepted JWT secret in any deployment, in bytes (HS256 keys below the hash
/// size weaken it).
pub const MIN_JWT_SECRET_LEN: usize = 32;

impl From<DeploymentError> for ConfigError {
    fn from(error: DeploymentError) -> Self {
        ConfigError {
            variable: error.variable,
            message: error.message,
        }
    }
}

/// `FRAMEGATE_ENV`, with every secret of the environment checked when it says production.
pub(super) fn deployment(get: impl Fn(&str) -> Option<String>) -> Result<Deployment, ConfigError> {
    let deployment = Deployment::from_lookup(&get)?;
    deployment.check_secrets(&get)?;
    Ok(deployment)
}

/// A random 32-byte key: tokens signed with it end with the process.
pub(super) fn random_jwt_secret() -> Secret<Vec<u8>> {
    let mut secret = vec![0u8; MIN_JWT_SECRET_LEN];
    rand::thread_rng().fill_bytes(&mut secret);
    Secret::new(secret)
}

/// `FRAMEGATE_JWT_SECRET`: at least 32 bytes anywhere, required in production; `None` when
/// unset outside production (the caller keeps its random one).
pub(super) fn jwt_secret(
    get: impl Fn(&str) -> Option<String>,
    deployment: Deployment,
) -> Result<Option<Secret<Vec<u8>>>, ConfigError> {
    match get(JWT_SECRET) {
        Some(secret) if secret.len() >= MIN_JWT_SECRET_LEN => {
            Ok(Some(Secret::new(secret.into_bytes())))
        }
        Some(_) => Err(ConfigError {
            variable: JWT_SECRET,
            message: format!("must be at least {MIN_JWT_SECRET_LEN} characters"),
        }),
        None if deployment.is_production() => Err(ConfigError {
            variable: JWT_SECRET,
            message:
                "is required when FRAMEGATE_ENV=production (scripts/gen-secrets.sh writes one)"
                    .to_owned(),
        }),
        None => {
            tracing::warn!(
                "FRAMEGATE_JWT_SECRET is not set: using a random secret; tokens will not survive a restart"
            );
            Ok(None)
        }
    }
}

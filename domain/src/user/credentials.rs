//! What a user authenticates with besides the password: pending one-time tokens and API keys.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::UserError;
use crate::ids::ApiKeyId;
use crate::secrets::{ApiKeyHash, TokenHash};

/// A one-time token waiting to be redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingToken {
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

impl PendingToken {
    /// Checks the token before the expiry so that a wrong guess learns nothing about
    /// whether a real token is still live.
    pub(super) fn redeem(&self, token: &str, now: DateTime<Utc>) -> Result<(), UserError> {
        if !self.token_hash.matches(token) {
            return Err(UserError::InvalidToken);
        }
        if now > self.expires_at {
            return Err(UserError::TokenExpired);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: ApiKeyId,
    pub name: String,
    /// The public, displayable start of the key, used to find candidates on lookup.
    pub prefix: String,
    pub key_hash: ApiKeyHash,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

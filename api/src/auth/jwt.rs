//! Access tokens: short-lived HS256 JWTs with a pinned algorithm.
//!
//! Validation accepts only HS256 (a token claiming `none` or any other algorithm is refused),
//! and requires our issuer and audience and every claim we rely on.

use std::time::Duration;

use chrono::Utc;
use framegate_domain::{Role, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Credential, Principal};
use crate::config::ApiConfig;
use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// The session (login) the token was issued in: the token works while the session is
    /// live. Required: a token without one is not ours.
    pub sid: Uuid,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// A freshly issued access token.
pub struct AccessToken {
    pub token: String,
    pub expires_in: Duration,
}

impl TokenKeys {
    pub fn new(config: &ApiConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(config.jwt_secret.expose()),
            decoding: DecodingKey::from_secret(config.jwt_secret.expose()),
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl: config.access_ttl,
        }
    }

    pub fn issue(
        &self,
        user_id: UserId,
        role: Role,
        session_id: Uuid,
    ) -> Result<AccessToken, ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            role,
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: Uuid::now_v7(),
            sid: session_id,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(AccessToken {
            token,
            expires_in: self.ttl,
        })
    }

    /// The principal an access token names. The role is the token's; callers that need the
    /// current role and status re-check the users read model, and the session's state.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthenticated(
                    "token_expired",
                    "the access token has expired; refresh it",
                ),
                _ => ApiError::unauthenticated("invalid_token", "the access token is not valid"),
            })?;
        let user_id = data.claims.sub.parse().map_err(|_| {
            ApiError::unauthenticated("invalid_token", "the access token is not valid")
        })?;
        Ok(Principal {
            user_id,
            role: data.claims.role,
            credential: Credential::AccessToken {
                jti: data.claims.jti,
                session_id: data.claims.sid,
            },
        })
    }
}

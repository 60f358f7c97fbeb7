//! Why the `User` aggregate refuses a command, with the stable code the API shows.

use super::MAX_API_KEY_NAME_CHARS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the email address is not valid")]
    InvalidEmail,
    #[error("the user is already registered")]
    AlreadyRegistered,
    #[error("the user is not registered")]
    NotRegistered,
    #[error("the user is disabled")]
    UserDisabled,
    #[error("the email address is already verified")]
    AlreadyVerified,
    #[error("there is no pending token to redeem")]
    NoPendingToken,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("an API key name must have 1 to {MAX_API_KEY_NAME_CHARS} characters")]
    InvalidApiKeyName,
    #[error("an API key with this id already exists")]
    DuplicateApiKey,
    #[error("no API key with this id exists")]
    UnknownApiKey,
    #[error("the API key is already revoked")]
    ApiKeyAlreadyRevoked,
    #[error("the user is already disabled")]
    AlreadyDisabled,
    #[error("the low-credit threshold must be zero or more")]
    NegativeThreshold,
    #[error("the user is already erased")]
    AlreadyErased,
}

impl UserError {
    pub fn code(&self) -> &'static str {
        match self {
            UserError::InvalidEmail => "invalid_email",
            UserError::AlreadyRegistered => "already_registered",
            UserError::NotRegistered => "not_registered",
            UserError::UserDisabled => "user_disabled",
            UserError::AlreadyVerified => "already_verified",
            UserError::NoPendingToken => "no_pending_token",
            UserError::InvalidToken => "invalid_token",
            UserError::TokenExpired => "token_expired",
            UserError::InvalidApiKeyName => "invalid_api_key_name",
            UserError::DuplicateApiKey => "duplicate_api_key",
            UserError::UnknownApiKey => "unknown_api_key",
            UserError::ApiKeyAlreadyRevoked => "api_key_already_revoked",
            UserError::AlreadyDisabled => "already_disabled",
            UserError::NegativeThreshold => "negative_threshold",
            UserError::AlreadyErased => "already_erased",
        }
    }
}

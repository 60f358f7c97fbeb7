//! The `User` aggregate: an account's identity, credentials, role, API keys and whether it
//! may act at all.
//!
//! It owns every rule about a single account that must hold under concurrency: one
//! registration per id, one-time and expiring email/reset tokens, API key lifecycle, and
//! disabling. Uniqueness of an email *across* users cannot be decided inside one aggregate;
//! the event store enforces it with a unique index on `payload.UserRegistered.email`, which
//! is why `UserEvent` keeps serde's externally tagged form and stores the normalised email.
//!
//! Its errors (`error`), the email rule (`email`) and the notification preferences
//! (`notifications`) live in modules of their own.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ApiKeyId, UserId};
pub use crate::secrets::{hash_token, ApiKeyHash, PasswordHash, TokenHash};
use crate::services::Services;

mod credentials;
mod email;
mod error;
pub mod notifications;

pub use credentials::{ApiKey, PendingToken};
pub use email::{normalize_email, MAX_EMAIL_LEN};
pub use error::UserError;
pub use notifications::{
    crossed_below, NotificationPreferences, PreferencesChange, DEFAULT_LOW_CREDIT_THRESHOLD,
};

pub const MAX_API_KEY_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Register {
        user_id: UserId,
        email: String,
        password_hash: PasswordHash,
        verification_token_hash: TokenHash,
        verification_expires_at: DateTime<Utc>,
        role: Role,
    },
    /// Replaces any pending verification token (a resend).
    IssueEmailVerification {
        token_hash: TokenHash,
        expires_at: DateTime<Utc>,
    },
    VerifyEmail {
        token: String,
    },
    ChangePassword {
        password_hash: PasswordHash,
    },
    /// Replaces any pending reset token.
    RequestPasswordReset {
        token_hash: TokenHash,
        expires_at: DateTime<Utc>,
    },
    CompletePasswordReset {
        token: String,
        password_hash: PasswordHash,
    },
    IssueApiKey {
        key_id: ApiKeyId,
        name: String,
        prefix: String,
        key_hash: ApiKeyHash,
        scopes: Vec<String>,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
    ChangeRole {
        role: Role,
    },
    Disable {
        reason: String,
    },
    /// Opts in or out of notification mails; a change to nothing records nothing.
    ChangeNotificationPreferences {
        change: PreferencesChange,
    },
    /// The right to erasure: the account ends for good and its personal data becomes
    /// unreadable (the command layer destroys the data key in the same transaction,
    /// docs/adr/0043-crypto-shredding.md).
    Erase {
        by: ErasedBy,
    },
}

/// Who asked for an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasedBy {
    /// The user, confirming with their password (`DELETE /v1/me`).
    Owner,
    /// An administrator (`POST /v1/admin/users/{id}/erase`); the event's actor says who.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UserEvent {
    UserRegistered {
        user_id: UserId,
        email: String,
        password_hash: PasswordHash,
        role: Role,
        verification_token_hash: TokenHash,
        verification_expires_at: DateTime<Utc>,
    },
    EmailVerificationIssued {
        token_hash: TokenHash,
        expires_at: DateTime<Utc>,
    },
    EmailVerified {},
    PasswordChanged {
        password_hash: PasswordHash,
    },
    PasswordResetRequested {
        token_hash: TokenHash,
        expires_at: DateTime<Utc>,
    },
    PasswordResetCompleted {
        password_hash: PasswordHash,
    },
    ApiKeyIssued {
        key_id: ApiKeyId,
        name: String,
        prefix: String,
        key_hash: ApiKeyHash,
        scopes: Vec<String>,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
    RoleChanged {
        role: Role,
    },
    UserDisabled {
        reason: String,
    },
    /// The user changed which notification mails they receive; carries the whole new set,
    /// not the difference.
    NotificationPreferencesChanged {
        preferences: NotificationPreferences,
    },
    /// The user was erased: their data key is destroyed, so the personal fields of all their
    /// events read `[erased]`; credits and videos stay as anonymous facts. Consumers of
    /// published events must erase what they keep of this user.
    UserErased {
        by: ErasedBy,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        let name = match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::EmailVerificationIssued { .. } => "EmailVerificationIssued",
            UserEvent::EmailVerified {} => "EmailVerified",
            UserEvent::PasswordChanged { .. } => "PasswordChanged",
            UserEvent::PasswordResetRequested { .. } => "PasswordResetRequested",
            UserEvent::PasswordResetCompleted { .. } => "PasswordResetCompleted",
            UserEvent::ApiKeyIssued { .. } => "ApiKeyIssued",
            UserEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            UserEvent::RoleChanged { .. } => "RoleChanged",
            UserEvent::UserDisabled { .. } => "UserDisabled",
            UserEvent::NotificationPreferencesChanged { .. } => "NotificationPreferencesChanged",
            UserEvent::UserErased { .. } => "UserErased",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::versions::current_version(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    user_id: Option<UserId>,
    email: Option<String>,
    password_hash: Option<PasswordHash>,
    role: Role,
    email_verified: bool,
    pending_verification: Option<PendingToken>,
    pending_reset: Option<PendingToken>,
    /// The token the address was verified with: presenting it again is "already verified",
    /// any other token is invalid, whatever the account's state.
    #[serde(default)]
    verified_with: Option<TokenHash>,
    /// In issue order; revoked keys stay so that a key id can never be reused.
    api_keys: Vec<ApiKey>,
    #[serde(default)]
    erased: bool,
    /// Set once disabled; an empty reason still means disabled.
    disabled_reason: Option<String>,
    #[serde(default)]
    notifications: NotificationPreferences,
}

impl User {
    pub fn user_id(&self) -> Option<UserId> {
        self.user_id
    }

    pub fn is_registered(&self) -> bool {
        self.user_id.is_some()
    }

    /// The normalised email, once registered.
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn is_email_verified(&self) -> bool {
        self.email_verified
    }

    /// Erased: disabled for good, personal data unreadable.
    pub fn is_erased(&self) -> bool {
        self.erased
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled_reason.is_some()
    }

    pub fn disabled_reason(&self) -> Option<&str> {
        self.disabled_reason.as_deref()
    }

    pub fn notification_preferences(&self) -> NotificationPreferences {
        self.notifications
    }

    pub fn password_hash(&self) -> Option<&PasswordHash> {
        self.password_hash.as_ref()
    }

    pub fn pending_verification(&self) -> Option<&PendingToken> {
        self.pending_verification.as_ref()
    }

    pub fn pending_password_reset(&self) -> Option<&PendingToken> {
        self.pending_reset.as_ref()
    }

    /// All keys ever issued, revoked ones included.
    pub fn api_keys(&self) -> &[ApiKey] {
        &self.api_keys
    }

    pub fn api_key(&self, key_id: ApiKeyId) -> Option<&ApiKey> {
        self.api_keys.iter().find(|key| key.key_id == key_id)
    }

    pub fn active_api_keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.api_keys.iter().filter(|key| !key.revoked)
    }

    /// The guard shared by every command except `Register` and `Disable`.
    fn ensure_active(&self) -> Result<(), UserError> {
        if !self.is_registered() {
            return Err(UserError::NotRegistered);
        }
        if self.is_disabled() {
            return Err(UserError::UserDisabled);
        }
        Ok(())
    }

    /// A one-time token is checked before anything else: a token this account never issued
    /// (or one already spent on a reset) is invalid, so a guess learns nothing about the
    /// account, whether it is verified, disabled or has a token pending.
    fn check_one_time_token(&self, command: &UserCommand) -> Result<(), UserError> {
        let issued = |pending: &Option<PendingToken>, token: &str| {
            pending
                .as_ref()
                .is_some_and(|p| p.token_hash.matches(token))
        };
        let known = match command {
            UserCommand::VerifyEmail { token } => {
                issued(&self.pending_verification, token)
                    || self
                        .verified_with
                        .as_ref()
                        .is_some_and(|h| h.matches(token))
            }
            UserCommand::CompletePasswordReset { token, .. } => issued(&self.pending_reset, token),
            _ => true,
        };
        if known {
            Ok(())
        } else {
            Err(UserError::InvalidToken)
        }
    }

    fn decide(
        &self,
        command: UserCommand,
        services: &Services,
    ) -> Result<Vec<UserEvent>, UserError> {
        self.check_one_time_token(&command)?;
        if let UserCommand::Register { .. } = command {
            if self.is_registered() {
                return Err(UserError::AlreadyRegistered);
            }
        } else if let UserCommand::Disable { .. } | UserCommand::Erase { .. } = command {
            if !self.is_registered() {
                return Err(UserError::NotRegistered);
            }
            if self.erased {
                return Err(UserError::AlreadyErased);
            }
        } else {
            self.ensure_active()?;
        }

        let event = match command {
            UserCommand::Register {
                user_id,
                email,
                password_hash,
                verification_token_hash,
                verification_expires_at,
                role,
            } => UserEvent::UserRegistered {
                user_id,
                email: normalize_email(&email)?,
                password_hash,
                role,
                verification_token_hash,
                verification_expires_at,
            },
            UserCommand::IssueEmailVerification {
                token_hash,
                expires_at,
            } => {
                if self.email_verified {
                    return Err(UserError::AlreadyVerified);
                }
                UserEvent::EmailVerificationIssued {
                    token_hash,
                    expires_at,
                }
            }
            UserCommand::VerifyEmail { token } => {
                if self.email_verified {
                    return Err(UserError::AlreadyVerified);
                }
                let pending = self
                    .pending_verification
                    .as_ref()
                    .ok_or(UserError::NoPendingToken)?;
                pending.redeem(&token, services.now())?;
                UserEvent::EmailVerified {}
            }
            UserCommand::ChangePassword { password_hash } => {
                UserEvent::PasswordChanged { password_hash }
            }
            UserCommand::RequestPasswordReset {
                token_hash,
                expires_at,
            } => UserEvent::PasswordResetRequested {
                token_hash,
                expires_at,
            },
            UserCommand::CompletePasswordReset {
                token,
                password_hash,
            } => {
                let pending = self
                    .pending_reset
                    .as_ref()
                    .ok_or(UserError::NoPendingToken)?;
                pending.redeem(&token, services.now())?;
                UserEvent::PasswordResetCompleted { password_hash }
            }
            UserCommand::IssueApiKey {
                key_id,
                name,
                prefix,
                key_hash,
                scopes,
            } => {
                let name = name.trim();
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_API_KEY_NAME_CHARS {
                    return Err(UserError::InvalidApiKeyName);
                }
                if self.api_key(key_id).is_some() {
                    return Err(UserError::DuplicateApiKey);
                }
                UserEvent::ApiKeyIssued {
                    key_id,
                    name: name.to_string(),
                    prefix,
                    key_hash,
                    scopes,
                }
            }
            UserCommand::RevokeApiKey { key_id } => {
                let key = self.api_key(key_id).ok_or(UserError::UnknownApiKey)?;
                if key.revoked {
                    return Err(UserError::ApiKeyAlreadyRevoked);
                }
                UserEvent::ApiKeyRevoked { key_id }
            }
            UserCommand::ChangeRole { role } => {
                if role == self.role {
                    return Ok(Vec::new());
                }
                UserEvent::RoleChanged { role }
            }
            UserCommand::Disable { reason } => {
                if self.is_disabled() {
                    return Err(UserError::AlreadyDisabled);
                }
                UserEvent::UserDisabled { reason }
            }
            UserCommand::Erase { by } => UserEvent::UserErased { by },
            UserCommand::ChangeNotificationPreferences { change } => {
                let preferences = self.notifications.with(change)?;
                if preferences == self.notifications {
                    return Ok(Vec::new());
                }
                UserEvent::NotificationPreferencesChanged { preferences }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                password_hash,
                role,
                verification_token_hash,
                verification_expires_at,
            } => {
                self.user_id = Some(user_id);
                self.email = Some(email);
                self.password_hash = Some(password_hash);
                self.role = role;
                self.pending_verification = Some(PendingToken {
                    token_hash: verification_token_hash,
                    expires_at: verification_expires_at,
                });
            }
            UserEvent::EmailVerificationIssued {
                token_hash,
                expires_at,
            } => {
                self.pending_verification = Some(PendingToken {
                    token_hash,
                    expires_at,
                });
            }
            UserEvent::EmailVerified {} => {
                self.email_verified = true;
                self.verified_with = self.pending_verification.take().map(|p| p.token_hash);
            }
            UserEvent::PasswordChanged { password_hash } => {
                self.password_hash = Some(password_hash);
                // A reset link mailed before the change must not undo it.
                self.pending_reset = None;
            }
            UserEvent::PasswordResetRequested {
                token_hash,
                expires_at,
            } => {
                self.pending_reset = Some(PendingToken {
                    token_hash,
                    expires_at,
                });
            }
            UserEvent::PasswordResetCompleted { password_hash } => {
                self.password_hash = Some(password_hash);
                self.pending_reset = None;
            }
            UserEvent::ApiKeyIssued {
                key_id,
                name,
                prefix,
                key_hash,
                scopes,
            } => self.api_keys.push(ApiKey {
                key_id,
                name,
                prefix,
                key_hash,
                scopes,
                revoked: false,
            }),
            UserEvent::ApiKeyRevoked { key_id } => {
                if let Some(key) = self.api_keys.iter_mut().find(|key| key.key_id == key_id) {
                    key.revoked = true;
                }
            }
            UserEvent::RoleChanged { role } => self.role = role,
            UserEvent::UserDisabled { reason } => {
                self.disabled_reason = Some(reason);
                // Outstanding tokens die with the account rather than waiting to expire.
                self.pending_verification = None;
                self.pending_reset = None;
            }
            UserEvent::NotificationPreferencesChanged { preferences } => {
                self.notifications = preferences;
            }
            UserEvent::UserErased { .. } => {
                self.erased = true;
                self.email = None;
                self.disabled_reason = Some(crate::pii::ERASED.to_owned());
                self.pending_verification = None;
                self.pending_reset = None;
                self.api_keys.iter_mut().for_each(|key| key.revoked = true);
            }
        }
    }
}

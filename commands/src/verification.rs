//! Verifying an email address, and granting the sign-up credits that wait for it, in one
//! transaction (issue 12: credits for unverified addresses were farmed by scripts).
//!
//! The verification can happen only once (the user's stream says so), and the grant commits
//! with it or not at all, so the credits are granted exactly once whatever crashes: there is
//! no verified user left waiting for credits a later retry could no longer give. The account
//! grants sign-up credits only once in its life (`CreditCommand::GrantSignup`), so a user who
//! got them at registration under the old policy gets nothing more on verifying.

use framegate_domain::{
    CreditAccount, CreditCommand, CreditError, Credits, User, UserCommand, UserError, UserId,
};

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::store::EventStore;
use crate::unit::{serialize, AppendError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    User(CommandError<UserError>),
    #[error(transparent)]
    Credits(CommandError<CreditError>),
}

fn store_error(error: AppendError) -> VerifyError {
    VerifyError::User(error.into())
}

/// Redeems `token` for `user_id` and, with `signup` credits, grants them in the same
/// transaction (nothing is granted if the account had its sign-up credits already).
pub async fn verify_email(
    store: &EventStore,
    user_id: UserId,
    token: String,
    signup: Option<Credits>,
    metadata: &CommandMetadata,
) -> Result<(), VerifyError> {
    let id = user_id.to_string();
    let verify = UserCommand::VerifyEmail { token };
    let Some(amount) = signup else {
        return store
            .users()
            .execute(&id, verify, metadata)
            .await
            .map(drop)
            .map_err(VerifyError::User);
    };
    let grant = CreditCommand::GrantSignup { amount };
    let _user = store.users().lock(&id).await;
    let _account = store.credits().lock(&id).await;
    let mut attempt = 0;
    loop {
        let verified = store
            .users()
            .decide(&id, verify.clone())
            .await
            .map_err(VerifyError::User)?;
        let granted = store
            .credits()
            .decide(&id, grant.clone())
            .await
            .map_err(VerifyError::Credits)?;
        let mut events =
            serialize::<User>(&id, verified.current_sequence, &verified.events, metadata)
                .map_err(|e| store_error(e.into()))?;
        events.extend(
            serialize::<CreditAccount>(&id, granted.current_sequence, &granted.events, metadata)
                .map_err(|e| store_error(e.into()))?,
        );
        // Either stream may have moved (a resend of the token, a grant by an admin): then
        // both are decided again against what is stored now.
        let Some(unit) = store
            .append_or_retry(&events, &mut attempt)
            .await
            .map_err(store_error)?
        else {
            continue;
        };
        unit.commit().await.map_err(store_error)?;
        let sequence = granted.current_sequence + granted.events.len();
        store.credits().remember(&id, granted.state, sequence);
        return Ok(());
    }
}

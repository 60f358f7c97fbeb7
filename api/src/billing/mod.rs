//! Buying credits with Stripe (issue 13; docs/adr/0032-stripe-credit-purchases.md).
//!
//! A configurable catalog of credit packs (`config`); `POST /v1/billing/checkout` opens a
//! Stripe Checkout Session for one (`stripe`); Stripe's signed webhook (`signature`) turns
//! the paid session into exactly one `CreditsPurchased` and a refund into a `CreditsRevoked`
//! of what is left unspent (`webhook`). The purchases are listed from the `credit_purchases`
//! read model, written inline with their events.

pub mod config;
pub mod signature;
pub mod stripe;
pub mod webhook;

use sha2::{Digest as _, Sha256};

pub use config::{BillingConfig, Pack, StripeConfig};

/// The `Idempotency-Key` sent to Stripe for a checkout: derived from the caller's own key,
/// when the request has one, so a retry the API's idempotency layer lets through (the first
/// attempt failed before its response was stored) gets Stripe's first session back, and a
/// fresh one otherwise. Scoped by user, so two users' keys never meet at Stripe.
pub fn stripe_idempotency_key(user_id: framegate_domain::UserId, key: Option<&str>) -> String {
    match key {
        Some(key) => {
            let digest = Sha256::digest(format!("{user_id}\n{key}").as_bytes());
            format!("framegate-checkout-{}", hex::encode(&digest[..16]))
        }
        None => format!("framegate-checkout-{}", uuid::Uuid::now_v7()),
    }
}

#[cfg(test)]
mod tests {
    use framegate_domain::UserId;
    use uuid::Uuid;

    use super::stripe_idempotency_key;

    #[test]
    fn the_stripe_key_follows_the_callers_key_per_user() {
        let alice = UserId::from_uuid(Uuid::from_u128(1));
        let bob = UserId::from_uuid(Uuid::from_u128(2));
        let key = stripe_idempotency_key(alice, Some("k1"));
        assert_eq!(key, stripe_idempotency_key(alice, Some("k1")));
        assert_ne!(key, stripe_idempotency_key(alice, Some("k2")));
        assert_ne!(key, stripe_idempotency_key(bob, Some("k1")));
        assert_ne!(
            stripe_idempotency_key(alice, None),
            stripe_idempotency_key(alice, None)
        );
    }
}

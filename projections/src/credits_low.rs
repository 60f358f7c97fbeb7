//! Did this credit event take the available balance below the user's threshold? The one
//! place that decides it, for the `credits_low` mail and the `credits.low` webhook alike.
//!
//! Credit events carry amounts, not balances. The balance around an event comes from the
//! `credit_ledger` read model: one row per `CreditAccount` event, keyed by its global
//! position, with the same balance and reservation changes the account applies. Within one
//! account positions follow the stream's sequence (an append needs the previous event
//! committed), so the account's available balance just after an event is the sum of its
//! ledger rows up to the event's position, and just before it that minus the event's own
//! change. The rule itself is the domain's `crossed_below`: only the event that goes from at
//! or above the threshold to under it fires, so a balance spent down in many steps fires
//! once, and one topped up and spent again fires again.
//!
//! Only an event that lowers the available balance can cross (a reservation today; a
//! revocation if one is added to `deltas`), so the others are answered without a query. The
//! ledger is written inline with every credit event; should it lag (an event appended by a
//! store without inline models), the answer is a [`Transient`] failure and the caller's
//! subscription tries again once the ledger projector has caught up, rather than deciding
//! from a partial sum.

use cqrs_es::Aggregate as _;
use framegate_domain::{crossed_below, CreditAccount, CreditEvent, Credits};
use sqlx::PgConnection;

use crate::log::StoredEvent;
use crate::read_models::credit_accounts::deltas;
use crate::read_models::{aggregate_uuid, decode};
use crate::subscription::{BoxError, Transient};

/// The available balance (balance minus open reservations) around one credit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvailableChange {
    pub before: Credits,
    pub after: Credits,
}

/// A credit event that took the available balance below `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowCredit {
    pub threshold: Credits,
    pub before: Credits,
    pub after: Credits,
}

/// How much `event` (a `CreditAccount` event) changes its account's available balance;
/// `None` for events of other aggregates.
pub fn available_delta(event: &StoredEvent) -> Result<Option<i64>, BoxError> {
    if event.aggregate_type != CreditAccount::TYPE {
        return Ok(None);
    }
    let (balance, reserved) = deltas(&decode::<CreditEvent>(event)?);
    Ok(Some(balance - reserved))
}

/// The available balance of `event`'s account just before and just after it, from the
/// ledger; `None` for events of other aggregates.
pub async fn available_around(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<Option<AvailableChange>, BoxError> {
    let Some(delta) = available_delta(event)? else {
        return Ok(None);
    };
    let user_id = aggregate_uuid(event)?;
    let (rows, after, own): (i64, i64, bool) = sqlx::query_as(
        "SELECT count(*),
                COALESCE(sum(balance_change - reserved_change), 0)::int8,
                bool_or(global_position = $2) IS TRUE
           FROM credit_ledger
          WHERE user_id = $1 AND global_position <= $2",
    )
    .bind(user_id)
    .bind(event.global_position)
    .fetch_one(&mut *conn)
    .await?;
    // One ledger row per event of the stream: fewer means the ledger has not caught up.
    if !own || rows < event.sequence {
        return Err(Transient(
            format!(
                "the credit ledger of {user_id} has {rows} of {} rows up to #{}",
                event.sequence, event.global_position
            )
            .into(),
        )
        .into());
    }
    Ok(Some(AvailableChange {
        before: Credits::new(after - delta),
        after: Credits::new(after),
    }))
}

/// Whether `event` took its account's available balance below `threshold`; `None` when it
/// did not (or is no credit event).
pub async fn crossing(
    conn: &mut PgConnection,
    event: &StoredEvent,
    threshold: Credits,
) -> Result<Option<LowCredit>, BoxError> {
    // Only a fall can cross: spare the ledger query for everything else.
    if available_delta(event)?.is_none_or(|delta| delta >= 0) {
        return Ok(None);
    }
    let Some(change) = available_around(conn, event).await? else {
        return Ok(None);
    };
    Ok(
        crossed_below(threshold, change.before, change.after).then_some(LowCredit {
            threshold,
            before: change.before,
            after: change.after,
        }),
    )
}

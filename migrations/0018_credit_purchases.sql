-- Credit purchases through Stripe and their refunds (issue 13;
-- docs/adr/0032-stripe-credit-purchases.md).

-- A refund's revocation is a credit movement of its own kind.
ALTER TABLE credit_ledger DROP CONSTRAINT credit_ledger_kind_check;
ALTER TABLE credit_ledger ADD CONSTRAINT credit_ledger_kind_check
    CHECK (kind IN ('granted', 'purchased', 'revoked', 'reserved', 'captured', 'released'));

-- One row per purchase (read_model.credit_purchases, also written inline): what was bought
-- and paid, and what refunds took back. Keyed as the aggregate keys purchases.
CREATE TABLE credit_purchases (
    user_id              uuid        NOT NULL,
    payment_reference    text        NOT NULL,
    -- Of the CreditsPurchased event: the listing's order and cursor.
    global_position      bigint      NOT NULL,
    credits              bigint      NOT NULL,
    provider             text,
    checkout_session     text,
    payment_intent       text,
    pack                 text,
    -- Smallest currency unit (cents).
    amount_paid          bigint,
    currency             text,
    refunded             bigint      NOT NULL DEFAULT 0,
    credits_revoked      bigint      NOT NULL DEFAULT 0,
    revocation_shortfall bigint      NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (user_id, payment_reference)
);
CREATE INDEX credit_purchases_user_idx ON credit_purchases (user_id, global_position DESC);
CREATE INDEX credit_purchases_payment_intent_idx ON credit_purchases (payment_intent)
    WHERE payment_intent IS NOT NULL;

-- Stripe events handled, by id: a redelivery is answered without doing anything again. Written
-- by the webhook endpoint once an event's effects are stored (they are idempotent on their own,
-- so a crash in between only repeats a no-op).
CREATE TABLE stripe_events (
    id         text        PRIMARY KEY,
    type       text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);

-- The highest refunded total Stripe reported per PaymentIntent. Kept whether or not its
-- purchase is known yet: Stripe delivers in any order, and a purchase recorded later takes
-- back what was already refunded.
CREATE TABLE stripe_refunds (
    payment_intent  text        PRIMARY KEY,
    charge          text        NOT NULL,
    amount_refunded bigint      NOT NULL CHECK (amount_refunded >= 0),
    currency        text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Lost disputes (chargebacks) take back credits like refunds (issue 13, ADR 0032): the amount
-- a lost dispute took is kept beside the refunded total of the PaymentIntent, and the purchase
-- is revoked for their sum.
ALTER TABLE stripe_refunds
    ADD COLUMN amount_disputed bigint NOT NULL DEFAULT 0 CHECK (amount_disputed >= 0);

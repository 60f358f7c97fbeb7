-- Inline read models and idempotency leases (docs/adr/0015-one-transaction-video-request.md).
--
-- `videos` and `credit_accounts` are now also written inline, in the transaction that appends
-- their events, as well as by their asynchronous projectors. Each row records the sequence of
-- the last event of its aggregate it reflects, so that whichever writer comes second sees the
-- event applied already and leaves the row alone: an event is applied exactly once whichever
-- path gets there first.
ALTER TABLE videos ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE credit_accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;

-- Existing rows reflect exactly the events their projector has handled: those at or before
-- its checkpoint.
UPDATE videos v
   SET version = COALESCE((
       SELECT max(e.sequence) FROM events e, subscription_checkpoints c
        WHERE c.name = 'read_model.videos'
          AND e.aggregate_type = 'Video' AND e.aggregate_id = v.id::text
          AND (e.tx_id, e.global_position) <= (c.last_tx_id, c.last_position)), 0);
UPDATE credit_accounts a
   SET version = COALESCE((
       SELECT max(e.sequence) FROM events e, subscription_checkpoints c
        WHERE c.name = 'read_model.credit_accounts'
          AND e.aggregate_type = 'CreditAccount' AND e.aggregate_id = a.user_id::text
          AND (e.tx_id, e.global_position) <= (c.last_tx_id, c.last_position)), 0);

-- An in-progress Idempotency-Key record belongs to a live request: `owner` names the
-- request, which keeps `lease_until` in the future while it runs. A record whose lease ran
-- out was abandoned (its process died) and a retry may take it over. `committed_at` is set in
-- the transaction that commits the request's events, so a record whose response was lost
-- can never be run a second time.
ALTER TABLE idempotency_keys ADD COLUMN owner uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE idempotency_keys ADD COLUMN lease_until timestamptz NOT NULL DEFAULT now();
ALTER TABLE idempotency_keys ADD COLUMN committed_at timestamptz;

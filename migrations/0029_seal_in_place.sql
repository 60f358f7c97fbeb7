-- Crypto-shredding, completed (docs/adr/0043-crypto-shredding.md, stop 28).
--
-- 1. Rows written before encryption hold personal data in clear. `framegate events seal`
--    seals them in place, one transaction per batch, and is the only writer that may change a
--    stored event: it sets `framegate.seal_in_place` for its one UPDATE statement (SET LOCAL,
--    reset right after), and even then only `payload` and `metadata` may change. Every other
--    UPDATE, and every DELETE, is refused as before.
CREATE OR REPLACE FUNCTION events_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('framegate.seal_in_place', true) = 'on'
       AND NEW.aggregate_type = OLD.aggregate_type
       AND NEW.aggregate_id = OLD.aggregate_id
       AND NEW.sequence = OLD.sequence
       AND NEW.event_type = OLD.event_type
       AND NEW.event_version = OLD.event_version
       AND NEW.global_position = OLD.global_position
       AND NEW.event_id = OLD.event_id
       AND NEW.recorded_at = OLD.recorded_at
       AND NEW.tx_id = OLD.tx_id
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

-- 2. A stored Idempotency-Key reply is sealed, so an erasure cannot find a user's data in it
--    by content. Each record now names the user its request wrote about (the subject of the
--    events it committed: a registration's new user, say, under an anonymous `ip:` scope),
--    and the erasure deletes the records of the scope `user:<id>` and those naming the user.
ALTER TABLE idempotency_keys ADD COLUMN user_id uuid;
CREATE INDEX idempotency_keys_user_idx ON idempotency_keys (user_id) WHERE user_id IS NOT NULL;

-- The event store. postgres-es reads and writes the first seven columns; the rest are ours
-- and are filled by defaults, so postgres-es's INSERT needs no change.
--
-- global_position is taken at insert time but becomes visible at commit time, out of order.
-- tx_id records the inserting transaction so readers can order by (tx_id, global_position)
-- and stop below the oldest running transaction: see docs/adr/0002-ordered-event-log.md.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position_key ON events (global_position);
CREATE UNIQUE INDEX events_event_id_key ON events (event_id);
-- The ordered log reads by this key.
CREATE INDEX events_log_order_idx ON events (tx_id, global_position);
CREATE INDEX events_recorded_at_idx ON events (recorded_at);
CREATE INDEX events_correlation_id_idx ON events ((metadata ->> 'correlation_id'));
CREATE INDEX events_actor_idx ON events ((metadata ->> 'actor'));

-- Email uniqueness is enforced by the event store itself: two concurrent registrations of
-- one address cannot both commit. postgres-es reports the unique violation as an aggregate
-- conflict; the command layer turns it into "email taken" (docs/adr/0003-unique-emails.md).
CREATE UNIQUE INDEX events_user_email_key
    ON events ((payload -> 'UserRegistered' ->> 'email'))
    WHERE aggregate_type = 'User' AND event_type = 'UserRegistered';

-- Events are facts: never changed, never deleted.
CREATE FUNCTION events_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_forbid_change();

-- Wake log readers. NOTIFY holds a cluster-wide lock from pre-commit until after the commit
-- is flushed, which would serialise every writer's commit behind the others'. So only one
-- writer at a time notifies: whoever takes the notifier lock (non-blocking). Readers look again
-- soon while any transaction is in progress, which covers writers that skipped notifying
-- (docs/adr/0002-ordered-event-log.md).
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock(hashtextextended('framegate.events.notifier', 0)) THEN
        PERFORM pg_notify('framegate_events', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_notify_insert
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- One row per named subscription (projector, relay, dispatcher, ...): the last event it has
-- fully handled, in log order.
CREATE TABLE subscription_checkpoints (
    name            text        PRIMARY KEY,
    last_tx_id      xid8        NOT NULL DEFAULT '0',
    last_position   bigint      NOT NULL DEFAULT 0,
    events_handled  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

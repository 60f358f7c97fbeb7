-- Events a subscription could not handle (docs/adr/0018-healing-subscriptions.md).
--
-- A subscription retries passing failures (the database away, a broker down) for as long as
-- they last. An event that keeps failing otherwise is parked here with its error: a
-- subscription whose policy is to go on moves its checkpoint past it (`blocking` false); one
-- whose policy is to stop stays before it (`blocking` true) until the event is retried.
-- `framegate projections retry <name>` sets `retry_requested_at`; the running subscription
-- re-handles the event, deleting the row when it succeeds.
CREATE TABLE parked_events (
    subscription       text        NOT NULL,
    global_position    bigint      NOT NULL,
    event_id           uuid        NOT NULL,
    event_type         text        NOT NULL,
    aggregate_type     text        NOT NULL,
    aggregate_id       text        NOT NULL,
    sequence           bigint      NOT NULL,
    error              text        NOT NULL,
    attempts           integer     NOT NULL DEFAULT 1,
    blocking           boolean     NOT NULL,
    parked_at          timestamptz NOT NULL DEFAULT now(),
    last_attempt_at    timestamptz NOT NULL DEFAULT now(),
    retry_requested_at timestamptz,
    PRIMARY KEY (subscription, global_position)
);

CREATE INDEX parked_events_retry_idx ON parked_events (subscription)
    WHERE retry_requested_at IS NOT NULL;

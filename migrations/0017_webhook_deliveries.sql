-- Webhook deliveries (issue 13, docs/adr/0031-webhook-delivery.md).
--
-- `webhook_deliveries` is the outbox the delivery subscription fills (in its own transaction,
-- so each event is enqueued exactly once per target) and the sender drains. One row per
-- (target, event). A target is a queue: `endpoint:<id>` for a registered endpoint,
-- `video:<id>` for a video's per-request `webhook_url`. Within a queue, rows are sent strictly
-- in `seq` order (the order the subscription read the events in): no row is attempted while
-- an earlier row of its queue is pending.
CREATE TABLE webhook_deliveries (
    delivery_id       uuid        PRIMARY KEY,
    seq               bigserial   NOT NULL UNIQUE,
    queue             text        NOT NULL,
    -- NULL for a per-request URL (then `url` is set).
    endpoint_id       uuid,
    owner_id          uuid        NOT NULL,
    url               text,
    -- The `webhook-id` header and the body's `id`: the same on every attempt.
    message_id        text        NOT NULL,
    event_type        text        NOT NULL,
    -- When the event was recorded (the body's `created_at`; throttles `video.progress`).
    event_at          timestamptz NOT NULL,
    video_id          uuid,
    -- The JSON body without download links (those are signed at each attempt).
    body              text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending'
                                  CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- Set while a sender holds the row; a sender that died lets it lapse and another resends.
    leased_until      timestamptz,
    -- Retries stop this long after it (the creation, or a manual retry).
    window_started_at timestamptz NOT NULL DEFAULT now(),
    last_status       integer,
    last_latency_ms   integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    UNIQUE (queue, message_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_queue_idx ON webhook_deliveries (queue, seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, seq);
CREATE INDEX webhook_deliveries_progress_idx ON webhook_deliveries (queue, video_id, event_at)
    WHERE event_type = 'video.progress';

-- Every attempt, for `GET /v1/webhooks/{id}/deliveries` and operators.
CREATE TABLE webhook_delivery_attempts (
    delivery_id   uuid        NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    status        integer,
    latency_ms    integer     NOT NULL,
    error         text,
    -- The first 4 KiB of the response body.
    response_body text,
    PRIMARY KEY (delivery_id, attempt)
);

-- An endpoint's current run of failures: the first failure since its last success. An
-- endpoint failing for 5 days is disabled (`failing`) and its owner mailed.
CREATE TABLE webhook_endpoint_health (
    endpoint_id     uuid        PRIMARY KEY,
    failing_since   timestamptz,
    last_success_at timestamptz
);

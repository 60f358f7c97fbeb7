-- Routing, retries and health of the video providers (issue 5).

-- Each submission attempt as the videos read model shows it, and when a video that the
-- provider never accepted may be tried again.
ALTER TABLE videos
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN attempts jsonb NOT NULL DEFAULT '[]'::jsonb;

-- Queued videos waiting for a (re)submission, in due order.
CREATE INDEX videos_queued_idx ON videos (next_attempt_at NULLS FIRST, created_at)
    WHERE status = 'queued';

-- The circuit breaker of each provider, shared by every worker and shown by the API. Not an
-- event-sourced model: it is operational state, rebuilt from nothing by the next calls.
CREATE TABLE provider_health (
    provider             text        PRIMARY KEY,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    open_until           timestamptz,
    last_error           text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

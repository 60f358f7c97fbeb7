-- The simulator provider's own job store: it plays a remote service, so its jobs outlive the
-- worker process. One job per video: a second submission of the same video is refused by
-- the provider itself (and counted), as a real provider's idempotency key would.
CREATE TABLE simulator_jobs (
    id               text        PRIMARY KEY,
    video_id         uuid        NOT NULL UNIQUE,
    prompt           text        NOT NULL,
    duration_seconds integer     NOT NULL,
    width            integer     NOT NULL,
    height           integer     NOT NULL,
    seed             bigint,
    -- Image-to-video: the start image as the provider received it.
    start_image      bytea,
    start_image_type text,
    latency_ms       bigint      NOT NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('succeed', 'fail', 'moderate')),
    submit_attempts  integer     NOT NULL DEFAULT 1,
    submitted_at     timestamptz NOT NULL DEFAULT now(),
    cancelled_at     timestamptz
);

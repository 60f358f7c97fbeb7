-- The videos read model, written only by its projector from the ordered log.
CREATE TABLE videos (
    id                  uuid        PRIMARY KEY,
    owner_id            uuid        NOT NULL,
    status              text        NOT NULL,
    progress            smallint    NOT NULL DEFAULT 0,
    provider_preference text        NOT NULL,
    provider            text,
    model               text,
    attempt             integer     NOT NULL DEFAULT 0,
    provider_job_id     text,
    prompt              text        NOT NULL,
    negative_prompt     text,
    duration_seconds    integer     NOT NULL,
    aspect_ratio        text        NOT NULL,
    resolution          text        NOT NULL,
    image_id            uuid,
    seed                bigint,
    external_id         text,
    estimated_cost      bigint      NOT NULL,
    final_cost          bigint,
    error_code          text,
    error_message       text,
    error_retryable     boolean,
    error_charged       boolean,
    blob_key            text,
    bytes               bigint,
    sha256              text,
    duration_ms         bigint,
    width               integer,
    height              integer,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    completed_at        timestamptz
);
CREATE INDEX videos_owner_idx ON videos (owner_id, created_at DESC, id DESC);
CREATE INDEX videos_owner_status_idx ON videos (owner_id, status, created_at DESC, id DESC);
-- Workers look for jobs in flight.
CREATE INDEX videos_in_flight_idx ON videos (status, updated_at)
    WHERE status NOT IN ('completed', 'failed', 'cancelled');

-- Read models for accounts and credits (written only by their projectors, from the ordered
-- log, in the same transaction as the projector's checkpoint), plus two tables the API owns
-- directly: refresh-token sessions and idempotency records (docs/adr/0005-api-state.md).

CREATE TABLE users (
    id             uuid        PRIMARY KEY,
    email          text        NOT NULL UNIQUE,
    email_verified boolean     NOT NULL DEFAULT false,
    role           text        NOT NULL CHECK (role IN ('user', 'admin')),
    disabled       boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX users_created_idx ON users (created_at, id);

-- Never the secret: key_hash is the SHA-256 of the key, used to authenticate a presented key.
CREATE TABLE api_keys (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL,
    name       text        NOT NULL,
    prefix     text        NOT NULL,
    key_hash   text        NOT NULL UNIQUE,
    scopes     text[]      NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

-- Written by the API on use, not by a projector: usage is telemetry, not a domain fact, and
-- must survive a rebuild of api_keys.
CREATE TABLE api_key_usage (
    key_id       uuid        PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);

CREATE TABLE credit_accounts (
    user_id    uuid        PRIMARY KEY,
    balance    bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK (reserved >= 0 AND balance - reserved >= 0)
);

-- One row per credit movement, keyed by the event that made it.
CREATE TABLE credit_ledger (
    global_position   bigint      PRIMARY KEY,
    user_id           uuid        NOT NULL,
    kind              text        NOT NULL
        CHECK (kind IN ('granted', 'purchased', 'reserved', 'captured', 'released')),
    balance_change    bigint      NOT NULL,
    reserved_change   bigint      NOT NULL,
    video_id          uuid,
    reason            text,
    payment_reference text,
    actor             text        NOT NULL,
    recorded_at       timestamptz NOT NULL
);
CREATE INDEX credit_ledger_user_idx ON credit_ledger (user_id, global_position DESC);
CREATE INDEX credit_ledger_video_idx ON credit_ledger (video_id) WHERE video_id IS NOT NULL;

-- Refresh tokens: opaque, stored hashed, one row per issued token. Rotation marks the old row
-- used; presenting a used token revokes its whole family.
CREATE TABLE refresh_tokens (
    token_hash text        PRIMARY KEY,
    family_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Idempotency-Key records, per scope (user or client IP) and key, kept 24 hours.
-- status_code is NULL while the first request is still executing.
CREATE TABLE idempotency_keys (
    scope         text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    status_code   integer,
    response_body bytea,
    content_type  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

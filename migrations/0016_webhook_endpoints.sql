-- Webhook endpoints (issue 13, docs/adr/0030-webhook-endpoints.md).
--
-- `webhook_endpoints` is the read model of the WebhookEndpoint aggregate, written inline and
-- by its projector (versioned like `images`). A deleted endpoint's row is kept, marked by
-- `deleted_at` (the version must survive), and hidden by every query.
CREATE TABLE webhook_endpoints (
    endpoint_id     uuid        PRIMARY KEY,
    owner_id        uuid        NOT NULL,
    url             text        NOT NULL,
    events          text[]      NOT NULL,
    description     text,
    -- NULL while enabled; otherwise 'owner', 'gone' or 'failing'.
    disabled_reason text,
    disabled_detail text,
    secret_fingerprint text     NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    version         bigint      NOT NULL
);
CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner_id, endpoint_id);

-- The signing secrets, kept out of the log (the signer needs them in the clear; the log is
-- forever and published). Written in the transaction that records the endpoint's creation or
-- rotation. The current secret has no `expires_at`; a rotated-out one signs beside it until
-- then. Not a read model: a replay does not touch it.
CREATE TABLE webhook_secrets (
    endpoint_id uuid        NOT NULL,
    fingerprint text        NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    PRIMARY KEY (endpoint_id, fingerprint)
);

-- The secret a user's per-request `webhook_url`s are signed with (Replicate's "default"
-- secret): made on first use, shown by GET /v1/webhooks/default/secret.
CREATE TABLE webhook_default_secrets (
    owner_id   uuid        PRIMARY KEY,
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

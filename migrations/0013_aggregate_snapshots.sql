-- Verified snapshots of our own (docs/adr/0021-credit-account-snapshots.md): the state of an
-- aggregate rebuilt from its committed events up to `sequence`, in the shape `version` of its
-- type. A cache: loads start here and apply the events after `sequence`; any row may be
-- deleted at any time. Only credit accounts are snapshotted.
CREATE TABLE aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    version        integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

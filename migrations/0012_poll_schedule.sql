-- When the poller next asks a provider about each job it follows (docs/adr/0020-fair-poller.md).
-- The worker's own bookkeeping, like provider_health: not derived from events, so replays and
-- read-model rebuilds leave it alone. A job without a row is due (never polled yet); rows of
-- finished jobs are pruned by the poller.
CREATE TABLE poll_schedule (
    video_id     uuid        PRIMARY KEY,
    due_at       timestamptz NOT NULL,
    -- When `due_at` was set: a video changed since (a cancellation asked for) is due at once.
    scheduled_at timestamptz NOT NULL DEFAULT now()
);

-- The simulator runs at most FRAMEGATE_SIMULATOR_MAX_CONCURRENCY jobs at once, like a real
-- provider's quota: a job's run starts when a slot frees, in submission order. NULL for jobs
-- submitted before this column existed: they started when submitted.
ALTER TABLE simulator_jobs ADD COLUMN started_at timestamptz;

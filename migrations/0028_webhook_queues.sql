-- A cursor per webhook queue, and runs recorded as one row (ADR 0034, stop 28 addendum).
--
-- A queue (an endpoint's, or one video's per-request URL) is leased as a whole, and how far
-- it has been sent is one number, `sent_through`: every row of the queue up to that `seq` is
-- settled (delivered, given up, or moved to the retry path), the rows after it are waiting in
-- order. A run's record moves the cursor once instead of finding the next rows through a
-- pending-only index; the rows it delivered on their first attempt are recorded as one
-- `webhook_runs` row, and their own rows are never written again.
CREATE TABLE webhook_queues (
    queue        text        PRIMARY KEY,
    sent_through bigint      NOT NULL DEFAULT 0,
    -- The highest `seq` of the queue the senders' scan of new rows has seen
    -- (`webhook_outbox_scan`). Written by senders only, never by the enqueuing transaction, so
    -- enqueues and records never wait for each other; a record compares it with its cursor
    -- under the row's lock, so a row the scan found is never left waiting.
    tail_seq     bigint      NOT NULL DEFAULT 0,
    -- When the queue's next row may be attempted: now for fresh rows, the head's next attempt
    -- while it backs off; NULL when nothing waits.
    due_at       timestamptz,
    -- Held by one sender's turn; the token guards its records against a sender that lost it.
    leased_until timestamptz,
    lease        uuid,
    -- The lease under which a row the cursor had not passed was retried by hand: that turn's
    -- records look for rows retried in flight (one key lookup per row); others need not.
    retried_under uuid
);
CREATE INDEX webhook_queues_due_idx ON webhook_queues (due_at) WHERE due_at IS NOT NULL;

-- Deliveries retried by hand after their queue moved past them (and those retried while in
-- flight) are sent on their own, outside the queue's order, when this falls due; NULL for
-- every other row, so the queue's own rows never touch this index.
ALTER TABLE webhook_deliveries ADD COLUMN retry_due_at timestamptz;
CREATE INDEX webhook_deliveries_retry_idx ON webhook_deliveries (retry_due_at)
    WHERE retry_due_at IS NOT NULL;

-- A queue's rows in order, whatever their status (the cursor reads from a position).
CREATE INDEX webhook_deliveries_queue_seq_idx ON webhook_deliveries (queue, seq);

-- Pending rows below a settled row of their queue were retried by hand: the retry path.
-- (One pass over the settled rows per queue, not a search per pending row.)
UPDATE webhook_deliveries d
   SET retry_due_at = d.next_attempt_at, leased_until = NULL
  FROM (SELECT queue, max(seq) AS last_settled FROM webhook_deliveries
         WHERE status <> 'pending' GROUP BY queue) AS settled
 WHERE d.status = 'pending' AND d.queue = settled.queue AND d.seq < settled.last_settled;

-- Every queue: its cursor just before its first waiting row (or at its end), due when that
-- row is.
INSERT INTO webhook_queues (queue, sent_through, tail_seq, due_at)
SELECT q.queue,
       COALESCE(head.seq - 1, q.tail_seq),
       q.tail_seq,
       head.next_attempt_at
  FROM (SELECT queue, max(seq) AS tail_seq FROM webhook_deliveries GROUP BY queue) AS q
  LEFT JOIN LATERAL (
       SELECT seq, next_attempt_at FROM webhook_deliveries
        WHERE queue = q.queue AND status = 'pending' AND retry_due_at IS NULL
        ORDER BY seq LIMIT 1) AS head ON true;

-- How far the senders' scan of new rows has gone. Enqueues take one advisory lock
-- (`framegate_commands::webhook_deliveries::enqueue`), so rows become visible in `seq` order
-- and nothing can appear behind this point later.
CREATE TABLE webhook_outbox_scan (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    scanned_through bigint  NOT NULL
);
INSERT INTO webhook_outbox_scan (scanned_through)
SELECT COALESCE(max(seq), 0) FROM webhook_deliveries;

-- A run of deliveries sent on their first attempt and delivered, recorded as one row when
-- the cursor moves past them: no row of their own is written. Their state in the delivery
-- log is read from here (`webhook_delivery_states`). Rows with attempts of their own (a
-- failure before, a retry by hand) are recorded row by row.
CREATE TABLE webhook_runs (
    queue         text          NOT NULL,
    last_seq      bigint        NOT NULL,
    first_seq     bigint        NOT NULL,
    recorded_at   timestamptz   NOT NULL DEFAULT now(),
    seqs          bigint[]      NOT NULL,
    started_at    timestamptz[] NOT NULL,
    status        integer[]     NOT NULL,
    latency_ms    integer[]     NOT NULL,
    response_body text[]        NOT NULL,
    PRIMARY KEY (queue, last_seq)
);

-- Every delivery as its log shows it: a row still `pending` in the table, on no retry path,
-- that its queue's cursor has passed was delivered on its first attempt by a run.
CREATE VIEW webhook_delivery_states AS
SELECT x.delivery_id, x.seq, x.queue, x.endpoint_id, x.owner_id, x.url, x.message_id,
       x.event_type, x.event_at, x.video_id, x.body, x.created_at, x.window_started_at,
       x.retry_due_at, x.traceparent, x.tracestate, x.by_run,
       CASE WHEN x.by_run THEN 'delivered' ELSE x.status END AS status,
       x.attempts + CASE WHEN x.by_run THEN 1 ELSE 0 END AS attempts,
       CASE WHEN NOT x.by_run AND x.status = 'pending'
            THEN COALESCE(x.retry_due_at, GREATEST(x.next_attempt_at, x.queue_due_at)) END
           AS next_attempt_at,
       CASE WHEN x.by_run THEN r.status[r.i] ELSE x.last_status END AS last_status,
       CASE WHEN x.by_run THEN r.latency_ms[r.i] ELSE x.last_latency_ms END AS last_latency_ms,
       CASE WHEN NOT x.by_run THEN x.last_error END AS last_error,
       CASE WHEN x.by_run THEN COALESCE(r.recorded_at, x.updated_at) ELSE x.updated_at END
           AS updated_at,
       CASE WHEN x.by_run THEN COALESCE(r.recorded_at, x.updated_at) ELSE x.delivered_at END
           AS delivered_at,
       r.started_at[r.i] AS run_started_at,
       r.response_body[r.i] AS run_response_body
  FROM (SELECT d.*, q.due_at AS queue_due_at,
               (d.status = 'pending' AND d.retry_due_at IS NULL
                AND d.seq <= COALESCE(q.sent_through, 0)) AS by_run
          FROM webhook_deliveries d
          LEFT JOIN webhook_queues q ON q.queue = d.queue) AS x
  LEFT JOIN LATERAL (
       SELECT array_position(run.seqs, x.seq) AS i, run.status, run.latency_ms,
              run.recorded_at, run.started_at, run.response_body
         FROM webhook_runs run
        WHERE x.by_run AND run.queue = x.queue AND run.last_seq >= x.seq
          AND run.first_seq <= x.seq
        ORDER BY run.last_seq
        LIMIT 1) AS r ON true;

-- Every attempt, as the delivery log lists them: those logged row by row, and the one
-- attempt of each delivery a run delivered.
CREATE VIEW webhook_attempt_log AS
SELECT delivery_id, attempt, started_at, status, latency_ms, error, response_body
  FROM webhook_delivery_attempts
UNION ALL
SELECT delivery_id, attempts, COALESCE(run_started_at, updated_at), last_status,
       COALESCE(last_latency_ms, 0), NULL, run_response_body
  FROM webhook_delivery_states WHERE by_run;

-- Leases now live on queues (a row on the retry path takes its own when it is claimed).
-- A row the old sender had claimed and not recorded keeps the attempt its claim counted.
UPDATE webhook_deliveries SET leased_until = NULL WHERE leased_until IS NOT NULL;

-- `status` is in no index any more: a row recorded on its own (a failure, a retry) is a HOT
-- update.
DROP INDEX webhook_deliveries_due_idx;
DROP INDEX webhook_deliveries_queue_idx;

-- Audit log queries (docs/adr/0011-audit-log.md) filter the event store by actor,
-- correlation id, event type and time, and page through the matches in time order:
-- ORDER BY recorded_at, global_position with a keyset cursor. Each index leads with the
-- equality filter and ends with that order, so a page is one short range read of one index,
-- already in page order: no sort, nothing read past the page, however large the log.
-- They supersede the single-column actor, correlation and recorded_at indexes of 0001.
-- Aggregate streams use the primary key (aggregate_type, aggregate_id, sequence).
CREATE INDEX events_recorded_at_position_idx
    ON events (recorded_at, global_position);
CREATE INDEX events_actor_recorded_idx
    ON events ((metadata ->> 'actor'), recorded_at, global_position);
CREATE INDEX events_correlation_recorded_idx
    ON events ((metadata ->> 'correlation_id'), recorded_at, global_position);
CREATE INDEX events_event_type_recorded_idx
    ON events (event_type, recorded_at, global_position);
DROP INDEX events_recorded_at_idx;
DROP INDEX events_actor_idx;
DROP INDEX events_correlation_id_idx;

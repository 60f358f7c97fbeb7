-- Samples what Postgres's client backends and autovacuum workers are doing, every 200 ms,
-- as 'time|database|backend|wait type|wait event (cpu when none)|query': run beside a
-- benchmark with  psql -h 127.0.0.1 -U postgres postgres -f bench/pg-activity.sql > samples
-- and count lines per query and wait within a phase's time range (ADR 0043, stop 31).
\pset format unaligned
\pset tuples_only on
\pset fieldsep '|'
SELECT to_char(clock_timestamp(),'HH24:MI:SS.MS'), datname, backend_type, coalesce(wait_event_type,'-'), coalesce(wait_event,'cpu'), regexp_replace(left(query,110), '\s+', ' ', 'g') FROM pg_stat_activity WHERE state <> 'idle' AND pid <> pg_backend_pid() AND backend_type IN ('client backend','autovacuum worker') \watch 0.2

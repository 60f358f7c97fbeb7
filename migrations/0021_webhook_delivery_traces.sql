-- Traces through webhook deliveries (issue 14, docs/adr/0037-traces.md).
--
-- The W3C trace context of the event a delivery was made from (or of the request that asked
-- for a test delivery), so every attempt is a span in that trace and sends it on in a
-- `traceparent` header. NULL for deliveries made without traces on, and for those enqueued
-- before this migration: they are sent as before, without the header.
ALTER TABLE webhook_deliveries
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;

-- no-transaction
-- The erasure deletes a user's webhook deliveries (their bodies hold prompts) by owner
-- (docs/adr/0043-crypto-shredding.md): without an index that was a scan of the whole outbox
-- inside the erasure's transaction. Built concurrently (the outbox is written all the time),
-- hence a migration of its own, outside a transaction, with this one statement.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_owner_idx ON webhook_deliveries (owner_id);

-- Room on each page of the delivery outbox for the new versions of its rows (ADR 0034).
--
-- A delivery row is updated twice on its way out: leased (lease, attempt count: no indexed
-- column changes) and recorded. With full pages, the lease's new version goes to another page
-- and every index of the table gets an entry for it; with room on the page, Postgres keeps it
-- on the same page without touching the indexes (a HOT update). Pages written from now on
-- keep 40 % free; existing pages are left as they are (no rewrite, no lock held).
ALTER TABLE webhook_deliveries SET (fillfactor = 60);

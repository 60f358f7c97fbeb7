-- Email notifications (issue 13.6, docs/adr/0033-email-notifications.md): each user's
-- preferences as the `users` read model shows them on GET /v1/me, written from
-- `NotificationPreferencesChanged` (inline and by the users projector, so a replay rebuilds
-- them). Everything starts off; the low-credit threshold is in credits and shared with the
-- `credits.low` webhook.
ALTER TABLE users
    ADD COLUMN notify_video_completed boolean NOT NULL DEFAULT false,
    ADD COLUMN notify_video_failed    boolean NOT NULL DEFAULT false,
    ADD COLUMN notify_credits_low     boolean NOT NULL DEFAULT false,
    ADD COLUMN credits_low_threshold  bigint  NOT NULL DEFAULT 100
        CHECK (credits_low_threshold >= 0);

-- The notification subscription (process.notifications) starts at the end of the log of an
-- existing deployment: nobody can have opted in before this migration, so the history holds
-- nothing to mail, and reading it all once would cost a lookup per video and credit event.
-- A new database has no events and starts at the beginning.
INSERT INTO subscription_checkpoints (name, last_tx_id, last_position)
SELECT 'process.notifications', tx_id, global_position
  FROM events
 ORDER BY tx_id DESC, global_position DESC
 LIMIT 1
ON CONFLICT (name) DO NOTHING;

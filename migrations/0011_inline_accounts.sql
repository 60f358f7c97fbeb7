-- `users` and `images` are now written inline too, like `videos` and `credit_accounts`
-- (migration 0009): each row records the sequence of the last event of its aggregate it
-- reflects. `api_keys` needs no version: every change it makes is idempotent and final.
ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN version bigint NOT NULL DEFAULT 0;

-- Existing rows reflect exactly the events their projector has handled: those at or before
-- its checkpoint.
UPDATE users u
   SET version = COALESCE((
       SELECT max(e.sequence) FROM events e, subscription_checkpoints c
        WHERE c.name = 'read_model.users'
          AND e.aggregate_type = 'User' AND e.aggregate_id = u.id::text
          AND (e.tx_id, e.global_position) <= (c.last_tx_id, c.last_position)), 0);
UPDATE images i
   SET version = COALESCE((
       SELECT max(e.sequence) FROM events e, subscription_checkpoints c
        WHERE c.name = 'read_model.images'
          AND e.aggregate_type = 'Image' AND e.aggregate_id = i.id::text
          AND (e.tx_id, e.global_position) <= (c.last_tx_id, c.last_position)), 0);

-- Whether a cancelled video is billed (`VideoCancelled.charged`: the provider had accepted the
-- job and could not stop it); NULL unless cancelled.
ALTER TABLE videos ADD COLUMN cancel_charged boolean;
UPDATE videos v
   SET cancel_charged = COALESCE((e.payload -> 'VideoCancelled' ->> 'charged')::boolean, false)
  FROM events e
 WHERE e.aggregate_type = 'Video' AND e.aggregate_id = v.id::text
   AND e.event_type = 'VideoCancelled';

-- A guard for image streams (docs/adr/0006-images.md): an image's id is derived from its owner
-- and content, so one owner's content always lands in one stream. This index refuses a second
-- stream that would start with the same owner and content (it can only fire on a bug), while
-- a re-upload after deletion, which continues the same stream, stays possible.
CREATE UNIQUE INDEX events_image_owner_sha256_key
    ON events ((payload -> event_type ->> 'owner'), (payload -> event_type ->> 'sha256'))
    WHERE aggregate_type = 'Image' AND sequence = 1;

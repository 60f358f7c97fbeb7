-- The images read model, written only by its projector from the ordered log: one row per
-- image stream with the facts of its latest upload attempt (docs/adr/0006-images.md).
--
-- `exif` holds what `ImageExif` holds (camera make, model, capture time) and nothing else:
-- location never reaches an event, so it cannot reach this table either. Storage keys and
-- EXIF are NULL for a rejected upload, which stores nothing. A deleted image keeps its row
-- (and its keys) with `deleted_at` set; the API answers 404 for it.
CREATE TABLE images (
    id            uuid        PRIMARY KEY,
    owner_id      uuid        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('available', 'rejected', 'deleted')),
    sha256        text        NOT NULL,
    content_type  text        NOT NULL,
    bytes         bigint      NOT NULL,
    width         integer     NOT NULL,
    height        integer     NOT NULL,
    orientation   smallint,
    exif          jsonb,
    blob_key      text,
    thumbnail_key text,
    moderation    jsonb       NOT NULL,
    -- When the latest upload attempt was recorded: a re-upload after deletion lists as new.
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz
);
-- An owner's listing, newest first, without deleted images.
CREATE INDEX images_owner_idx ON images (owner_id, created_at DESC, id DESC)
    WHERE status <> 'deleted';

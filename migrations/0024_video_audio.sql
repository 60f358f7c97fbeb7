-- Whether a video was asked for with a soundtrack (`VideoRequested` 2.0's `generate_audio`;
-- requests stored as 1.0 upcast to false, docs/adr/0042-versioned-events.md).
ALTER TABLE videos ADD COLUMN generate_audio boolean NOT NULL DEFAULT false;

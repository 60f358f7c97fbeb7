-- Originals stored before docs/adr/0027-image-metadata.md kept the upload's metadata (GPS
-- among it). Each is listed here once; the API's maintenance rewrites it as a new upload is
-- stored and takes it off the list (api/src/images/restrip.rs). A row left with attempts at
-- the limit could not be rewritten: `last_error` says why.
CREATE TABLE originals_to_strip (
    blob_key     text    PRIMARY KEY,
    content_type text    NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);

INSERT INTO originals_to_strip (blob_key, content_type)
SELECT DISTINCT ON (blob_key) blob_key, content_type
  FROM images
 WHERE blob_key IS NOT NULL
 ORDER BY blob_key;

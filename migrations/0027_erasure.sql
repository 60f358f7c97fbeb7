-- The right to erasure (docs/adr/0043-crypto-shredding.md): an erased user's row keeps its
-- id, role and dates but its email reads '[erased]', which several erased users share.
ALTER TABLE users DROP CONSTRAINT users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (email) WHERE email <> '[erased]';

-- Crypto-shredding (docs/adr/0043-crypto-shredding.md).
--
-- One data key per user, wrapped (AES-256-GCM) by the master key version that is named
-- beside it. Erasing a user destroys the wrapped key and leaves the row as a tombstone, so
-- that no later write can create a new key for the erased user: whatever was sealed under
-- the old key can never be opened again.
CREATE TABLE data_keys (
    user_id text PRIMARY KEY,
    wrapped_key bytea,
    master_key_version integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    erased_at timestamptz,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL)),
    CHECK ((wrapped_key IS NULL) = (master_key_version IS NULL))
);
CREATE INDEX data_keys_master_version ON data_keys (master_key_version)
    WHERE wrapped_key IS NOT NULL;

-- Unique emails without the plaintext: the HMAC-SHA256 of the normalized address under
-- FRAMEGATE_EMAIL_HASH_KEY, claimed in the statement that appends `UserRegistered` and
-- released when the user is erased. `events_user_email_key` (0001) still guards the rows
-- written before encryption, whose plaintext it indexes; their claims are added at start-up.
CREATE TABLE email_claims (
    email_hash bytea PRIMARY KEY,
    user_id text NOT NULL
);
CREATE INDEX email_claims_user ON email_claims (user_id);

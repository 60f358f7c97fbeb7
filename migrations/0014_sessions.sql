-- Sessions (docs/adr/0028-sessions.md): one row per login. The refresh tokens of a login are
-- its rotation chain (`refresh_tokens.family_id`), and every access token issued in it names
-- it (`sid`). A session is ended in one place, `revoked_at`, and that ends its refresh tokens
-- and its access tokens at once: logout, a reused refresh token, a password reset, disabling
-- the account and "log out everywhere".
CREATE TABLE sessions (
    session_id     uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_live_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;

-- No refresh token may be written while the families are copied (the foreign key below
-- needs every family to have its session). API processes of the previous release write
-- `refresh_tokens.revoked_at`, dropped below: stop them before this migration runs.
LOCK TABLE refresh_tokens IN SHARE ROW EXCLUSIVE MODE;

-- Every existing family becomes a session, ended if any of its tokens was revoked (a family
-- was only ever revoked whole, bar a rotation racing a revocation, which now ends it too).
INSERT INTO sessions (session_id, user_id, created_at, revoked_at, revoked_reason)
SELECT family_id,
       (array_agg(user_id))[1],
       min(issued_at),
       max(revoked_at),
       CASE WHEN max(revoked_at) IS NULL THEN NULL ELSE 'migrated' END
  FROM refresh_tokens
 GROUP BY family_id;

ALTER TABLE refresh_tokens
    ADD CONSTRAINT refresh_tokens_session_fk FOREIGN KEY (family_id) REFERENCES sessions (session_id);
ALTER TABLE refresh_tokens DROP COLUMN revoked_at;

-- Mail that leaves the request path (issue 12.8): a request records what to send in its own
-- transaction and answers; the API's mail sender delivers it (api/src/mail/outbox.rs).
-- `payload` is the message to deliver, tagged by its kind (`kind` repeats the tag for
-- operators): 'password_reset' rows hold only the address asked for, and the sender decides
-- whether an account gets a token, so the request costs the same whether or not the address
-- has an account; 'password_was_reset' rows name the user to confirm the reset to.
CREATE TABLE mail_outbox (
    id           bigserial   PRIMARY KEY,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    last_error   text
);
CREATE INDEX mail_outbox_available_idx ON mail_outbox (available_at);

-- Passkeys (WebAuthn credentials). Never edit once released. Times are INTEGER unix milliseconds.
CREATE TABLE passkeys (
    -- The id in the API (`pky_…`).
    id            TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- What the authenticator names the credential by: unique across every account.
    credential_id BLOB    NOT NULL UNIQUE CHECK (length(credential_id) BETWEEN 1 AND 1023),
    name          TEXT    NOT NULL,
    -- The public key, algorithm and flags as webauthn-rs serializes them (JSON); no secret.
    credential    TEXT    NOT NULL,
    -- The authenticator's signature counter at the last use: it only moves forward.
    sign_count    INTEGER NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
) STRICT;

CREATE INDEX passkeys_by_user ON passkeys (user_id);

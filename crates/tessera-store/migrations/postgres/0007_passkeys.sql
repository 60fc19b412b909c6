-- Passkeys (WebAuthn credentials): SQLite's 0009 in PostgreSQL's types. Never edit once
-- released. Times are BIGINT unix milliseconds.
CREATE TABLE passkeys (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id       TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id BYTEA  NOT NULL UNIQUE CHECK (octet_length(credential_id) BETWEEN 1 AND 1023),
    name          TEXT   NOT NULL,
    credential    TEXT   NOT NULL,
    sign_count    BIGINT NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE INDEX passkeys_by_user ON passkeys (user_id);

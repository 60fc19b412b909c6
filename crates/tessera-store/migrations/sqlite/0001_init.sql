-- Tessera's SQLite schema. Applied migrations are checksummed: never edit this file once released,
-- add 0002_… instead. Times are INTEGER unix milliseconds.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    -- Already NFKC-normalized and lower-cased by `Username::parse`, so plain equality is right.
    username      TEXT    NOT NULL UNIQUE,
    -- PHC string (argon2id).
    password_hash TEXT    NOT NULL,
    -- JSON array of role names.
    roles         TEXT    NOT NULL DEFAULT '[]',
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    handle              TEXT    NOT NULL PRIMARY KEY,
    user_id             TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the cookie secret: the database holds no live credential.
    secret_hash         BLOB    NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    csrf_token          BLOB    NOT NULL CHECK (length(csrf_token) = 32),
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    user_agent          TEXT,
    ip                  TEXT,
    -- A JSON object.
    data                TEXT    NOT NULL DEFAULT '{}',
    data_version        INTEGER NOT NULL DEFAULT 0
) STRICT;

-- A user's sessions, oldest first.
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
-- The sweep of expired sessions: its cost follows what expired, not how many sessions exist.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Signing keys, refresh-token families, revocations and the audit trail. Checksummed like 0001:
-- never edit once released. Times are INTEGER unix milliseconds.

CREATE TABLE signing_keys (
    kid            TEXT    NOT NULL PRIMARY KEY,
    -- A JWS algorithm name (`EdDSA`, `ES256`, …); no CHECK, so a new algorithm needs no rebuild.
    algorithm      TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('active', 'rotated', 'retired')),
    -- Sealed with the master key: the database never holds a private key in the clear.
    sealed_private BLOB    NOT NULL,
    -- The public JWK as JSON; NULL for HMAC keys.
    public_jwk     TEXT,
    created_at     INTEGER NOT NULL,
    rotated_at     INTEGER,
    retired_at     INTEGER
) STRICT;

CREATE TABLE refresh_families (
    id                  TEXT    NOT NULL PRIMARY KEY,
    user_id             TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model               TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    last_used_at        INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at          INTEGER,
    revoked_reason      TEXT,
    user_agent          TEXT,
    ip                  TEXT
) STRICT;

-- A user's families, oldest first.
CREATE INDEX refresh_families_by_user ON refresh_families (user_id, created_at);
-- The sweep: a family ends at whichever expiry comes first, and the index holds exactly that.
CREATE INDEX refresh_families_by_expiry
    ON refresh_families (min(expires_at, absolute_expires_at));

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token secret: the database holds no live credential.
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    family_id  TEXT    NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    rotated_at INTEGER
) STRICT;

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

-- The denylist. `subject` is the jti, the family id or the user id; `before` is set exactly for
-- per-user entries, and every distinct `before` of a user is its own entry.
CREATE TABLE revocations (
    kind       TEXT    NOT NULL CHECK (kind IN ('token', 'family', 'user_before')),
    subject    TEXT    NOT NULL,
    before     INTEGER CHECK ((before IS NOT NULL) = (kind = 'user_before')),
    expires_at INTEGER NOT NULL
) STRICT;

-- Recording an entry twice finds this index and keeps one row. `before` is NULL only where the
-- kind has none, so the stand-in 0 cannot collide with a real one.
CREATE UNIQUE INDEX revocations_by_entry ON revocations (kind, subject, ifnull(before, 0));
CREATE INDEX revocations_by_expiry ON revocations (expires_at);

-- Live access tokens (allowlist mode). No foreign keys: an access token lives until it expires,
-- whatever happens to the family that issued it, unless it is disallowed explicitly.
CREATE TABLE allowed_tokens (
    jti        TEXT    NOT NULL PRIMARY KEY,
    family_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX allowed_tokens_by_family ON allowed_tokens (family_id);
CREATE INDEX allowed_tokens_by_user ON allowed_tokens (user_id);
CREATE INDEX allowed_tokens_by_expiry ON allowed_tokens (expires_at);

-- The audit trail. AUTOINCREMENT: ids only grow, even after the newest rows are deleted, so they
-- are a safe paging cursor. No foreign key on user_id: events outlive the users they mention.
CREATE TABLE security_events (
    id      INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    user_id TEXT,
    -- A JSON object.
    detail  TEXT    NOT NULL DEFAULT '{}'
) STRICT;

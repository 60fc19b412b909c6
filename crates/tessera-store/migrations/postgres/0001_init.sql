-- Tessera's PostgreSQL schema: the tables of SQLite's 0001 and 0002, in PostgreSQL's types.
-- Applied migrations are checksummed: never edit this file once released, add 0002_… instead.
--
-- Times are BIGINT unix milliseconds, as in SQLite, so every backend stores the same values.
-- Identifiers and names are COLLATE "C": compared and ordered by their bytes, as SQLite's BINARY
-- collation and Rust's `str` order them (the database's default collation may follow a locale,
-- and then a paging cursor and the order it pages through would disagree).
-- Session data and event details are JSON, not JSONB: kept exactly as written, and JSONB refuses
-- the escape \u0000, which a client's session data or an attacker's input in an audit detail may
-- hold. Roles are only ever names, so they are JSONB.

CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- Already NFKC-normalized and lower-cased by `Username::parse`, so plain equality is right.
    username      TEXT COLLATE "C" NOT NULL UNIQUE,
    -- PHC string (argon2id).
    password_hash TEXT    NOT NULL,
    -- A JSON array of role names.
    roles         JSONB   NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(roles) = 'array'),
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

CREATE TABLE sessions (
    handle              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id             TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the cookie secret: the database holds no live credential.
    secret_hash         BYTEA  NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    csrf_token          BYTEA  NOT NULL CHECK (octet_length(csrf_token) = 32),
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    user_agent          TEXT,
    ip                  TEXT,
    data                JSON   NOT NULL DEFAULT '{}',
    data_version        BIGINT NOT NULL DEFAULT 0
);

-- A user's sessions, oldest first.
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
-- The sweep of expired sessions: its cost follows what expired, not how many sessions exist.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE signing_keys (
    kid            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- A JWS algorithm name (`EdDSA`, `ES256`, …); no CHECK, so a new algorithm needs no migration.
    algorithm      TEXT   NOT NULL,
    status         TEXT   NOT NULL CHECK (status IN ('active', 'rotated', 'retired')),
    -- Sealed with the master key: the database never holds a private key in the clear.
    sealed_private BYTEA  NOT NULL,
    -- The public JWK as JSON text, kept byte for byte; NULL for HMAC keys.
    public_jwk     TEXT,
    created_at     BIGINT NOT NULL,
    rotated_at     BIGINT,
    retired_at     BIGINT
);

CREATE TABLE refresh_families (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id             TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model               TEXT   NOT NULL,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    revoked_at          BIGINT,
    revoked_reason      TEXT,
    user_agent          TEXT,
    ip                  TEXT
);

-- A user's families, oldest first.
CREATE INDEX refresh_families_by_user ON refresh_families (user_id, created_at);
-- The sweep: a family ends at whichever expiry comes first, and the index holds exactly that.
CREATE INDEX refresh_families_by_expiry
    ON refresh_families ((LEAST(expires_at, absolute_expires_at)));

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token secret: the database holds no live credential.
    hash       BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(hash) = 32),
    family_id  TEXT COLLATE "C" NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    rotated_at BIGINT
);

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

-- The denylist. `subject` is the jti, the family id or the user id; `before` is set exactly for
-- per-user entries, and every distinct `before` of a user is its own entry.
CREATE TABLE revocations (
    kind       TEXT   NOT NULL CHECK (kind IN ('token', 'family', 'user_before')),
    subject    TEXT COLLATE "C" NOT NULL,
    before     BIGINT CHECK ((before IS NOT NULL) = (kind = 'user_before')),
    expires_at BIGINT NOT NULL
);

-- Recording an entry twice finds this index and keeps one row. `before` is NULL only where the
-- kind has none, so the stand-in 0 cannot collide with a real one.
CREATE UNIQUE INDEX revocations_by_entry ON revocations (kind, subject, (COALESCE(before, 0)));
CREATE INDEX revocations_by_expiry ON revocations (expires_at);

-- Live access tokens (allowlist mode). No foreign keys: an access token lives until it expires,
-- whatever happens to the family that issued it, unless it is disallowed explicitly.
CREATE TABLE allowed_tokens (
    jti        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    family_id  TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX allowed_tokens_by_family ON allowed_tokens (family_id);
CREATE INDEX allowed_tokens_by_user ON allowed_tokens (user_id);
CREATE INDEX allowed_tokens_by_expiry ON allowed_tokens (expires_at);

-- The audit trail. A sequence never hands out an id twice, even after the newest rows are
-- deleted, so ids are a safe paging cursor. No foreign key on user_id: events outlive the users
-- they mention.
CREATE TABLE security_events (
    id      BIGSERIAL NOT NULL PRIMARY KEY,
    at      BIGINT    NOT NULL,
    kind    TEXT      NOT NULL,
    user_id TEXT COLLATE "C",
    detail  JSON      NOT NULL DEFAULT '{}'
);

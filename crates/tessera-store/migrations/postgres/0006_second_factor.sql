-- Second factors, login challenges and how each login was authenticated: SQLite's 0008 in
-- PostgreSQL's types. Never edit once released. Times are BIGINT unix milliseconds.

-- `AuthContext`'s stored form (compact JSON); NULL for logins made before this existed.
ALTER TABLE sessions ADD COLUMN auth_context TEXT;
ALTER TABLE refresh_families ADD COLUMN auth_context TEXT;

-- One TOTP factor per account; unconfirmed until a first code came back.
CREATE TABLE totp_factors (
    user_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- The secret sealed with the master key (AES-256-GCM): never stored in the clear.
    sealed_secret BYTEA  NOT NULL,
    created_at    BIGINT NOT NULL,
    confirmed_at  BIGINT,
    -- The last time step a code was accepted for: a code is used once, and never an older one.
    last_step     BIGINT
);

-- Single-use recovery codes, by SHA-256: the database holds no live code.
CREATE TABLE recovery_codes (
    hash    BYTEA NOT NULL PRIMARY KEY CHECK (octet_length(hash) = 32),
    user_id TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX recovery_codes_by_user ON recovery_codes (user_id);

-- A login whose password was right and that waits for its second factor.
CREATE TABLE login_challenges (
    hash            BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(hash) = 32),
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model           TEXT   NOT NULL CHECK (model IN ('session', 'token', 'hybrid')),
    user_not_before BIGINT NOT NULL,
    user_agent      TEXT,
    ip              TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    dpop_jkt        TEXT COLLATE "C"
);

CREATE INDEX login_challenges_by_expiry ON login_challenges (expires_at);

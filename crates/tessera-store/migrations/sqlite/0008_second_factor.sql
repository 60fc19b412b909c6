-- Second factors (TOTP and its recovery codes), the login challenges that wait for them, and how
-- each login was authenticated. Never edit once released. Times are INTEGER unix milliseconds.

-- How the login was authenticated (`AuthContext`'s stored form, compact JSON: auth_time and the
-- second factor, if any). NULL for logins made before this existed: by password, at created_at.
ALTER TABLE sessions ADD COLUMN auth_context TEXT;
ALTER TABLE refresh_families ADD COLUMN auth_context TEXT;

-- One TOTP factor per account; unconfirmed until a first code came back.
CREATE TABLE totp_factors (
    user_id       TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- The secret sealed with the master key (AES-256-GCM): never stored in the clear.
    sealed_secret BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    confirmed_at  INTEGER,
    -- The last time step a code was accepted for: a code is used once, and never an older one.
    last_step     INTEGER
) STRICT;

-- Single-use recovery codes, by SHA-256: the database holds no live code.
CREATE TABLE recovery_codes (
    hash    BLOB NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE
) STRICT;

CREATE INDEX recovery_codes_by_user ON recovery_codes (user_id);

-- A login whose password was right and that waits for its second factor.
CREATE TABLE login_challenges (
    -- SHA-256 of the challenge secret.
    hash            BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    model           TEXT    NOT NULL CHECK (model IN ('session', 'token', 'hybrid')),
    -- The account's not_before at the password check: a change to the account voids it.
    user_not_before INTEGER NOT NULL,
    user_agent      TEXT,
    ip              TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The thumbprint of the DPoP key a token login was started with: it completes only with a
    -- proof of that key.
    dpop_jkt        TEXT
) STRICT;

-- The sweep of expired challenges.
CREATE INDEX login_challenges_by_expiry ON login_challenges (expires_at);

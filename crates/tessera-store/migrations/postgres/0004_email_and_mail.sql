-- Email addresses, the codes mailed to them, and the outgoing mail queue: SQLite's 0006 in
-- PostgreSQL's types. Never edit once released. Times are BIGINT unix milliseconds.
--
-- `email` is the address as the user gave it; `email_key` its comparison key (NFKC, lower-cased,
-- from `EmailAddress::key`), unique among accounts. Both are NULL together: an account without
-- an address. Existing accounts have none.
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN email_key TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD CONSTRAINT users_email_and_key
    CHECK ((email IS NULL) = (email_key IS NULL));

-- NULLs are distinct in a unique index: any number of accounts may have no address.
CREATE UNIQUE INDEX users_by_email_key ON users (email_key);

-- Single-use codes mailed to an account (recovery, address verification).
CREATE TABLE account_codes (
    -- SHA-256 of the code: the database holds no live credential.
    hash       BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(hash) = 32),
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT   NOT NULL CHECK (purpose IN ('recovery', 'verify_email')),
    -- The key of the address the code was mailed to.
    email_key  TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- A newer code voids the older ones of its account and purpose.
CREATE INDEX account_codes_by_user ON account_codes (user_id, purpose);
-- The sweep of expired codes.
CREATE INDEX account_codes_by_expiry ON account_codes (expires_at);

-- Outgoing mail, sealed with the master key: recipient and body are never stored in the clear.
CREATE TABLE mail_queue (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- The account the mail concerns, if any: its mail goes with it.
    user_id         TEXT COLLATE "C" REFERENCES users (id) ON DELETE CASCADE,
    sealed          BYTEA  NOT NULL,
    created_at      BIGINT NOT NULL,
    not_after       BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Due now, after a backoff, or when a claim's lease ends.
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT
);

-- Claims take the due mail in this order, from the index alone.
CREATE INDEX mail_queue_by_due ON mail_queue (next_attempt_at, created_at, id);
-- An account's mail, for its deletion.
CREATE INDEX mail_queue_by_user ON mail_queue (user_id);

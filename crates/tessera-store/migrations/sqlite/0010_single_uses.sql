-- What may be used once and must stay used across restarts and for every process on this file:
-- passkey ceremonies (five minutes). (DPoP proofs, checked on every request and good for about a
-- minute, are kept in the server's memory.) Never edit once released. Times are INTEGER unix
-- milliseconds.
CREATE TABLE single_uses (
    -- SHA-256 of what was used: never the thing itself.
    key        BLOB    NOT NULL PRIMARY KEY CHECK (length(key) = 32),
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX single_uses_by_expiry ON single_uses (expires_at);

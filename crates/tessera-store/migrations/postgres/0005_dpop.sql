-- DPoP (RFC 9449): SQLite's 0007 in PostgreSQL's types, and the proofs seen lately, shared by
-- every node so that a proof replayed to another node is refused. Never edit once released.
ALTER TABLE refresh_families ADD COLUMN dpop_jkt TEXT COLLATE "C";

-- One row per proof accepted: SHA-256 over its key's thumbprint and its jti (never the proof),
-- kept until no proof of its age can be accepted any more.
CREATE TABLE dpop_proofs (
    key        BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(key) = 32),
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs (expires_at);

-- DPoP (RFC 9449): a login bound to a client's key. Never edit once released.
--
-- `dpop_jkt` is the JWK SHA-256 thumbprint of the key a login's first proof was signed with;
-- every refresh of the login needs a proof of that key. NULL: a login without DPoP. (Proofs seen
-- lately are kept in the server's memory: SQLite serves one node.)
ALTER TABLE refresh_families ADD COLUMN dpop_jkt TEXT;

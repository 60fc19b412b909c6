-- A user's "not before": every login whose credential check began before it is void (a password
-- change, a role change, disabling, a forced logout). Never edit once released. Existing
-- accounts start at 0: nothing they hold is void.
ALTER TABLE users ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0;

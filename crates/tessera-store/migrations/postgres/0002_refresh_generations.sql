-- Refresh-token generations: a family may go on along one branch only. A family's generation
-- counts its rotations; each token records the generation it was handed out in. Never edit once
-- released. Existing rows start at 0: every token of a family that predates this is of its
-- current generation, so the first of them to be refreshed goes on and the others end.
ALTER TABLE refresh_families ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE refresh_tokens ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;

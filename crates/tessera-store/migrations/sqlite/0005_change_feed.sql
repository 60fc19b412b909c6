-- The change feed between the processes that share the file (a server and the `tessera` command
-- line): each change is a row; every process reads the rows after the last one it read. Never
-- edit once released.
--
-- AUTOINCREMENT: a sequence number is never handed out twice, even after every row was pruned,
-- so a reader's position stays meaningful.
CREATE TABLE change_feed (
    seq    INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    -- The change as JSON (never a secret: sessions are named by their public handle).
    change TEXT    NOT NULL
) STRICT;

-- The highest sequence number pruned: a reader still behind it has missed changes.
CREATE TABLE change_feed_pruned (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
) STRICT;

INSERT INTO change_feed_pruned (id, through) VALUES (1, 0);

-- A snapshot of the tally state, so start-up replays only the taps after it.
-- It is a cache: deleting it only makes the next start slower.
CREATE TABLE snapshots (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    tap_rowid INTEGER NOT NULL,   -- covers every tap with rowid <= this
    tap_count INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    data      BLOB    NOT NULL    -- JSON of tally::TallyState
);

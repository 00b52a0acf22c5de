-- What is to be published over XMPP, in order. A row is deleted once the
-- server has acknowledged it; item ids are deterministic (<station>-<seq>),
-- so publishing a row twice (after a crash) overwrites, never duplicates.
CREATE TABLE outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the publisher reads "after id N"
    seq     INTEGER NOT NULL,   -- the tap's sequence number
    node    TEXT    NOT NULL,
    item_id TEXT    NOT NULL,
    payload TEXT    NOT NULL,   -- the item's XML
    at      INTEGER NOT NULL
);
-- The highest tap seq whose publication is in the outbox (or done): taps
-- above it at start-up were committed but not yet enqueued (a crash).
CREATE TABLE outbox_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    enqueued_through  INTEGER NOT NULL
);

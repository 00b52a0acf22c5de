-- Readers the operator bound at runtime (a device plugged in that the config
-- does not name). Replayed at start like the config's own readers.
CREATE TABLE bound_readers (
    id       TEXT    PRIMARY KEY,
    device   TEXT    NOT NULL,
    protocol TEXT    NOT NULL,
    poll     TEXT,              -- fixed binding: poll + answer
    answer   TEXT,
    slot     TEXT,              -- or an answer slot of the active poll
    at       INTEGER NOT NULL
);

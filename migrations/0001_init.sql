-- pollstation log, version 1.
-- Taps are appended and never edited; operator actions are log entries too,
-- so the station's state is a fold of these two tables.

CREATE TABLE taps (
    station TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    reader  TEXT    NOT NULL,
    tag     TEXT    NOT NULL,   -- urn:rfid:<HEX>
    at      INTEGER NOT NULL,   -- ms since the Unix epoch
    poll    TEXT    NOT NULL,   -- what the tap meant when it was read
    answer  TEXT    NOT NULL,
    PRIMARY KEY (station, seq)
);

CREATE TABLE actions (
    id             INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('open', 'close', 'reset', 'activate')),
    poll           TEXT    NOT NULL,
    -- for 'reset': every tap of the poll at or below this key is forgotten
    cutoff_at      INTEGER,
    cutoff_station TEXT,
    cutoff_seq     INTEGER
);

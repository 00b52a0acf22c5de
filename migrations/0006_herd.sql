-- The herd: operator actions and identity answers become feeds numbered
-- without gaps per origin station, like taps, so stations can exchange
-- what the other lacks. Rows written before have no origin yet: the store
-- gives them this station's id and numbers at the next start.
ALTER TABLE actions ADD COLUMN origin TEXT;
ALTER TABLE actions ADD COLUMN oseq INTEGER;
CREATE UNIQUE INDEX actions_feed ON actions (origin, oseq);

-- Every identity answer, by origin and number (the feed); `identities`
-- keeps the one that wins per tag (the last looked up; ties by origin).
CREATE TABLE identity_log (
    origin     TEXT    NOT NULL,
    iseq       INTEGER NOT NULL,
    tag        TEXT    NOT NULL,
    person_id  TEXT,
    name       TEXT,
    first      TEXT,
    source     TEXT    NOT NULL,
    fetched_at INTEGER NOT NULL,
    PRIMARY KEY (origin, iseq)
);
ALTER TABLE identities ADD COLUMN origin TEXT;

-- A late reset or close re-folds one poll from the log.
CREATE INDEX taps_poll ON taps (poll);

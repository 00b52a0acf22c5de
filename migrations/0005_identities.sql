-- Who carries a tag, as resolved (people file or anyMeta). person_id NULL:
-- looked up and unknown (a negative cache entry). Replayed at start; the
-- tally engine merges tags of one person.
CREATE TABLE identities (
    tag        TEXT    PRIMARY KEY,   -- urn:rfid:<HEX>
    person_id  TEXT,
    name       TEXT,
    first      TEXT,
    source     TEXT    NOT NULL,      -- people | anymeta
    fetched_at INTEGER NOT NULL
);
-- Tags waiting for a lookup; written with the tap, so they survive restarts.
CREATE TABLE identity_queue (
    tag TEXT PRIMARY KEY,
    at  INTEGER NOT NULL
);

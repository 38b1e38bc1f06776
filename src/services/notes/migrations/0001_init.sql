-- Notes service schema, version 1. Portable between SQLite and PostgreSQL:
-- TEXT ids (UUIDv7, so ordering by id is ordering by creation time) and
-- BIGINT unix-millisecond timestamps. owner_id is auth's user id: the
-- notes service never reads auth's tables, it trusts the identity the kit
-- verified.
CREATE TABLE notes (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX notes_by_owner ON notes (owner_id, id);

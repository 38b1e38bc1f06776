-- Auth service schema, version 1.
--
-- Portable between SQLite and PostgreSQL: TEXT ids (UUIDv7, so ordering by id
-- is ordering by creation time), BIGINT unix-millisecond timestamps, INTEGER
-- 0/1 flags. Secrets never appear in clear: refresh tokens, reset tokens and
-- API keys are stored as SHA-256 hex of the token (they are 256-bit random,
-- so a fast hash is enough); passwords as argon2id strings.
--
-- The one exception is `outbox`: a message waiting for delivery must carry
-- what it delivers (the reset token), exactly as an e-mail would. It is read
-- only by the admin API, `trellis admin outbox` and, later, the
-- notifications relay.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,  -- trimmed and lowercased
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'user'
                  CHECK (role IN ('admin', 'moderator', 'verified_user', 'user')),
    banned        INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1)),
    approved      INTEGER NOT NULL DEFAULT 1 CHECK (approved IN (0, 1)),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A session is one login. Access tokens name it in their "sid" claim; a
-- missing or revoked session rejects every token that names it.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    user_agent   TEXT NOT NULL DEFAULT '',
    ip           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_by_user ON sessions (user_id, id);

-- Refresh tokens form a chain per session: each use sets used_at and
-- replaced_by (the hash of its successor). A used token presented again is
-- a theft signal and revokes the session.
CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id, expires_at);

CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX password_resets_by_user ON password_resets (user_id, expires_at);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,          -- first characters, to recognise a key
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, id);

-- Failed logins per normalised email (whether or not the account exists),
-- for the sliding-window lockout.
CREATE TABLE login_failures (
    email TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX login_failures_by_email ON login_failures (email, at_ms);
CREATE INDEX login_failures_by_time ON login_failures (at_ms);

-- Messages for users, delivered by the notifications service once it exists.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,          -- "password_reset"
    recipient    TEXT NOT NULL,          -- normalised email
    payload      TEXT NOT NULL,          -- JSON object
    created_at   BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX outbox_by_recipient ON outbox (recipient, id);

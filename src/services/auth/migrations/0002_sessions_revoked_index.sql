-- Auth service schema, version 2.
--
-- The gateway polls GET /internal/revocations?since=<ms> several times a
-- second (auth_edge.c); this index makes that a range scan over the few
-- recently revoked sessions instead of a scan of every session. Partial, so
-- live sessions (revoked_at NULL) cost nothing in it. Portable between SQLite
-- and PostgreSQL.
CREATE INDEX sessions_by_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

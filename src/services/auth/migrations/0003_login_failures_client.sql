-- Auth service schema, version 3.
--
-- Failed logins are counted per (account, client address) as well as per
-- account (auth_policy.c, LOCKOUT), so five wrong passwords from one
-- address no longer lock the account for everybody. Rows from before this
-- version have client '' and count only toward the account. Portable
-- between SQLite and PostgreSQL.
ALTER TABLE login_failures ADD COLUMN client TEXT NOT NULL DEFAULT '';
CREATE INDEX login_failures_by_email_client ON login_failures (email, client, at_ms);

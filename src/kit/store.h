/*
 * store.h - the service database: one interface over SQLite (embedded
 * default, store_sqlite.c) and PostgreSQL (store_pg.c).
 *
 * SQL is written once with $1, $2, ... placeholders, which both engines
 * understand. Values are only ever bound, never spliced into SQL. Parameter
 * types come from a format string: 't' text (const char *, NULL binds NULL),
 * 'i' int64_t, 'b' bool (int). Statements are prepared once per connection
 * and cached by their SQL text.
 *
 * A tr_store_t is one connection; it is used by one thread at a time (each
 * SQLite worker opens its own; PostgreSQL connections belong to the
 * threads of the store pool, store_pool.h). Timestamps are stored as RFC 3339 UTC text with
 * milliseconds or as unix milliseconds in integer columns.
 */
#ifndef TR_STORE_H
#define TR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR_STORE_ECONSTRAINT (-8001) /* unique / foreign key / check violated */
#define TR_STORE_EBUSY       (-8002) /* database locked past the busy timeout */
#define TR_STORE_EERROR      (-8003) /* any other engine error (logged) */
/* Serialization failure or deadlock (PostgreSQL 40001 / 40P01): the
 * transaction was aborted and may succeed when run again from the start
 * (tr_store_run does that for TR_STORE_TX jobs, kit/store_job.h). */
#define TR_STORE_ERETRY (-8004)

typedef struct tr_store tr_store_t;
typedef struct tr_rows tr_rows_t;

typedef struct tr_migration {
    int version;        /* schema version this migration brings the database to */
    const char *name;   /* "0001_init": the file name without engine or extension */
    const char *sqlite; /* one or more statements, for SQLite */
    const char *pg;     /* the same change for PostgreSQL (often the same text) */
} tr_migration_t;

/* A service's migrations in version order, generated at build time from
 * src/services/<name>/migrations (cmake/embed_sql.cmake), so the count is
 * never kept by hand. */
typedef struct tr_migrations {
    const tr_migration_t *list;
    size_t count;
} tr_migrations_t;

/* Opens a database by URL: "sqlite:///abs/path.db", "sqlite://relative.db" or
 * a plain path (SQLite, opened with WAL, foreign keys on and a busy
 * timeout); "postgres://user[:password]@host[:port]/dbname[?options]" or
 * "postgresql://..." (any libpq URL). A PostgreSQL database that does not
 * exist is created (through the server's "postgres" database, same
 * credentials) and connected to once more. Returns 0 or a negative code;
 * *out is NULL on failure and tr_store_errmsg(NULL) says why. Never logs
 * (a URL may hold a password). */
int tr_store_open(const char *url, tr_store_t **out);

/* True when url names a database reached over the network (PostgreSQL),
 * whose statements must not run on an event loop (see store_job.h); false
 * for SQLite and for URLs tr_store_open would refuse. */
bool tr_store_url_networked(const char *url);
/* The same for an open connection. */
bool tr_store_networked(const tr_store_t *db);
void tr_store_close(tr_store_t *db);

/* Applies, in one transaction each, the migrations whose version is not yet
 * recorded in schema_migrations, and records them there, using each
 * migration's SQL for db's engine. Versions must be
 * positive and strictly increasing (else -EINVAL); a migration's SQL must not
 * contain BEGIN/COMMIT. Safe to call concurrently from several processes.
 * Returns 0 or a negative code. */
int tr_store_migrate(tr_store_t *db, const tr_migrations_t *migrations);

/* Runs a statement that returns no rows. *changes (may be NULL) receives the
 * number of rows changed. Returns 0, a TR_STORE_E* code, or -EINVAL when
 * types does not match the $N parameters of sql (or a cursor is open). */
int tr_store_exec(tr_store_t *db, int64_t *changes, const char *sql, const char *types, ...);

/* Runs a query. On success *rows is a cursor to step with tr_rows_next and
 * must be released with tr_rows_free (before the next query on this db). */
int tr_store_query(tr_store_t *db, tr_rows_t **rows, const char *sql, const char *types, ...);
/* Advances to the next row: 1 when a row is there, 0 at the end, negative on
 * error. */
int tr_rows_next(tr_rows_t *rows);
/* Column values of the current row; text is valid until the next
 * tr_rows_next/tr_rows_free and is NULL for SQL NULL. */
const char *tr_rows_text(tr_rows_t *rows, int col);
int64_t tr_rows_int(tr_rows_t *rows, int col);
bool tr_rows_is_null(tr_rows_t *rows, int col);
void tr_rows_free(tr_rows_t *rows);
/* Finishes a one-value query: when rc (tr_store_query's result) is 0, reads
 * the integer in the first column of the first row into *out (left
 * untouched when there is no row) and frees rows. Returns rc, or the row
 * error. */
int tr_rows_first_int(int rc, tr_rows_t *rows, int64_t *out);

/* Flags of tr_store_run (store_job.h) and of the job runner. */
#define TR_STORE_TX          0x1u /* run the job inside one transaction */
#define TR_STORE_TX_ATTEMPTS 5    /* runs of a transaction that keeps hitting ERETRY */

/* Transactions (BEGIN IMMEDIATE on SQLite: writers queue up front; plain
 * BEGIN, READ COMMITTED unless the session says otherwise, on PostgreSQL,
 * where row locks are taken with SELECT ... FOR UPDATE).
 * tr_store_rollback also closes an open cursor and is a no-op returning 0
 * when no transaction is open, so cleanup paths may always call it. */
int tr_store_begin(tr_store_t *db);
int tr_store_commit(tr_store_t *db);
int tr_store_rollback(tr_store_t *db);

/* Serialises the transactions that work on the same application key (for
 * example "login:<email>") until the current transaction ends, so a
 * count-then-insert under it cannot be raced by a concurrent one. Call it
 * inside a transaction, before the reads it protects. SQLite: nothing to
 * do (BEGIN IMMEDIATE already makes writers take turns). PostgreSQL: a
 * transaction-scoped advisory lock on a 64-bit hash of key (a collision
 * only makes two keys wait for each other). Returns 0 or a store error. */
int tr_store_lock(tr_store_t *db, const char *key);

/* Cheap liveness check for /readyz: 0 when a trivial query succeeds. */
int tr_store_ping(tr_store_t *db);
/* The engine's last error message, for logs. With db NULL: why the last
 * tr_store_open on this thread failed. */
const char *tr_store_errmsg(tr_store_t *db);

#endif

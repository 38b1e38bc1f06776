/*
 * store_sqlite.c - the SQLite engine behind store.c (see store_engine.h).
 *
 * DESIGN NOTES
 *
 * 1. Connections. One sqlite3 connection per tr_store_t, used by one thread
 *    at a time, so it is opened with SQLITE_OPEN_NOMUTEX (no per-call mutex).
 *    Every connection sets busy_timeout=5000, then journal_mode=WAL (readers
 *    never block the writer; retried by hand while busy, see sqlite_open),
 *    foreign_keys=ON and synchronous=NORMAL (durable in WAL except for the
 *    last transactions before a power cut; commits do not fsync, only
 *    checkpoints do) and, for a WAL file, wal_autocheckpoint=0 (note 6).
 *
 * 2. Parameters. SQL uses $1..$N. SQLite treats "$1" as a *named*
 *    parameter whose index is its order of first appearance, so "$2 ... $1"
 *    gives $2 index 1. We therefore bind by name through
 *    sqlite3_bind_parameter_index(stmt, "$N"), never by position. A
 *    statement is accepted only when it has exactly N distinct parameters
 *    and each of $1..$N is among them; together that rules out missing,
 *    extra or foreign ("?", ":x") parameters, so a mismatch is an error
 *    instead of a silently unbound NULL.
 *
 * 3. Statement cache. Prepared statements are kept per connection, keyed by
 *    their SQL text, in a chained hash table (fixed bucket count) threaded
 *    on an LRU list. At CACHE_MAX entries the least recently used statement
 *    not held by the open cursor is finalized. Statements are prepared with
 *    SQLITE_PREPARE_PERSISTENT (they are meant to live long) and are reset
 *    and their bindings cleared after each use, so an idle cached statement
 *    holds no locks and no caller memory.
 *
 * 4. The cursor lives inside the connection (store.c guarantees at most one
 *    is open). Query parameters are bound SQLITE_TRANSIENT because the
 *    caller's strings may die before the first tr_rows_next; exec binds
 *    SQLITE_STATIC since it finishes before returning.
 *
 * 5. Result codes: SQLITE_CONSTRAINT* -> TR_STORE_ECONSTRAINT,
 *    SQLITE_BUSY* / SQLITE_LOCKED* -> TR_STORE_EBUSY, anything else ->
 *    TR_STORE_EERROR. The message is copied into the store at once, before a
 *    reset can replace it.
 *
 * 6. Writers and checkpoints. A connection to a file attaches to the state
 *    it shares with the process's other connections to that file
 *    (store_sqlite_shared.c): a writer lock, so that in-process writers
 *    queue on a mutex instead of sleeping in SQLite's busy handler, and a
 *    checkpointer thread, so that no commit runs a checkpoint. This file
 *    keeps the invariant the writer lock depends on: a connection holds it
 *    exactly while it has a transaction open or a writing autocommit
 *    statement in progress. writer_enter() runs before anything that may
 *    take SQLite's write lock outside a transaction (BEGIN IMMEDIATE, a
 *    statement that is not read-only or that opens a transaction, a
 *    script); writer_settle() runs after every operation and releases the
 *    lock once the connection is in autocommit mode with no cursor open, so
 *    no error path can leave it held. Inside a transaction nothing is taken:
 *    the transaction already holds it.
 */
#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/store_engine.h"
#include "kit/store_sqlite_shared.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CACHE_MAX       128
#define CACHE_BUCKETS   256 /* power of two, about twice CACHE_MAX */
#define BUSY_TIMEOUT_MS TR__SQLITE_BUSY_TIMEOUT_MS

typedef struct cache_entry {
    char *sql;
    size_t len;
    uint64_t hash;
    sqlite3_stmt *stmt;
    struct cache_entry *chain;         /* next in the same bucket */
    struct cache_entry *newer, *older; /* LRU list */
} cache_entry_t;

typedef enum { ROWS_BEFORE, ROWS_ON_ROW, ROWS_DONE } rows_state_t;

typedef struct sqlite_rows {
    tr_rows_t base; /* first: store.c hands us &base */
    sqlite3_stmt *stmt;
    rows_state_t state;
} sqlite_rows_t;

typedef struct sqlite_store {
    tr_store_t base; /* first: store.c hands us &base */
    sqlite3 *conn;
    cache_entry_t *buckets[CACHE_BUCKETS];
    cache_entry_t *newest, *oldest;
    size_t cached;
    uint64_t hits, misses;
    sqlite_rows_t rows;
    tr__sqlite_shared_t *shared; /* NULL for in-memory databases */
    bool holds_writer;           /* this connection holds shared's writer lock */
} sqlite_store_t;

static sqlite_store_t *from_db(tr_store_t *db)
{
    return (sqlite_store_t *)db;
}

static sqlite_rows_t *from_rows(tr_rows_t *rows)
{
    return (sqlite_rows_t *)rows;
}

static int map_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return TR_STORE_ECONSTRAINT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TR_STORE_EBUSY;
    default:
        return TR_STORE_EERROR;
    }
}

/* Records the connection's current error and returns the mapped code. */
static int fail(sqlite_store_t *s, int rc)
{
    tr__store_set_error(&s->base, "%s", sqlite3_errmsg(s->conn));
    return map_code(rc);
}

/* ---- writer lock (note 6) ------------------------------------------------ */

static int writer_enter(sqlite_store_t *s)
{
    if (!s->shared || s->holds_writer) return 0;
    int rc = tr__sqlite_writer_lock(s->shared);
    if (rc == -EDEADLK) {
        tr__store_set_error(&s->base, "database is locked by another connection of this thread");
        return TR_STORE_EBUSY;
    }
    if (rc != 0) {
        tr__store_set_error(&s->base,
                            "database is locked: another connection of this process kept "
                            "writing for %d ms",
                            BUSY_TIMEOUT_MS);
        return TR_STORE_EBUSY;
    }
    s->holds_writer = true;
    return 0;
}

static void writer_settle(sqlite_store_t *s)
{
    if (s->holds_writer && !s->rows.stmt && sqlite3_get_autocommit(s->conn)) {
        tr__sqlite_writer_unlock(s->shared);
        s->holds_writer = false;
    }
}

/* Whether running stmt now may take SQLite's write lock: it writes, or it
 * opens a transaction (BEGIN and SAVEPOINT count as read-only to SQLite). */
static bool may_write(sqlite_store_t *s, sqlite3_stmt *stmt)
{
    if (!sqlite3_get_autocommit(s->conn)) return false; /* the transaction decided */
    if (!sqlite3_stmt_readonly(stmt)) return true;
    const char *sql = sqlite3_sql(stmt);
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r')
        sql++;
    return strncasecmp(sql, "BEGIN", 5) == 0 || strncasecmp(sql, "SAVEPOINT", 9) == 0;
}

/* ---- statement cache ---------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3u;
    }
    return h;
}

static void lru_unlink(sqlite_store_t *s, cache_entry_t *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push_newest(sqlite_store_t *s, cache_entry_t *e)
{
    e->newer = NULL;
    e->older = s->newest;
    if (s->newest) s->newest->newer = e;
    s->newest = e;
    if (!s->oldest) s->oldest = e;
}

static void entry_destroy(cache_entry_t *e)
{
    sqlite3_finalize(e->stmt);
    free(e->sql);
    free(e);
}

static void cache_evict_one(sqlite_store_t *s)
{
    cache_entry_t *victim = s->oldest;
    while (victim && victim->stmt == s->rows.stmt)
        victim = victim->newer;
    if (!victim) return;
    cache_entry_t **link = &s->buckets[victim->hash & (CACHE_BUCKETS - 1)];
    while (*link != victim)
        link = &(*link)->chain;
    *link = victim->chain;
    lru_unlink(s, victim);
    entry_destroy(victim);
    s->cached--;
}

static bool only_separators(const char *p)
{
    for (; *p; p++)
        if (*p != ';' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return false;
    return true;
}

/* Finds or prepares the statement for sql. The statement stays owned by the
 * cache. */
static int stmt_get(sqlite_store_t *s, const char *sql, sqlite3_stmt **out)
{
    size_t len = strlen(sql);
    uint64_t hash = fnv1a(sql, len);
    cache_entry_t **bucket = &s->buckets[hash & (CACHE_BUCKETS - 1)];
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;

    for (cache_entry_t *e = *bucket; e; e = e->chain) {
        if (e->hash == hash && e->len == len && memcmp(e->sql, sql, len) == 0) {
            lru_unlink(s, e);
            lru_push_newest(s, e);
            s->hits++;
            *out = e->stmt;
            return 0;
        }
    }
    s->misses++;
    if (len >= (size_t)INT32_MAX) {
        tr__store_set_error(&s->base, "statement too long");
        return -EINVAL;
    }
    int rc =
        sqlite3_prepare_v3(s->conn, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK) return fail(s, rc);
    if (!stmt) {
        tr__store_set_error(&s->base, "empty statement");
        return -EINVAL;
    }
    if (tail && !only_separators(tail)) {
        /* Whatever follows must compile to nothing (comments). */
        sqlite3_stmt *next = NULL;
        rc = sqlite3_prepare_v3(s->conn, tail, -1, 0, &next, NULL);
        sqlite3_finalize(next);
        if (rc != SQLITE_OK || next) {
            sqlite3_finalize(stmt);
            tr__store_set_error(&s->base, "more than one statement (only migrations may do that)");
            return -EINVAL;
        }
    }
    if (s->cached >= CACHE_MAX) cache_evict_one(s);
    cache_entry_t *e = tr_xcalloc(1, sizeof(*e));
    e->sql = tr_xstrndup(sql, len);
    e->len = len;
    e->hash = hash;
    e->stmt = stmt;
    e->chain = *bucket;
    *bucket = e;
    lru_push_newest(s, e);
    s->cached++;
    *out = stmt;
    return 0;
}

static void cache_clear(sqlite_store_t *s)
{
    cache_entry_t *e = s->newest;
    while (e) {
        cache_entry_t *next = e->older;
        entry_destroy(e);
        e = next;
    }
    memset(s->buckets, 0, sizeof(s->buckets));
    s->newest = s->oldest = NULL;
    s->cached = 0;
}

int tr__store_sqlite_wal_stats(tr_store_t *db, tr__store_wal_stats_t *out)
{
    if (db->engine != &tr__store_sqlite_engine || !from_db(db)->shared) return -EINVAL;
    tr__sqlite_shared_stats(from_db(db)->shared, &out->checkpoints, &out->restarts,
                            &out->wal_frames);
    return 0;
}

int tr__store_sqlite_cache_stats(tr_store_t *db, size_t *entries, uint64_t *hits, uint64_t *misses)
{
    if (db->engine != &tr__store_sqlite_engine) return -EINVAL;
    sqlite_store_t *s = from_db(db);
    *entries = s->cached;
    *hits = s->hits;
    *misses = s->misses;
    return 0;
}

/* ---- binding ------------------------------------------------------------ */

static int bind_params(sqlite_store_t *s, sqlite3_stmt *stmt, const tr__store_param_t *params,
                       size_t nparams, sqlite3_destructor_type lifetime)
{
    int declared = sqlite3_bind_parameter_count(stmt);
    char name[24];

    if ((size_t)declared != nparams) {
        tr__store_set_error(&s->base, "statement has %d parameters but %zu were given", declared,
                            nparams);
        return -EINVAL;
    }
    for (size_t i = 0; i < nparams; i++) {
        snprintf(name, sizeof(name), "$%zu", i + 1);
        int idx = sqlite3_bind_parameter_index(stmt, name);
        if (idx == 0) {
            tr__store_set_error(&s->base, "parameter %s is given but not used in the statement",
                                name);
            return -EINVAL;
        }
        int rc;
        if (params[i].type == 't')
            rc = params[i].text ? sqlite3_bind_text(stmt, idx, params[i].text, -1, lifetime)
                                : sqlite3_bind_null(stmt, idx);
        else
            rc = sqlite3_bind_int64(stmt, idx, params[i].num);
        if (rc != SQLITE_OK) return fail(s, rc);
    }
    return 0;
}

static void stmt_release(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

/* ---- engine operations -------------------------------------------------- */

static int run(sqlite_store_t *s, int64_t *changes, const char *sql,
               const tr__store_param_t *params, size_t nparams)
{
    sqlite3_stmt *stmt = NULL;
    int rc = stmt_get(s, sql, &stmt);
    if (rc != 0) goto out;
    if ((rc = bind_params(s, stmt, params, nparams, SQLITE_STATIC)) != 0) goto out;
    if (may_write(s, stmt) && (rc = writer_enter(s)) != 0) goto out;

    /* changes() keeps the last DML's count across DDL and SELECT, so only
     * trust it when this statement moved the total. */
    sqlite3_int64 before = sqlite3_total_changes64(s->conn);
    int step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    if (step != SQLITE_DONE) {
        rc = fail(s, step);
        goto out;
    }
    if (changes)
        *changes = sqlite3_total_changes64(s->conn) == before ? 0 : sqlite3_changes64(s->conn);

out:
    if (stmt) stmt_release(stmt);
    /* Every exit: BEGIN and COMMIT come through here too. */
    writer_settle(s);
    return rc;
}

static int sqlite_exec(tr_store_t *db, int64_t *changes, const char *sql,
                       const tr__store_param_t *params, size_t nparams)
{
    return run(from_db(db), changes, sql, params, nparams);
}

static int sqlite_query(tr_store_t *db, tr_rows_t **rows, const char *sql,
                        const tr__store_param_t *params, size_t nparams)
{
    sqlite_store_t *s = from_db(db);
    sqlite3_stmt *stmt = NULL;
    int rc = stmt_get(s, sql, &stmt);
    if (rc != 0) return rc;
    if ((rc = bind_params(s, stmt, params, nparams, SQLITE_TRANSIENT)) != 0 ||
        (may_write(s, stmt) && (rc = writer_enter(s)) != 0)) {
        stmt_release(stmt);
        return rc;
    }
    /* A writing cursor keeps the writer lock until tr_rows_free. */
    s->rows.stmt = stmt;
    s->rows.state = ROWS_BEFORE;
    *rows = &s->rows.base;
    return 0;
}

static int sqlite_rows_next(tr_rows_t *rows)
{
    sqlite_rows_t *r = from_rows(rows);
    if (r->state == ROWS_DONE) return 0;
    int step = sqlite3_step(r->stmt);
    if (step == SQLITE_ROW) {
        r->state = ROWS_ON_ROW;
        return 1;
    }
    r->state = ROWS_DONE;
    return step == SQLITE_DONE ? 0 : fail(from_db(rows->db), step);
}

static bool valid_column(sqlite_rows_t *r, int col)
{
    return r->state == ROWS_ON_ROW && col >= 0 && col < sqlite3_data_count(r->stmt);
}

static const char *sqlite_rows_text(tr_rows_t *rows, int col)
{
    sqlite_rows_t *r = from_rows(rows);
    return valid_column(r, col) ? (const char *)sqlite3_column_text(r->stmt, col) : NULL;
}

static int64_t sqlite_rows_int(tr_rows_t *rows, int col)
{
    sqlite_rows_t *r = from_rows(rows);
    return valid_column(r, col) ? sqlite3_column_int64(r->stmt, col) : 0;
}

static bool sqlite_rows_is_null(tr_rows_t *rows, int col)
{
    sqlite_rows_t *r = from_rows(rows);
    return !valid_column(r, col) || sqlite3_column_type(r->stmt, col) == SQLITE_NULL;
}

static void sqlite_rows_free(tr_rows_t *rows)
{
    sqlite_rows_t *r = from_rows(rows);
    if (r->stmt) stmt_release(r->stmt);
    r->stmt = NULL;
    r->state = ROWS_DONE;
    writer_settle(from_db(rows->db));
}

static int sqlite_exec_script(tr_store_t *db, const char *sql)
{
    sqlite_store_t *s = from_db(db);
    char *msg = NULL;
    /* Outside a transaction any of the statements may write. */
    int rc = sqlite3_get_autocommit(s->conn) ? writer_enter(s) : 0;
    if (rc != 0) return rc;
    rc = sqlite3_exec(s->conn, sql, NULL, NULL, &msg);
    writer_settle(s);
    if (rc == SQLITE_OK) return 0;
    tr__store_set_error(db, "%s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return map_code(rc);
}

static int sqlite_begin(tr_store_t *db)
{
    /* IMMEDIATE takes the write lock now (waiting up to the busy timeout),
     * so a transaction never fails later trying to upgrade a stale read
     * snapshot (SQLITE_BUSY_SNAPSHOT). Our writer lock first, so that
     * within the process it is the one waited for (run settles it). */
    sqlite_store_t *s = from_db(db);
    int rc = writer_enter(s);
    return rc != 0 ? rc : run(s, NULL, "BEGIN IMMEDIATE", NULL, 0);
}

static int sqlite_commit(tr_store_t *db)
{
    return run(from_db(db), NULL, "COMMIT", NULL, 0);
}

static int sqlite_rollback(tr_store_t *db)
{
    sqlite_store_t *s = from_db(db);
    /* SQLite rolls back by itself after some errors (SQLITE_FULL, IOERR...);
     * a cleanup path's rollback must then still succeed. */
    if (sqlite3_get_autocommit(s->conn)) {
        writer_settle(s);
        return 0;
    }
    return run(s, NULL, "ROLLBACK", NULL, 0);
}

static int journal_mode_cb(void *arg, int ncols, char **values, char **names)
{
    (void)names;
    if (ncols > 0 && values[0]) snprintf(arg, 16, "%s", values[0]);
    return 0;
}

static int sqlite_open(const char *target, tr_store_t **out, char *err, size_t errlen)
{
    sqlite_store_t *s = tr_xcalloc(1, sizeof(*s));
    char mode[16] = "";
    char *msg = NULL;
    int rc;

    s->base.engine = &tr__store_sqlite_engine;
    s->rows.base.db = &s->base;
    s->rows.state = ROWS_DONE;
    rc = sqlite3_open_v2(target, &s->conn,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", target,
                 s->conn ? sqlite3_errmsg(s->conn) : sqlite3_errstr(rc));
        rc = map_code(rc);
        goto out;
    }
    sqlite3_extended_result_codes(s->conn, 1);
    sqlite3_busy_timeout(s->conn, BUSY_TIMEOUT_MS);
    /* Switching to WAL needs an exclusive lock, and SQLite answers BUSY at
     * once, without the busy handler, when another connection is opening
     * the same new file (it would deadlock otherwise). Retry for as long as
     * the busy timeout would have waited. */
    for (int waited = 0, pause = 1;; waited += pause, pause = pause < 64 ? pause * 2 : 64) {
        sqlite3_free(msg);
        msg = NULL;
        rc = sqlite3_exec(s->conn, "PRAGMA journal_mode=WAL", journal_mode_cb, mode, &msg);
        if (map_code(rc) != TR_STORE_EBUSY || waited >= BUSY_TIMEOUT_MS) break;
        sqlite3_sleep(pause);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->conn, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL", NULL, NULL,
                          &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up %s: %s", target, msg ? msg : sqlite3_errstr(rc));
        rc = map_code(rc);
        goto out;
    }
    /* In-memory databases report "memory"; anything else means the file
     * system refused WAL and we run with rollback journals. */
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)
        tr_log_warn("database %s: WAL unavailable, journal_mode is %s", target, mode);
    if ((rc = tr__sqlite_shared_attach(s->conn, strcmp(mode, "wal") == 0, &s->shared, err,
                                       errlen)) != 0)
        goto out;
    *out = &s->base;
    s = NULL;

out:
    sqlite3_free(msg);
    if (s) {
        sqlite3_close_v2(s->conn);
        free(s);
    }
    return rc;
}

static void sqlite_close(tr_store_t *db)
{
    sqlite_store_t *s = from_db(db);
    cache_clear(s);
    /* close_v2 would defer rather than fail if anything were left open.
     * Closing inside a transaction rolls it back, and only then may the
     * next writer of this process go. */
    sqlite3_close_v2(s->conn);
    if (s->holds_writer) tr__sqlite_writer_unlock(s->shared);
    tr__sqlite_shared_detach(s->shared);
    free(s);
}

const struct tr_store_engine tr__store_sqlite_engine = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .exec_script = sqlite_exec_script,
    .exec = sqlite_exec,
    .query = sqlite_query,
    .rows_next = sqlite_rows_next,
    .rows_text = sqlite_rows_text,
    .rows_int = sqlite_rows_int,
    .rows_is_null = sqlite_rows_is_null,
    .rows_free = sqlite_rows_free,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
};

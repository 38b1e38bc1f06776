/*
 * store.c - the engine-independent front of the store (see store.h).
 *
 * DESIGN NOTES
 *
 * 1. Engines. A URL's scheme picks a struct tr_store_engine (store_engine.h);
 *    everything else about the engine is hidden behind that table, so adding
 *    PostgreSQL took one new file (store_pg.c) and one line in `engines`
 *    below, and no service changes. A URL without a scheme is a SQLite file path.
 *
 * 2. Parameters. The "t/i/b" format and its varargs are decoded here, once,
 *    into an array of tr__store_param_t, so engines never touch va_list and
 *    an unknown type letter is caught before any engine work. Whether the
 *    count matches the SQL's $N parameters is the engine's check (only it
 *    can parse the SQL).
 *
 * 3. One cursor per connection. store.h requires tr_rows_free before the
 *    next statement; we enforce it (-EINVAL) instead of letting an engine
 *    reuse a statement under a live cursor. tr_store_rollback is the one
 *    exception: it closes an open cursor itself, because it is what error
 *    paths call and it must always get the connection back to a clean state.
 *
 * 4. Errors. Engines record a message and return TR_STORE_E*; this file
 *    logs the unexpected ones (TR_STORE_EERROR and misuse) once, with the SQL
 *    text. SQL never contains values (they are always bound), so logging it
 *    leaks nothing. Constraint violations are expected outcomes and are not
 *    logged. tr_store_open never logs: a URL may carry a password. The reason
 *    an open failed is kept per thread for tr_store_errmsg(NULL).
 *
 * 5. Migrations. Each migration runs in its own transaction that first
 *    takes the engine's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL:
 *    BEGIN plus a transaction-scoped advisory lock) and then re-checks
 *    schema_migrations: the lock is taken before the check, so when several processes start at once
 * exactly one applies a version and the others see it recorded and skip it. A cheap check outside
 * any transaction skips already-applied versions without taking the write lock on every start.
 */
#include "kit/store.h"
#include "kit/alloc.h"
#include "kit/ids.h"
#include "kit/log.h"
#include "kit/store_engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define STACK_PARAMS 16

static _Thread_local char open_error[256];

static const struct {
    const char *scheme;
    const struct tr_store_engine *engine; /* NULL: known but not built in */
} engines[] = {
    {"sqlite", &tr__store_sqlite_engine},
    {"postgres", &tr__store_pg_engine},
    {"postgresql", &tr__store_pg_engine},
};

void tr__store_set_error(tr_store_t *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
    va_end(ap);
}

/* Logs the failures nobody expects; returns rc unchanged. */
static int report(tr_store_t *db, int rc, const char *sql)
{
    tr_log_level_t level;
    if (rc == TR_STORE_EERROR || rc == -EINVAL)
        level = TR_LOG_ERROR;
    else if (rc == TR_STORE_EBUSY)
        level = TR_LOG_WARN;
    else
        return rc;
    json_t *fields = json_object();
    json_object_set_new(fields, "error", json_string(db->errmsg));
    if (sql) json_object_set_new(fields, "sql", json_string(sql));
    tr_log_json(level, "database error", fields);
    return rc;
}

static int check_idle(tr_store_t *db, const char *sql)
{
    if (!db->open_rows) return 0;
    tr__store_set_error(db, "statement run while a cursor is open (call tr_rows_free first)");
    return report(db, -EINVAL, sql);
}

/* A scheme is letters, digits, '+', '-' or '.', starting with a letter
 * (RFC 3986 §3.1); anything else before "://" makes the string a path. */
static bool is_scheme(const char *s, size_t len)
{
    if (len == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static int parse_url(const char *url, const struct tr_store_engine **engine, const char **target)
{
    const char *sep = url ? strstr(url, "://") : NULL;
    if (!url || !*url) {
        snprintf(open_error, sizeof(open_error), "empty database URL");
        return -EINVAL;
    }
    if (!sep || !is_scheme(url, (size_t)(sep - url))) {
        *engine = &tr__store_sqlite_engine;
        *target = url;
        return 0;
    }
    size_t len = (size_t)(sep - url);
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        if (strlen(engines[i].scheme) != len || strncasecmp(url, engines[i].scheme, len) != 0)
            continue;
        if (!engines[i].engine) {
            snprintf(open_error, sizeof(open_error),
                     "%.*s databases are not supported by this build; use a sqlite:// URL",
                     (int)len, url);
            return -ENOTSUP;
        }
        *engine = engines[i].engine;
        *target = sep + 3;
        if (!**target) {
            snprintf(open_error, sizeof(open_error), "database URL has no path");
            return -EINVAL;
        }
        return 0;
    }
    /* Only the scheme is echoed: the rest of a URL may hold credentials. */
    snprintf(open_error, sizeof(open_error), "unsupported database URL scheme \"%.*s\"",
             (int)(len > 32 ? 32 : len), url);
    return -EINVAL;
}

int tr_store_open(const char *url, tr_store_t **out)
{
    const struct tr_store_engine *engine = NULL;
    const char *target = NULL;
    int rc;

    *out = NULL;
    open_error[0] = '\0';
    if ((rc = parse_url(url, &engine, &target)) != 0) return rc;
    if ((rc = engine->open(target, out, open_error, sizeof(open_error))) != 0) {
        *out = NULL;
        return rc;
    }
    (*out)->engine = engine;
    (*out)->open_rows = NULL;
    (*out)->errmsg[0] = '\0';
    return 0;
}

bool tr_store_url_networked(const char *url)
{
    const struct tr_store_engine *engine = NULL;
    const char *target = NULL;
    char saved[sizeof(open_error)];
    memcpy(saved, open_error, sizeof(saved));
    bool networked = parse_url(url, &engine, &target) == 0 && engine->networked;
    memcpy(open_error, saved, sizeof(saved));
    return networked;
}

bool tr_store_networked(const tr_store_t *db)
{
    return db->engine->networked;
}

void tr_store_close(tr_store_t *db)
{
    if (db) db->engine->close(db);
}

/* Decodes types + varargs into params (stack storage when it fits, else
 * *heap, which the caller frees). */
static int decode_params(tr_store_t *db, const char *types, va_list ap, tr__store_param_t *stack,
                         tr__store_param_t **params, size_t *nparams, tr__store_param_t **heap)
{
    size_t n = types ? strlen(types) : 0;
    *heap = NULL;
    *nparams = 0;
    if (n > TR__STORE_MAX_PARAMS) {
        tr__store_set_error(db, "too many parameters (%zu, at most %d)", n, TR__STORE_MAX_PARAMS);
        return -EINVAL;
    }
    tr__store_param_t *p = stack;
    if (n > STACK_PARAMS) p = *heap = tr_xmalloc(n * sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        p[i].type = types[i];
        p[i].text = NULL;
        p[i].num = 0;
        switch (types[i]) {
        case 't':
            p[i].text = va_arg(ap, const char *);
            break;
        case 'i':
            p[i].num = va_arg(ap, int64_t);
            break;
        case 'b':
            p[i].num = va_arg(ap, int) != 0;
            break;
        default:
            tr__store_set_error(db, "unknown parameter type '%c' for $%zu", types[i], i + 1);
            return -EINVAL;
        }
    }
    *params = p;
    *nparams = n;
    return 0;
}

static int run_exec(tr_store_t *db, int64_t *changes, const char *sql,
                    const tr__store_param_t *params, size_t nparams)
{
    int rc = check_idle(db, sql);
    if (rc == 0) rc = db->engine->exec(db, changes, sql, params, nparams);
    return report(db, rc, sql);
}

static int run_query(tr_store_t *db, tr_rows_t **rows, const char *sql,
                     const tr__store_param_t *params, size_t nparams)
{
    int rc = check_idle(db, sql);
    if (rc == 0) rc = db->engine->query(db, rows, sql, params, nparams);
    if (rc == 0) db->open_rows = *rows;
    return report(db, rc, sql);
}

int tr_store_exec(tr_store_t *db, int64_t *changes, const char *sql, const char *types, ...)
{
    tr__store_param_t stack[STACK_PARAMS], *params = NULL, *heap = NULL;
    size_t nparams = 0;
    va_list ap;

    if (changes) *changes = 0;
    va_start(ap, types);
    int rc = decode_params(db, types, ap, stack, &params, &nparams, &heap);
    va_end(ap);
    if (rc != 0)
        rc = report(db, rc, sql);
    else
        rc = run_exec(db, changes, sql, params, nparams);
    free(heap);
    return rc;
}

int tr_store_query(tr_store_t *db, tr_rows_t **rows, const char *sql, const char *types, ...)
{
    tr__store_param_t stack[STACK_PARAMS], *params = NULL, *heap = NULL;
    size_t nparams = 0;
    va_list ap;

    *rows = NULL;
    va_start(ap, types);
    int rc = decode_params(db, types, ap, stack, &params, &nparams, &heap);
    va_end(ap);
    if (rc != 0)
        rc = report(db, rc, sql);
    else
        rc = run_query(db, rows, sql, params, nparams);
    free(heap);
    return rc;
}

int tr_rows_next(tr_rows_t *rows)
{
    tr_store_t *db = rows->db;
    if (db->open_rows != rows) {
        tr__store_set_error(db, "tr_rows_next on a cursor that was already freed");
        return report(db, -EINVAL, NULL);
    }
    int rc = db->engine->rows_next(rows);
    return rc < 0 ? report(db, rc, NULL) : rc;
}

const char *tr_rows_text(tr_rows_t *rows, int col)
{
    return rows->db->open_rows == rows ? rows->db->engine->rows_text(rows, col) : NULL;
}

int64_t tr_rows_int(tr_rows_t *rows, int col)
{
    return rows->db->open_rows == rows ? rows->db->engine->rows_int(rows, col) : 0;
}

bool tr_rows_is_null(tr_rows_t *rows, int col)
{
    return rows->db->open_rows == rows ? rows->db->engine->rows_is_null(rows, col) : true;
}

void tr_rows_free(tr_rows_t *rows)
{
    if (!rows || rows->db->open_rows != rows) return;
    rows->db->engine->rows_free(rows);
    rows->db->open_rows = NULL;
}

int tr_store_begin(tr_store_t *db)
{
    int rc = check_idle(db, "BEGIN");
    if (rc == 0) rc = db->engine->begin(db);
    return report(db, rc, "BEGIN");
}

int tr_store_commit(tr_store_t *db)
{
    int rc = check_idle(db, "COMMIT");
    if (rc == 0) rc = db->engine->commit(db);
    return report(db, rc, "COMMIT");
}

int tr_store_rollback(tr_store_t *db)
{
    tr_rows_free(db->open_rows);
    return report(db, db->engine->rollback(db), "ROLLBACK");
}

int tr_store_ping(tr_store_t *db)
{
    tr_rows_t *rows = NULL;
    int rc = run_query(db, &rows, "SELECT 1", NULL, 0);
    if (rc != 0) return rc;
    rc = tr_rows_next(rows);
    if (rc == 1)
        rc = tr_rows_int(rows, 0) == 1 ? 0 : TR_STORE_EERROR;
    else if (rc == 0)
        rc = TR_STORE_EERROR;
    tr_rows_free(rows);
    return rc;
}

const char *tr_store_errmsg(tr_store_t *db)
{
    return db ? db->errmsg : open_error;
}

int tr__store_job_execute(tr_store_t *db, unsigned flags, tr_store_job_fn job, void *ctx)
{
    if (!(flags & TR_STORE_TX)) return job(db, ctx);
    int rc = TR_STORE_ERETRY;
    for (int attempt = 0; attempt < TR_STORE_TX_ATTEMPTS && rc == TR_STORE_ERETRY; attempt++) {
        if ((rc = tr_store_begin(db)) != 0) break;
        rc = job(db, ctx);
        if (rc == 0) rc = tr_store_commit(db);
        if (rc != 0) tr_store_rollback(db);
    }
    return rc;
}

int tr_store_lock(tr_store_t *db, const char *key)
{
    const char *sql = db->engine->lock_key_sql;
    tr_rows_t *rows = NULL;
    if (!sql) return 0;
    int rc = tr_store_query(db, &rows, sql, "t", key);
    if (rc != 0) return rc;
    rc = tr_rows_next(rows);
    tr_rows_free(rows);
    return rc < 0 ? rc : 0;
}

/* ---- migrations --------------------------------------------------------- */

/* The migration's SQL for db's engine. */
static const char *migration_sql(const tr_store_t *db, const tr_migration_t *m)
{
    return strcmp(db->engine->name, "postgres") == 0 ? m->pg : m->sqlite;
}

static int check_migrations(tr_store_t *db, const tr_migration_t *m, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (!m[i].name || !migration_sql(db, &m[i]) || m[i].version <= 0) {
            tr__store_set_error(db,
                                "migration #%zu has no name, no SQL for %s or a version below 1", i,
                                db->engine->name);
            return -EINVAL;
        }
        if (i > 0 && m[i].version <= m[i - 1].version) {
            tr__store_set_error(db, "migration %s (version %d) is not above %s (version %d)",
                                m[i].name, m[i].version, m[i - 1].name, m[i - 1].version);
            return -EINVAL;
        }
    }
    return 0;
}

/* Rolls back after a failure, keeping the failure's message, not the
 * rollback's. */
static void rollback_keep_error(tr_store_t *db)
{
    char saved[sizeof(db->errmsg)];
    memcpy(saved, db->errmsg, sizeof(saved));
    tr_store_rollback(db);
    memcpy(db->errmsg, saved, sizeof(saved));
}

/* BEGIN, then the engine's migration lock where BEGIN alone does not
 * serialize migrating processes (PostgreSQL). */
static int begin_migration(tr_store_t *db)
{
    int rc = tr_store_begin(db);
    if (rc != 0 || !db->engine->lock_migrations) return rc;
    if ((rc = db->engine->lock_migrations(db)) != 0) {
        report(db, rc, "migration lock");
        rollback_keep_error(db);
    }
    return rc;
}

static int is_applied(tr_store_t *db, int version, bool *applied)
{
    tr_rows_t *rows = NULL;
    int rc = tr_store_query(db, &rows, "SELECT 1 FROM schema_migrations WHERE version = $1", "i",
                            (int64_t)version);
    if (rc != 0) return rc;
    rc = tr_rows_next(rows);
    tr_rows_free(rows);
    if (rc < 0) return rc;
    *applied = rc == 1;
    return 0;
}

static int apply_one(tr_store_t *db, const tr_migration_t *m)
{
    char now[32];
    bool applied = false;
    int rc;

    if ((rc = is_applied(db, m->version, &applied)) != 0 || applied) return rc;
    if ((rc = begin_migration(db)) != 0) return rc;
    /* Re-checked under the write lock: another process may have won. */
    if ((rc = is_applied(db, m->version, &applied)) != 0) goto out;
    if (applied) goto out;
    if ((rc = db->engine->exec_script(db, migration_sql(db, m))) != 0) {
        json_t *fields = json_object();
        json_object_set_new(fields, "migration", json_string(m->name));
        json_object_set_new(fields, "version", json_integer(m->version));
        json_object_set_new(fields, "error", json_string(db->errmsg));
        tr_log_json(TR_LOG_ERROR, "migration failed", fields);
        goto out;
    }
    tr_time_format(tr_now_ms(), now);
    rc = tr_store_exec(
        db, NULL, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        "itt", (int64_t)m->version, m->name, now);
    if (rc != 0) goto out;
    if ((rc = tr_store_commit(db)) != 0) goto out;
    json_t *fields = json_object();
    json_object_set_new(fields, "migration", json_string(m->name));
    json_object_set_new(fields, "version", json_integer(m->version));
    tr_log_json(TR_LOG_INFO, "migration applied", fields);
    return 0;

out:
    rollback_keep_error(db);
    return rc;
}

int tr_store_migrate(tr_store_t *db, const tr_migrations_t *set)
{
    const tr_migration_t *migrations = set->list;
    size_t count = set->count;
    int rc;

    if ((rc = check_idle(db, NULL)) != 0) return rc;
    if ((rc = check_migrations(db, migrations, count)) != 0) return report(db, rc, NULL);

    /* In a write transaction, so concurrent starters queue on the lock rather
     * than race to create the table. */
    if ((rc = begin_migration(db)) != 0) return rc;
    rc = db->engine->exec_script(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                     " version BIGINT PRIMARY KEY,"
                                     " name TEXT NOT NULL,"
                                     " applied_at TEXT NOT NULL)");
    if (rc != 0)
        report(db, rc, "CREATE TABLE schema_migrations");
    else
        rc = tr_store_commit(db);
    if (rc != 0) {
        rollback_keep_error(db);
        return rc;
    }

    for (size_t i = 0; i < count; i++)
        if ((rc = apply_one(db, &migrations[i])) != 0) return rc;
    return 0;
}

int tr_rows_first_int(int rc, tr_rows_t *rows, int64_t *out)
{
    if (rc != 0) return rc;
    if ((rc = tr_rows_next(rows)) == 1) {
        *out = tr_rows_int(rows, 0);
        rc = 0;
    }
    tr_rows_free(rows);
    return rc;
}

/*
 * store_pg.c - the PostgreSQL engine behind store.c (see store_engine.h),
 * through libpq. Selected by postgres:// and postgresql:// URLs.
 *
 * DESIGN NOTES
 *
 * 1. Connections. One PGconn per tr_store_t, blocking calls, used by one
 *    thread at a time: on a service these are the threads of the store pool
 *    (store_pool.c), never an event loop. Notices (e.g. "relation already
 *    exists, skipping") are dropped instead of going to stderr.
 *
 * 2. Parameters are always bound (extended protocol, text format): 'i' as
 *    int8, 't' as text (NULL -> SQL NULL), 'b' as "0"/"1" of unspecified
 *    type, so the server reads it as the column's type: an INTEGER 0/1
 *    column (how auth stores flags) and a BOOLEAN one both work. The SQL is
 *    scanned for $N (outside quotes and comments) and must use exactly
 *    $1..$nparams, the same contract the SQLite engine enforces.
 *
 * 3. Statement cache. Prepared statements ("tr_<n>") are kept per
 *    connection, keyed by SQL text and parameter types, at most CACHE_MAX;
 *    the least recently used one is DEALLOCATEd to make room (not inside a
 *    failed transaction, where the server refuses; it is then just
 *    forgotten and the server frees it with the session). A lost connection
 *    loses its statements, so the cache is emptied on reconnect.
 *
 * 4. Results are fetched whole (PQexecPrepared); a cursor walks the PGresult
 *    and its text stays valid until tr_rows_next/tr_rows_free as store.h
 *    requires (longer, in fact). Integer columns are parsed from text;
 *    booleans read as 1/0.
 *
 * 5. Errors map by SQLSTATE: class 23 (integrity) -> TR_STORE_ECONSTRAINT;
 *    40001 serialization_failure and 40P01 deadlock_detected ->
 *    TR_STORE_ERETRY (the transaction is aborted and may succeed run again);
 *    55P03 lock_not_available, 57014 query_canceled (statement timeout),
 *    class 08 and 57P0x (connection lost, server shutting down), class 53
 *    (too many connections) and a connection that went bad ->
 *    TR_STORE_EBUSY ("try again"); anything else TR_STORE_EERROR with the
 *    server's message. COMMIT of a transaction that had already failed is
 *    turned into a rollback by the server without an error; we report it as
 *    TR_STORE_EERROR so nobody believes it committed.
 *
 * 6. Reconnecting. Before each statement outside a transaction we look at
 *    the socket without blocking (PQconsumeInput): a backend that was
 *    terminated has sent its FATAL and closed, so the connection is seen to
 *    be bad and is reset before the statement is sent, and the caller never
 *    notices. A connection found lost while preparing a statement (which
 *    changes nothing) outside a transaction is reset and the statement
 *    prepared again, once. A connection that breaks while a statement runs
 *    fails that statement with TR_STORE_EBUSY (its outcome is unknown, so
 *    it is not retried here) and is reset on its next use.
 *
 * 7. A missing database (the server answers 3D000 at connect time, which
 *    libpq does not expose as a SQLSTATE) is detected by asking the
 *    "postgres" maintenance database, with the same credentials, whether it
 *    exists; if not, it is created (the name quoted with
 *    PQescapeIdentifier) and the connection is tried once more. Two
 *    processes racing to create it are both fine (42P04 duplicate_database
 *    or a unique violation means the other one won).
 *
 * 8. Migrations take a transaction-scoped advisory lock
 *    (pg_advisory_xact_lock) after BEGIN, so processes starting at once
 *    apply them one at a time (SQLite gets the same from BEGIN IMMEDIATE).
 *
 * No message here ever holds the URL: it may hold a password.
 */
#include "kit/alloc.h"
#include "kit/store_engine.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_MAX 128
#define OID_BOOL  16
#define OID_INT8  20
#define OID_TEXT  25
/* Key of the migrations' advisory lock: "trellis" in ASCII. */
#define MIGRATION_LOCK_KEY "32760384301206899"

typedef struct cache_entry {
    char *sql;
    char *types; /* the parameters' type letters */
    uint64_t hash;
    char name[24];
    uint64_t last_used;
} cache_entry_t;

typedef struct pg_rows {
    tr_rows_t base; /* first: store.c hands us &base */
    PGresult *res;
    int row;  /* current row, -1 before the first */
    int nrow; /* rows in res */
} pg_rows_t;

typedef struct pg_store {
    tr_store_t base; /* first: store.c hands us &base */
    PGconn *conn;
    char *conninfo; /* the URL, for reconnecting; never printed */
    cache_entry_t *cache[CACHE_MAX];
    size_t cached;
    uint64_t clock;   /* LRU tick */
    unsigned next_id; /* for statement names */
    pg_rows_t rows;
} pg_store_t;

static pg_store_t *from_db(tr_store_t *db)
{
    return (pg_store_t *)db;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* ---- errors ------------------------------------------------------------- */

static int map_sqlstate(const char *state)
{
    if (!state || strlen(state) != 5) return TR_STORE_EERROR;
    if (strncmp(state, "23", 2) == 0) return TR_STORE_ECONSTRAINT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) return TR_STORE_ERETRY;
    if (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0 ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0 ||
        strncmp(state, "53", 2) == 0)
        return TR_STORE_EBUSY;
    return TR_STORE_EERROR;
}

/* Copies a libpq message without its trailing newline. */
static void set_pq_error(pg_store_t *s, const char *msg)
{
    size_t len = msg ? strlen(msg) : 0;
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    tr__store_set_error(&s->base, "%.*s", (int)len, msg ? msg : "");
}

/* Records res's error (or the connection's) and returns the mapped code. */
static int fail_result(pg_store_t *s, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg)
        tr__store_set_error(&s->base, "%s%s%s", msg, state ? " SQLSTATE " : "", state ? state : "");
    else
        set_pq_error(s, PQerrorMessage(s->conn));
    if (PQstatus(s->conn) == CONNECTION_BAD) return TR_STORE_EBUSY;
    return map_sqlstate(state);
}

/* ---- connecting (notes 6 and 7) ------------------------------------------ */

/* Connects to conninfo, or to its server's "postgres" database when
 * maintenance is set (a later "dbname" overrides the one in the URL). The
 * defaults before the URL (a connect timeout, so an unreachable host fails
 * a start instead of hanging it; the application name) yield to the URL's
 * own values. */
static PGconn *connect_to(const char *conninfo, bool maintenance)
{
    const char *keys[] = {"connect_timeout", "application_name", "dbname",
                          maintenance ? "dbname" : NULL, NULL};
    const char *vals[] = {"10", "trellis", conninfo, "postgres", NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* The database name conninfo asks for (malloc'ed), or NULL when it names
 * none (libpq then uses the user name, which we do not try to create). */
static char *database_name(const char *conninfo)
{
    char *err = NULL;
    char *name = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        PQfreemem(err);
        return NULL;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val && *o->val) name = tr_xstrdup(o->val);
    PQconninfoFree(opts);
    return name;
}

/* Creates conninfo's database when the server says it does not exist.
 * Returns 1 when it exists now (created here, or by another process in the
 * meantime: connect again), 0 when it cannot be named or the server cannot
 * be reached (report the original failure), negative on failure (err
 * filled). Processes that start together race here: CREATE DATABASE while
 * another one copies the template fails with 55006, and is tried again. */
#define CREATE_ATTEMPTS 20
#define CREATE_RETRY_US 20000

static int create_database(const char *conninfo, char *err, size_t errlen)
{
    char *name = database_name(conninfo);
    PGconn *admin = NULL;
    PGresult *res = NULL;
    char *quoted = NULL, *sql = NULL;
    int rc = 0;

    if (!name) goto out;
    admin = connect_to(conninfo, true);
    if (PQstatus(admin) != CONNECTION_OK) goto out; /* report the original failure */
    PQsetNoticeProcessor(admin, ignore_notice, NULL);
    const char *params[] = {name};
    res = PQexecParams(admin, "SELECT 1 FROM pg_database WHERE datname = $1", 1, NULL, params, NULL,
                       NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) goto out;
    if (PQntuples(res) > 0) {
        rc = 1; /* created since our connection attempt */
        goto out;
    }
    PQclear(res);
    res = NULL;
    quoted = PQescapeIdentifier(admin, name, strlen(name));
    if (!quoted) {
        snprintf(err, errlen, "cannot quote the database name");
        rc = -EINVAL;
        goto out;
    }
    sql = tr_xasprintf("CREATE DATABASE %s", quoted);
    for (int attempt = 0;; attempt++) {
        res = PQexec(admin, sql);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (attempt >= CREATE_ATTEMPTS || !state || strcmp(state, "55006") != 0) break;
        PQclear(res);
        res = NULL;
        usleep(CREATE_RETRY_US * (unsigned)(attempt + 1));
    }
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        rc = 1;
    } else {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && (strcmp(state, "42P04") == 0 || strcmp(state, "23505") == 0)) {
            rc = 1; /* created concurrently by another process */
        } else {
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            snprintf(err, errlen, "cannot create the database: %s", msg ? msg : "unknown error");
            rc = TR_STORE_EERROR;
        }
    }
out:
    PQclear(res);
    PQfreemem(quoted);
    free(sql);
    if (admin) PQfinish(admin);
    free(name);
    return rc;
}

static void copy_conn_error(PGconn *conn, char *err, size_t errlen)
{
    const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    snprintf(err, errlen, "cannot connect to PostgreSQL: %.*s", (int)len, msg);
}

/* Connects, creating the database once when it is missing. */
static int open_conn(const char *conninfo, PGconn **out, char *err, size_t errlen)
{
    PGconn *conn = connect_to(conninfo, false);
    *out = NULL;
    if (PQstatus(conn) != CONNECTION_OK) {
        copy_conn_error(conn, err, errlen);
        PQfinish(conn);
        conn = NULL;
        int created = create_database(conninfo, err, errlen);
        if (created < 0) return created;
        if (created == 0) return TR_STORE_EBUSY;
        conn = connect_to(conninfo, false);
        if (PQstatus(conn) != CONNECTION_OK) {
            copy_conn_error(conn, err, errlen);
            PQfinish(conn);
            return TR_STORE_EBUSY;
        }
    }
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    *out = conn;
    return 0;
}

static void cache_clear(pg_store_t *s)
{
    for (size_t i = 0; i < s->cached; i++) {
        free(s->cache[i]->sql);
        free(s->cache[i]->types);
        free(s->cache[i]);
        s->cache[i] = NULL;
    }
    s->cached = 0;
}

/* True when the server closed the connection (or it failed): checked
 * without blocking, for an idle connection only. */
static bool peer_closed(PGconn *conn)
{
    struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN | POLLRDHUP};
    if (p.fd < 0) return true;
    if (poll(&p, 1, 0) != 1) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* Makes sure the connection is usable before a statement (note 6). Inside a
 * transaction a lost connection is an error: the transaction is gone. */
static int ensure_connected(pg_store_t *s)
{
    if (PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) == PQTRANS_IDLE &&
        peer_closed(s->conn))
        PQconsumeInput(s->conn); /* reads the end: the connection turns bad */
    if (PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) == PQTRANS_IDLE &&
        peer_closed(s->conn)) {
        /* libpq has not noticed yet; the socket says the server is gone. */
        cache_clear(s);
        PQreset(s->conn);
        if (PQstatus(s->conn) != CONNECTION_OK) {
            set_pq_error(s, PQerrorMessage(s->conn));
            return TR_STORE_EBUSY;
        }
        PQsetNoticeProcessor(s->conn, ignore_notice, NULL);
        return 0;
    }
    if (PQstatus(s->conn) == CONNECTION_OK) return 0;
    cache_clear(s);
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        set_pq_error(s, PQerrorMessage(s->conn));
        return TR_STORE_EBUSY;
    }
    PQsetNoticeProcessor(s->conn, ignore_notice, NULL);
    return 0;
}

static int pg_open(const char *target, tr_store_t **out, char *err, size_t errlen)
{
    pg_store_t *s = tr_xcalloc(1, sizeof(*s));
    s->conninfo = tr_xasprintf("postgresql://%s", target);
    int rc = open_conn(s->conninfo, &s->conn, err, errlen);
    if (rc != 0) {
        free(s->conninfo);
        free(s);
        return rc;
    }
    s->rows.base.db = &s->base;
    s->rows.row = -1;
    *out = &s->base;
    return 0;
}

static void pg_close(tr_store_t *db)
{
    pg_store_t *s = from_db(db);
    PQclear(s->rows.res);
    cache_clear(s);
    PQfinish(s->conn);
    free(s->conninfo);
    free(s);
}

/* ---- parameters (note 2) ------------------------------------------------- */

/* Checks that sql uses exactly the parameters $1..$nparams. */
static int check_params(pg_store_t *s, const char *sql, size_t nparams)
{
    unsigned char seen[TR__STORE_MAX_PARAMS + 1] = {0};
    size_t max = 0;
    for (const char *p = sql; *p; p++) {
        if (*p == '\'' || *p == '"') {
            char q = *p;
            while (*++p && *p != q) {
            }
            if (!*p) break;
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
            if (!*p) break;
        } else if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            size_t n = 0;
            while (p[1] >= '0' && p[1] <= '9' && n <= TR__STORE_MAX_PARAMS)
                n = n * 10 + (size_t)(*++p - '0');
            if (n == 0 || n > TR__STORE_MAX_PARAMS) {
                tr__store_set_error(&s->base, "parameter $%zu out of range", n);
                return -EINVAL;
            }
            seen[n] = 1;
            if (n > max) max = n;
        }
    }
    if (max != nparams) {
        tr__store_set_error(&s->base, "SQL uses %zu parameters, %zu given", max, nparams);
        return -EINVAL;
    }
    for (size_t i = 1; i <= max; i++) {
        if (!seen[i]) {
            tr__store_set_error(&s->base, "SQL does not use $%zu", i);
            return -EINVAL;
        }
    }
    return 0;
}

/* Text values of params; numbers are printed into nums (21 bytes each). */
static void param_values(const tr__store_param_t *params, size_t n, const char **values,
                         char (*nums)[24])
{
    for (size_t i = 0; i < n; i++) {
        switch (params[i].type) {
        case 't':
            values[i] = params[i].text;
            break;
        case 'b':
            values[i] = params[i].num ? "1" : "0";
            break;
        default:
            snprintf(nums[i], sizeof(nums[i]), "%" PRId64, params[i].num);
            values[i] = nums[i];
        }
    }
}

/* ---- statement cache (note 3) -------------------------------------------- */

static uint64_t fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3u;
    }
    return h;
}

static void cache_evict_one(pg_store_t *s)
{
    size_t victim = 0;
    for (size_t i = 1; i < s->cached; i++)
        if (s->cache[i]->last_used < s->cache[victim]->last_used) victim = i;
    cache_entry_t *e = s->cache[victim];
    if (PQtransactionStatus(s->conn) != PQTRANS_INERROR) {
        char sql[48];
        snprintf(sql, sizeof(sql), "DEALLOCATE %s", e->name);
        PQclear(PQexec(s->conn, sql));
    }
    free(e->sql);
    free(e->types);
    free(e);
    s->cache[victim] = s->cache[--s->cached];
    s->cache[s->cached] = NULL;
}

/* Finds or prepares the statement for sql with params' types. */
static int prepare(pg_store_t *s, const char *sql, const tr__store_param_t *params, size_t n,
                   const cache_entry_t **out)
{
    char types[TR__STORE_MAX_PARAMS + 1];
    Oid oids[TR__STORE_MAX_PARAMS];
    for (size_t i = 0; i < n; i++) {
        types[i] = params[i].type;
        oids[i] = params[i].type == 'i' ? OID_INT8 : params[i].type == 't' ? OID_TEXT : 0;
    }
    types[n] = '\0';
    uint64_t hash = fnv1a(types, fnv1a(sql, 0xcbf29ce484222325u));
    for (size_t i = 0; i < s->cached; i++) {
        cache_entry_t *e = s->cache[i];
        if (e->hash == hash && strcmp(e->types, types) == 0 && strcmp(e->sql, sql) == 0) {
            e->last_used = ++s->clock;
            *out = e;
            return 0;
        }
    }
    int rc = check_params(s, sql, n);
    if (rc != 0) return rc;
    if (s->cached == CACHE_MAX) cache_evict_one(s);
    cache_entry_t *e = tr_xcalloc(1, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "tr_%u", ++s->next_id);
    PGresult *res = PQprepare(s->conn, e->name, sql, (int)n, oids);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = fail_result(s, res);
        PQclear(res);
        free(e);
        return rc;
    }
    PQclear(res);
    e->sql = tr_xstrdup(sql);
    e->types = tr_xstrdup(types);
    e->hash = hash;
    e->last_used = ++s->clock;
    s->cache[s->cached++] = e;
    *out = e;
    return 0;
}

/* Prepares (or finds) and runs a statement; *res is its successful result. */
static int run(pg_store_t *s, const char *sql, const tr__store_param_t *params, size_t n,
               PGresult **res)
{
    const cache_entry_t *e = NULL;
    const char *values[TR__STORE_MAX_PARAMS];
    char(*nums)[24] = NULL;
    int rc;

    *res = NULL;
    if ((rc = ensure_connected(s)) != 0) return rc;
    bool idle = PQtransactionStatus(s->conn) == PQTRANS_IDLE;
    rc = prepare(s, sql, params, n, &e);
    /* Preparing changes nothing, so a connection found lost there (outside
     * a transaction) is reset and the statement tried again, once. */
    if (rc == TR_STORE_EBUSY && idle && PQstatus(s->conn) == CONNECTION_BAD &&
        (rc = ensure_connected(s)) == 0)
        rc = prepare(s, sql, params, n, &e);
    if (rc != 0) return rc;
    if (n > 0) nums = tr_xmalloc(n * sizeof(*nums));
    param_values(params, n, values, nums);
    PGresult *r = PQexecPrepared(s->conn, e->name, (int)n, values, NULL, NULL, 0);
    free(nums);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = fail_result(s, r);
        PQclear(r);
        return rc;
    }
    *res = r;
    return 0;
}

/* ---- statements ---------------------------------------------------------- */

static int pg_exec_script(tr_store_t *db, const char *sql)
{
    pg_store_t *s = from_db(db);
    int rc = ensure_connected(s);
    if (rc != 0) return rc;
    PGresult *res = PQexec(s->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) rc = fail_result(s, res);
    PQclear(res);
    return rc;
}

static int pg_exec(tr_store_t *db, int64_t *changes, const char *sql,
                   const tr__store_param_t *params, size_t nparams)
{
    pg_store_t *s = from_db(db);
    PGresult *res = NULL;
    int rc = run(s, sql, params, nparams, &res);
    if (rc == 0 && changes) {
        const char *n = PQcmdTuples(res);
        *changes = *n ? strtoll(n, NULL, 10) : 0;
    }
    PQclear(res);
    return rc;
}

static int pg_query(tr_store_t *db, tr_rows_t **rows, const char *sql,
                    const tr__store_param_t *params, size_t nparams)
{
    pg_store_t *s = from_db(db);
    PGresult *res = NULL;
    int rc = run(s, sql, params, nparams, &res);
    if (rc != 0) return rc;
    s->rows.res = res;
    s->rows.row = -1;
    s->rows.nrow = PQntuples(res);
    *rows = &s->rows.base;
    return 0;
}

static int pg_rows_next(tr_rows_t *rows)
{
    pg_rows_t *r = (pg_rows_t *)rows;
    if (r->row + 1 >= r->nrow) {
        r->row = r->nrow;
        return 0;
    }
    r->row++;
    return 1;
}

static bool on_row(const pg_rows_t *r, int col)
{
    return r->row >= 0 && r->row < r->nrow && col >= 0 && col < PQnfields(r->res);
}

static bool pg_rows_is_null(tr_rows_t *rows, int col)
{
    pg_rows_t *r = (pg_rows_t *)rows;
    return !on_row(r, col) || PQgetisnull(r->res, r->row, col);
}

static const char *pg_rows_text(tr_rows_t *rows, int col)
{
    pg_rows_t *r = (pg_rows_t *)rows;
    if (pg_rows_is_null(rows, col)) return NULL;
    return PQgetvalue(r->res, r->row, col);
}

static int64_t pg_rows_int(tr_rows_t *rows, int col)
{
    pg_rows_t *r = (pg_rows_t *)rows;
    const char *v = pg_rows_text(rows, col);
    if (!v) return 0;
    if (PQftype(r->res, col) == OID_BOOL) return v[0] == 't';
    return strtoll(v, NULL, 10);
}

static void pg_rows_free(tr_rows_t *rows)
{
    pg_rows_t *r = (pg_rows_t *)rows;
    PQclear(r->res);
    r->res = NULL;
    r->row = -1;
    r->nrow = 0;
}

/* ---- transactions -------------------------------------------------------- */

static int simple(pg_store_t *s, const char *sql, PGresult **out)
{
    PGresult *res = PQexec(s->conn, sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) rc = fail_result(s, res);
    if (out && rc == 0)
        *out = res;
    else
        PQclear(res);
    return rc;
}

static int pg_begin(tr_store_t *db)
{
    pg_store_t *s = from_db(db);
    int rc = ensure_connected(s);
    return rc != 0 ? rc : simple(s, "BEGIN", NULL);
}

static int pg_commit(tr_store_t *db)
{
    pg_store_t *s = from_db(db);
    PGresult *res = NULL;
    int rc = simple(s, "COMMIT", &res);
    if (rc != 0) return rc;
    /* A failed transaction "commits" as ROLLBACK (note 5). */
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        tr__store_set_error(db, "transaction was rolled back: a statement in it had failed");
        rc = TR_STORE_EERROR;
    }
    PQclear(res);
    return rc;
}

static int pg_rollback(tr_store_t *db)
{
    pg_store_t *s = from_db(db);
    if (PQstatus(s->conn) != CONNECTION_OK) return 0; /* the server already dropped it */
    if (PQtransactionStatus(s->conn) == PQTRANS_IDLE) return 0;
    return simple(s, "ROLLBACK", NULL);
}

static int pg_lock_migrations(tr_store_t *db)
{
    pg_store_t *s = from_db(db);
    PGresult *res = PQexec(s->conn, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")");
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : fail_result(s, res);
    PQclear(res);
    return rc;
}

const struct tr_store_engine tr__store_pg_engine = {
    .name = "postgres",
    .networked = true,
    .open = pg_open,
    .close = pg_close,
    .exec_script = pg_exec_script,
    .exec = pg_exec,
    .query = pg_query,
    .rows_next = pg_rows_next,
    .rows_text = pg_rows_text,
    .rows_int = pg_rows_int,
    .rows_is_null = pg_rows_is_null,
    .rows_free = pg_rows_free,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .lock_migrations = pg_lock_migrations,
    .lock_key_sql = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
};

/*
 * test_store_pg.c - the store over PostgreSQL (kit/store_pg.c) and the
 * store pool (kit/store_pool.c): parameters, NULLs, the int64 range,
 * booleans, error mapping, transactions, row locks, serialization retry,
 * reconnecting after the backend was terminated, concurrent migrations,
 * database auto-creation, and the pool (many jobs from two loops, queue
 * full, shutdown).
 *
 * Needs a server: TRELLIS_TEST_PG_URL (postgres://user@host:port/, as
 * `make test` exports from scripts/pg-cluster.sh). Without it every test
 * is skipped with a message (exit code 77, which CTest reports as skipped).
 * Each test works in its own freshly created database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "kit/store.h"
#include "teststore.h"
#include "kit/store_engine.h"
#include "kit/store_job.h"
#include "kit/store_pool.h"

static const char *base_url;

/* A URL for a new database "trut_<pid>_<tag>" on the test server. */
static void db_url(char *out, size_t size, const char *tag)
{
    size_t n = strlen(base_url);
    snprintf(out, size, "%s%strut_%d_%s", base_url, n && base_url[n - 1] == '/' ? "" : "/",
             (int)getpid(), tag);
}

static tr_store_t *open_tag(const char *tag)
{
    char url[512];
    tr_store_t *db = NULL;
    db_url(url, sizeof(url), tag);
    int rc = tr_store_open(url, &db);
    if (rc != 0) fail_msg("open %s: %d %s", tag, rc, tr_store_errmsg(NULL));
    return db;
}

/* Waits (polling a condition, bounded) until sql returns a non-zero int. */
static void wait_until(tr_store_t *db, const char *sql)
{
    for (int i = 0; i < 5000; i++) {
        if (teststore_query_int(db, sql) != 0) return;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("condition never held: %s", sql);
}

static void test_url_engine(void **state)
{
    (void)state;
    assert_true(tr_store_url_networked("postgres://u@h/db"));
    assert_true(tr_store_url_networked("postgresql://u@h/db"));
    assert_false(tr_store_url_networked("sqlite:///tmp/x.db"));
    assert_false(tr_store_url_networked("/tmp/x.db"));
    assert_false(tr_store_url_networked("mysql://h/db"));
    tr_store_t *db = open_tag("engine");
    assert_true(tr_store_networked(db));
    tr_store_close(db);
}

static void test_params_nulls_int64_bools(void **state)
{
    (void)state;
    tr_store_t *db = open_tag("params");
    int64_t changes = -1;
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, "
                                   "flag INTEGER NOT NULL, ok BOOLEAN NOT NULL)",
                                   NULL),
                     0);
    const char *ins = "INSERT INTO t (id, name, flag, ok) VALUES ($1, $2, $3, $4)";
    assert_int_equal(tr_store_exec(db, &changes, ins, "itbb", INT64_MIN, "min", 1, 1), 0);
    assert_int_equal(changes, 1);
    assert_int_equal(tr_store_exec(db, NULL, ins, "itbb", INT64_MAX, NULL, 0, 0), 0);
    assert_int_equal(tr_store_exec(db, NULL, ins, "itbb", (int64_t)0, "it's \"quoted\" $1", 1, 0),
                     0);

    tr_rows_t *rows = NULL;
    /* $2 before $1 in the text, flags compared as booleans. */
    assert_int_equal(tr_store_query(db, &rows,
                                    "SELECT id, name, flag, ok FROM t WHERE flag = $2 OR id = $1 "
                                    "ORDER BY id",
                                    "ib", INT64_MAX, 1),
                     0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_true(tr_rows_int(rows, 0) == INT64_MIN);
    assert_string_equal(tr_rows_text(rows, 1), "min");
    assert_int_equal(tr_rows_int(rows, 2), 1);
    assert_int_equal(tr_rows_int(rows, 3), 1);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_int_equal(tr_rows_int(rows, 0), 0);
    assert_string_equal(tr_rows_text(rows, 1), "it's \"quoted\" $1");
    assert_int_equal(tr_rows_int(rows, 3), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_true(tr_rows_int(rows, 0) == INT64_MAX);
    assert_true(tr_rows_is_null(rows, 1));
    assert_null(tr_rows_text(rows, 1));
    assert_int_equal(tr_rows_int(rows, 2), 0);
    assert_int_equal(tr_rows_next(rows), 0);
    tr_rows_free(rows);

    /* NULL text binds SQL NULL in a comparison too. */
    assert_int_equal(
        tr_store_exec(db, &changes, "UPDATE t SET name = $1 WHERE name IS NULL", "t", "set"), 0);
    assert_int_equal(changes, 1);

    /* Parameter count and types are checked, not guessed. */
    assert_int_equal(tr_store_exec(db, NULL, "DELETE FROM t WHERE id = $1", ""), -EINVAL);
    assert_int_equal(
        tr_store_exec(db, NULL, "DELETE FROM t WHERE id = $2", "ii", (int64_t)1, (int64_t)2),
        -EINVAL);
    assert_int_equal(
        tr_store_exec(db, NULL, "DELETE FROM t WHERE id = $1", "ii", (int64_t)1, (int64_t)2),
        -EINVAL);
    assert_int_equal(tr_store_exec(db, NULL, "DELETE FROM t WHERE id = $1", "x", (int64_t)1),
                     -EINVAL);

    /* The statement cache is used again and again without growing errors. */
    for (int i = 0; i < 300; i++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SELECT %d + $1", i);
        rows = NULL;
        assert_int_equal(tr_store_query(db, &rows, sql, "i", (int64_t)1), 0);
        assert_int_equal(tr_rows_next(rows), 1);
        assert_int_equal(tr_rows_int(rows, 0), i + 1);
        tr_rows_free(rows);
    }
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM pg_prepared_statements"), 128);
    assert_int_equal(tr_store_ping(db), 0);
    tr_store_close(db);
}

static void test_error_mapping(void **state)
{
    (void)state;
    tr_store_t *db = open_tag("errors");
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TABLE p (id BIGINT PRIMARY KEY, email TEXT UNIQUE, "
                                   "n INTEGER CHECK (n >= 0));"
                                   "CREATE TABLE c (p BIGINT NOT NULL REFERENCES p(id))",
                                   NULL),
                     TR_STORE_EERROR); /* one statement per call through tr_store_exec */
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TABLE p (id BIGINT PRIMARY KEY, email TEXT UNIQUE, "
                                   "n INTEGER CHECK (n >= 0))",
                                   NULL),
                     0);
    assert_int_equal(
        tr_store_exec(db, NULL, "CREATE TABLE c (p BIGINT NOT NULL REFERENCES p(id))", NULL), 0);
    const char *ins = "INSERT INTO p (id, email, n) VALUES ($1, $2, $3)";
    assert_int_equal(tr_store_exec(db, NULL, ins, "iti", (int64_t)1, "a@x", (int64_t)0), 0);
    assert_int_equal(tr_store_exec(db, NULL, ins, "iti", (int64_t)2, "a@x", (int64_t)0),
                     TR_STORE_ECONSTRAINT);
    assert_int_equal(tr_store_exec(db, NULL, ins, "iti", (int64_t)1, "b@x", (int64_t)0),
                     TR_STORE_ECONSTRAINT);
    assert_int_equal(tr_store_exec(db, NULL, ins, "iti", (int64_t)3, "c@x", (int64_t)-1),
                     TR_STORE_ECONSTRAINT);
    assert_int_equal(tr_store_exec(db, NULL, ins, "iti", (int64_t)4, NULL, (int64_t)0), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO c (p) VALUES ($1)", "i", (int64_t)9),
                     TR_STORE_ECONSTRAINT);
    assert_int_equal(tr_store_exec(db, NULL, "SELEC 1", NULL), TR_STORE_EERROR);
    assert_non_null(strstr(tr_store_errmsg(db), "syntax error"));
    assert_int_equal(tr_store_exec(db, NULL, "SELECT * FROM missing_table", NULL), TR_STORE_EERROR);
    assert_non_null(strstr(tr_store_errmsg(db), "missing_table"));
    /* Lock timeout: "try again". */
    tr_store_t *other = open_tag("errors");
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "UPDATE p SET n = 5 WHERE id = 1", NULL), 0);
    assert_int_equal(tr_store_exec(other, NULL, "SET lock_timeout = '50ms'", NULL), 0);
    assert_int_equal(tr_store_exec(other, NULL, "UPDATE p SET n = 6 WHERE id = 1", NULL),
                     TR_STORE_EBUSY);
    assert_int_equal(tr_store_rollback(db), 0);
    tr_store_close(other);
    tr_store_close(db);
}

static void test_transactions(void **state)
{
    (void)state;
    tr_store_t *db = open_tag("tx");
    assert_int_equal(tr_store_rollback(db), 0); /* no transaction: no-op */
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE t (id BIGINT PRIMARY KEY)", NULL), 0);
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)1), 0);
    assert_int_equal(tr_store_rollback(db), 0);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM t"), 0);

    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)1), 0);
    assert_int_equal(tr_store_commit(db), 0);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM t"), 1);

    /* A failed statement poisons the transaction: COMMIT must not claim
     * success (the server turns it into ROLLBACK). */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)2), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)1),
                     TR_STORE_ECONSTRAINT);
    assert_int_equal(tr_store_commit(db), TR_STORE_EERROR);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM t"), 1);

    /* Rollback closes an open cursor. */
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_query(db, &rows, "SELECT id FROM t", NULL), 0);
    assert_int_equal(tr_store_rollback(db), 0);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM t"), 1);
    tr_store_close(db);
}

/* ---- row locks ---------------------------------------------------------- */

typedef struct locker {
    tr_store_t *db;
    int rc;
    int64_t seen;
    atomic_bool done;
} locker_t;

static void lock_row(void *arg)
{
    locker_t *l = arg;
    tr_rows_t *rows = NULL;
    l->rc = tr_store_begin(l->db);
    if (l->rc == 0)
        l->rc = tr_store_query(l->db, &rows, "SELECT v FROM t WHERE id = 1 FOR UPDATE", NULL);
    if (l->rc == 0 && tr_rows_next(rows) == 1) l->seen = tr_rows_int(rows, 0);
    tr_rows_free(rows);
    if (l->rc == 0) l->rc = tr_store_commit(l->db);
    atomic_store(&l->done, true);
}

static void test_for_update_blocks(void **state)
{
    (void)state;
    tr_store_t *a = open_tag("lock"), *b = open_tag("lock"), *watch = open_tag("lock");
    assert_int_equal(
        tr_store_exec(a, NULL, "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT)", NULL), 0);
    assert_int_equal(tr_store_exec(a, NULL, "INSERT INTO t VALUES (1, 10)", NULL), 0);
    int64_t bpid = teststore_query_int(b, "SELECT pg_backend_pid()");

    assert_int_equal(tr_store_begin(a), 0);
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(a, &rows, "SELECT v FROM t WHERE id = 1 FOR UPDATE", NULL), 0);
    tr_rows_free(rows);

    locker_t l = {.db = b};
    uv_thread_t tid;
    assert_int_equal(uv_thread_create(&tid, lock_row, &l), 0);
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld AND wait_event_type = 'Lock'",
             (long long)bpid);
    wait_until(watch, sql); /* b is blocked on a's row lock */
    assert_false(atomic_load(&l.done));
    assert_int_equal(tr_store_exec(a, NULL, "UPDATE t SET v = 11 WHERE id = 1", NULL), 0);
    assert_int_equal(tr_store_commit(a), 0);
    uv_thread_join(&tid);
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.seen, 11); /* b read the row after a's commit */
    tr_store_close(watch);
    tr_store_close(b);
    tr_store_close(a);
}

/* tr_store_lock: a second transaction on the same key waits for the first
 * to end; another key does not wait. */
typedef struct key_locker {
    tr_store_t *db;
    const char *key;
    int rc;
    atomic_bool done;
} key_locker_t;

static void lock_key(void *arg)
{
    key_locker_t *k = arg;
    k->rc = tr_store_begin(k->db);
    if (k->rc == 0) k->rc = tr_store_lock(k->db, k->key);
    if (k->rc == 0) k->rc = tr_store_commit(k->db);
    atomic_store(&k->done, true);
}

static void test_lock_key_serialises(void **state)
{
    (void)state;
    tr_store_t *a = open_tag("keylock"), *b = open_tag("keylock"), *watch = open_tag("keylock");
    int64_t bpid = teststore_query_int(b, "SELECT pg_backend_pid()");
    assert_int_equal(tr_store_begin(a), 0);
    assert_int_equal(tr_store_lock(a, "login:someone@example.test"), 0);

    /* Another key is free. */
    key_locker_t other = {.db = b, .key = "login:other@example.test"};
    lock_key(&other);
    assert_int_equal(other.rc, 0);

    key_locker_t same = {.db = b, .key = "login:someone@example.test"};
    uv_thread_t tid;
    assert_int_equal(uv_thread_create(&tid, lock_key, &same), 0);
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld AND wait_event_type = 'Lock'",
             (long long)bpid);
    wait_until(watch, sql); /* b waits for a's key */
    assert_false(atomic_load(&same.done));
    assert_int_equal(tr_store_commit(a), 0);
    uv_thread_join(&tid);
    assert_int_equal(same.rc, 0);
    tr_store_close(watch);
    tr_store_close(b);
    tr_store_close(a);
}

/* ---- serialization retry (tr_store_run's TR_STORE_TX) -------------------- */

typedef struct counter_job {
    tr_store_t *other;
    int attempts;
    int64_t result;
} counter_job_t;

/* Reads the counter; on the first attempt another connection updates it
 * behind our snapshot, so our write fails with a serialization failure. */
static int increment(tr_store_t *db, void *arg)
{
    counter_job_t *c = arg;
    tr_rows_t *rows = NULL;
    c->attempts++;
    int rc = tr_store_query(db, &rows, "SELECT v FROM c WHERE id = 1", NULL);
    if (rc != 0) return rc;
    int64_t v = tr_rows_next(rows) == 1 ? tr_rows_int(rows, 0) : -1;
    tr_rows_free(rows);
    if (c->attempts == 1 &&
        (rc = tr_store_exec(c->other, NULL, "UPDATE c SET v = v + 10 WHERE id = 1", NULL)) != 0)
        return rc;
    c->result = v + 1;
    return tr_store_exec(db, NULL, "UPDATE c SET v = $1 WHERE id = 1", "i", v + 1);
}

static void test_serialization_retry(void **state)
{
    (void)state;
    tr_store_t *db = open_tag("retry"), *other = open_tag("retry");
    assert_int_equal(
        tr_store_exec(db, NULL, "CREATE TABLE c (id BIGINT PRIMARY KEY, v BIGINT)", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO c VALUES (1, 0)", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL,
                                   "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
                                   "SERIALIZABLE",
                                   NULL),
                     0);
    counter_job_t job = {.other = other};
    assert_int_equal(tr__store_job_execute(db, TR_STORE_TX, increment, &job), 0);
    assert_int_equal(job.attempts, 2);
    assert_int_equal(job.result, 11);
    assert_int_equal(teststore_query_int(other, "SELECT v FROM c WHERE id = 1"), 11);
    tr_store_close(other);
    tr_store_close(db);
}

/* ---- reconnect ----------------------------------------------------------- */

static void test_reconnect_after_terminate(void **state)
{
    (void)state;
    tr_store_t *db = open_tag("reconnect"), *admin = open_tag("reconnect");
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE t (v BIGINT)", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)7), 0);
    int64_t pid = teststore_query_int(db, "SELECT pg_backend_pid()");
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(admin, &rows, "SELECT pg_terminate_backend($1::int)", "i", pid),
                     0);
    tr_rows_free(rows);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %lld",
             (long long)pid);
    wait_until(admin, sql);
    /* The next use reconnects, with the (cached, now re-prepared) statement. */
    rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, "SELECT v FROM t WHERE v = $1", "i", (int64_t)7), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    tr_rows_free(rows);
    assert_true(teststore_query_int(db, "SELECT pg_backend_pid()") != pid);
    tr_store_close(admin);
    tr_store_close(db);
}

/* ---- migrations and database creation ------------------------------------ */

static const tr_migration_t migration_list[] = {
    {1, "0001_init", "CREATE TABLE m (id INTEGER PRIMARY KEY, flag INTEGER NOT NULL DEFAULT 0)",
     "CREATE TABLE m (id BIGINT PRIMARY KEY, flag INTEGER NOT NULL DEFAULT 0)"},
    {2, "0002_seed", "INSERT INTO m (id) VALUES (1)", "INSERT INTO m (id) VALUES (1)"},
};
static const tr_migrations_t migrations = {migration_list, 2};

typedef struct migrator {
    char url[512];
    int rc;
} migrator_t;

static void migrate_thread(void *arg)
{
    migrator_t *m = arg;
    tr_store_t *db = NULL;
    m->rc = tr_store_open(m->url, &db);
    if (m->rc == 0) m->rc = tr_store_migrate(db, &migrations);
    tr_store_close(db);
}

static void test_concurrent_migrations_and_create(void **state)
{
    (void)state;
    enum { N = 6 };
    migrator_t m[N];
    uv_thread_t tid[N];
    /* A name that needs quoting: created by the engine, not by the test. */
    for (int i = 0; i < N; i++) {
        db_url(m[i].url, sizeof(m[i].url), "Mig%22rate-1");
        assert_int_equal(uv_thread_create(&tid[i], migrate_thread, &m[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        uv_thread_join(&tid[i]);
        assert_int_equal(m[i].rc, 0);
    }
    tr_store_t *db = NULL;
    assert_int_equal(tr_store_open(m[0].url, &db), 0);
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, "SELECT current_database()", NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    char expect[128];
    snprintf(expect, sizeof(expect), "trut_%d_Mig\"rate-1", (int)getpid());
    assert_string_equal(tr_rows_text(rows, 0), expect);
    tr_rows_free(rows);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM m"), 1);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(tr_store_migrate(db, &migrations), 0); /* idempotent */
    tr_store_close(db);
}

static void test_open_failures(void **state)
{
    (void)state;
    tr_store_t *db = NULL;
    /* Nothing listens on port 1. */
    assert_int_not_equal(tr_store_open("postgres://nobody:secret@127.0.0.1:1/x", &db), 0);
    assert_null(db);
    assert_null(strstr(tr_store_errmsg(NULL), "secret"));
    assert_non_null(strstr(tr_store_errmsg(NULL), "cannot connect"));
}

/* ---- the pool ------------------------------------------------------------ */

enum { POOL_JOBS = 300 };

typedef struct pool_loop {
    tr__store_pool_t *pool;
    tr__store_pool_client_t *client;
    uv_loop_t loop;
    int id;
    int completed, failed;
    int ctx[POOL_JOBS];
} pool_loop_t;

static int insert_job(tr_store_t *db, void *ctx)
{
    int *n = ctx;
    return tr_store_exec(db, NULL, "INSERT INTO j (n) VALUES ($1)", "i", (int64_t)*n);
}

static void count_done(void *arg, void *ctx, int rc)
{
    pool_loop_t *p = arg;
    (void)ctx;
    if (rc != 0) p->failed++;
    if (++p->completed == POOL_JOBS) tr__store_pool_detach(p->client);
}

static void pool_loop_main(void *arg)
{
    pool_loop_t *p = arg;
    uv_loop_init(&p->loop);
    if (tr__store_pool_attach(p->pool, &p->loop, &p->client) != 0) return;
    for (int i = 0; i < POOL_JOBS; i++) {
        p->ctx[i] = p->id * POOL_JOBS + i;
        tr__store_pool_submit(p->client, i % 2 ? TR_STORE_TX : 0, insert_job, &p->ctx[i],
                              count_done, p);
    }
    uv_run(&p->loop, UV_RUN_DEFAULT);
}

static void test_pool_two_loops(void **state)
{
    (void)state;
    char url[512];
    db_url(url, sizeof(url), "pool");
    tr_store_t *db = open_tag("pool");
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE j (n BIGINT PRIMARY KEY)", NULL), 0);
    tr__store_pool_t *pool = NULL;
    assert_int_equal(tr__store_pool_start(url, 3, 2 * POOL_JOBS, &pool), 0);
    static pool_loop_t loops[2];
    uv_thread_t tid[2];
    for (int i = 0; i < 2; i++) {
        memset(&loops[i], 0, sizeof(loops[i]));
        loops[i].pool = pool;
        loops[i].id = i;
        assert_int_equal(uv_thread_create(&tid[i], pool_loop_main, &loops[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        uv_thread_join(&tid[i]);
        assert_int_equal(loops[i].completed, POOL_JOBS);
        assert_int_equal(loops[i].failed, 0);
        assert_int_equal(uv_loop_close(&loops[i].loop), 0);
    }
    tr__store_pool_stop(pool);
    assert_int_equal(teststore_query_int(db, "SELECT count(*) FROM j"), 2 * POOL_JOBS);
    /* Every pool connection was closed. */
    assert_int_equal(teststore_query_int(db,
                                         "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                         "current_database() AND pid <> pg_backend_pid()"),
                     0);
    tr_store_close(db);
}

typedef struct gate {
    uv_sem_t started, release;
} gate_t;

static int blocking_job(tr_store_t *db, void *ctx)
{
    gate_t *g = ctx;
    (void)db;
    uv_sem_post(&g->started);
    uv_sem_wait(&g->release);
    return 0;
}

static int must_not_run(tr_store_t *db, void *ctx)
{
    (void)db;
    (void)ctx;
    fail_msg("a queued job ran after its client detached");
    return 0;
}

typedef struct outcome {
    int calls;
    int rc;
} outcome_t;

static void record(void *arg, void *ctx, int rc)
{
    outcome_t *o = arg;
    (void)ctx;
    o->calls++;
    o->rc = rc;
}

typedef struct releaser {
    tr__store_pool_t *pool;
    gate_t *gate;
} releaser_t;

/* Releases the in-flight job once detach has taken the queued ones out. */
static void release_when_unqueued(void *arg)
{
    releaser_t *r = arg;
    while (tr__store_pool_queued(r->pool) != 0) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    uv_sem_post(&r->gate->release);
}

static void test_pool_queue_full_and_shutdown(void **state)
{
    (void)state;
    char url[512];
    db_url(url, sizeof(url), "poolfull");
    tr__store_pool_t *pool = NULL;
    assert_int_equal(tr__store_pool_start(url, 1, 2, &pool), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    tr__store_pool_client_t *c = NULL;
    assert_int_equal(tr__store_pool_attach(pool, &loop, &c), 0);
    gate_t gate;
    uv_sem_init(&gate.started, 0);
    uv_sem_init(&gate.release, 0);
    outcome_t o[4] = {{0}};

    tr__store_pool_submit(c, 0, blocking_job, &gate, record, &o[0]);
    uv_sem_wait(&gate.started); /* the only thread is busy */
    tr__store_pool_submit(c, 0, must_not_run, NULL, record, &o[1]);
    tr__store_pool_submit(c, TR_STORE_TX, must_not_run, NULL, record, &o[2]);
    assert_int_equal(tr__store_pool_queued(pool), 2);
    tr__store_pool_submit(c, 0, must_not_run, NULL, record, &o[3]);
    /* Queue full: completed at once, before submit returned. */
    assert_int_equal(o[3].calls, 1);
    assert_int_equal(o[3].rc, TR_STORE_EBUSY);

    releaser_t r = {pool, &gate};
    uv_thread_t tid;
    assert_int_equal(uv_thread_create(&tid, release_when_unqueued, &r), 0);
    tr__store_pool_detach(c); /* queued -> ESHUTDOWN, waits for the in-flight one */
    uv_thread_join(&tid);
    assert_int_equal(o[0].calls, 1);
    assert_int_equal(o[0].rc, 0);
    for (int i = 1; i <= 2; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].rc, -ESHUTDOWN);
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* the client's close callback */
    assert_int_equal(uv_loop_close(&loop), 0);
    tr__store_pool_stop(pool);
    uv_sem_destroy(&gate.started);
    uv_sem_destroy(&gate.release);
}

int main(void)
{
    base_url = getenv("TRELLIS_TEST_PG_URL");
    if (!base_url || !*base_url) {
        printf("test_store_pg: skipped, TRELLIS_TEST_PG_URL is not set "
               "(scripts/pg-cluster.sh run ctest -R store_pg)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_engine),
        cmocka_unit_test(test_params_nulls_int64_bools),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_for_update_blocks),
        cmocka_unit_test(test_lock_key_serialises),
        cmocka_unit_test(test_serialization_retry),
        cmocka_unit_test(test_reconnect_after_terminate),
        cmocka_unit_test(test_concurrent_migrations_and_create),
        cmocka_unit_test(test_open_failures),
        cmocka_unit_test(test_pool_two_loops),
        cmocka_unit_test(test_pool_queue_full_and_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

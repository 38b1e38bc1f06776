/*
 * test_store.c - the store over SQLite (kit/store.h): URLs, connection
 * settings, migrations (idempotent, atomic, concurrent), parameter types and
 * parameter order, error codes, transactions, cursors and the statement cache;
 * and the per-file state of the SQLite engine (store_sqlite_shared.c): the
 * in-process writer lock (concurrent writers, every error path releasing
 * it) and the background checkpointer (WAL bounded, periodic checkpoints,
 * thread joined on the last close).
 *
 * Every database lives in one mkdtemp directory removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kit/store.h"
#include "teststore.h"
#include "kit/store_engine.h"
#include "kit/store_sqlite_shared.h"
#include "testutil.h"

static char tmpdir[256];
static char oldcwd[PATH_MAX];

static int group_setup(void **state)
{
    (void)state;
    if (testutil_tmpdir(tmpdir, sizeof(tmpdir), "store") != 0 || !getcwd(oldcwd, sizeof(oldcwd)))
        return -1;
    /* Relative URLs in the tests resolve inside the temporary directory. */
    return chdir(tmpdir);
}

static int group_teardown(void **state)
{
    (void)state;
    if (chdir(oldcwd) != 0) return -1;
    return testutil_remove_tree(tmpdir);
}

/* Opens <tmpdir>/<name> through an absolute sqlite:/// URL. */
static tr_store_t *open_db(const char *name)
{
    char url[PATH_MAX + 32];
    tr_store_t *db = NULL;
    snprintf(url, sizeof(url), "sqlite://%s/%s", tmpdir, name);
    int rc = tr_store_open(url, &db);
    if (rc != 0) fail_msg("open %s: %d %s", url, rc, tr_store_errmsg(NULL));
    return db;
}

/* Copies column 0 of the single row of sql into out. */
static void query_text(tr_store_t *db, const char *sql, char *out, size_t outlen)
{
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, sql, NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    const char *t = tr_rows_text(rows, 0);
    assert_non_null(t);
    snprintf(out, outlen, "%s", t);
    tr_rows_free(rows);
}

static bool table_exists(tr_store_t *db, const char *name)
{
    tr_rows_t *rows = NULL;
    assert_int_equal(
        tr_store_query(db, &rows, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
                       "t", name),
        0);
    int rc = tr_rows_next(rows);
    tr_rows_free(rows);
    assert_true(rc >= 0);
    return rc == 1;
}

static void test_open_settings(void **state)
{
    (void)state;
    char mode[32];
    tr_store_t *db = open_db("settings.db");
    query_text(db, "PRAGMA journal_mode", mode, sizeof(mode));
    assert_string_equal(mode, "wal");
    assert_int_equal(teststore_query_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(teststore_query_int(db, "PRAGMA busy_timeout"), 5000);
    assert_int_equal(teststore_query_int(db, "PRAGMA synchronous"), 1); /* NORMAL */
    /* Checkpoints are the checkpointer thread's job, never a commit's. */
    assert_int_equal(teststore_query_int(db, "PRAGMA wal_autocheckpoint"), 0);
    assert_int_equal(tr_store_ping(db), 0);
    tr_store_close(db);
}

static void test_url_forms(void **state)
{
    (void)state;
    char abs_url[PATH_MAX + 32], path[PATH_MAX + 32];
    struct stat st;
    tr_store_t *db = NULL;

    snprintf(abs_url, sizeof(abs_url), "sqlite://%s/abs.db", tmpdir);
    assert_int_equal(abs_url[9], '/'); /* "sqlite:///..." */
    assert_int_equal(tr_store_open(abs_url, &db), 0);
    tr_store_close(db);
    snprintf(path, sizeof(path), "%s/abs.db", tmpdir);
    assert_int_equal(stat(path, &st), 0);

    assert_int_equal(tr_store_open("sqlite://relative.db", &db), 0); /* cwd is tmpdir */
    tr_store_close(db);
    snprintf(path, sizeof(path), "%s/relative.db", tmpdir);
    assert_int_equal(stat(path, &st), 0);

    snprintf(path, sizeof(path), "%s/plain.db", tmpdir);
    assert_int_equal(tr_store_open(path, &db), 0);
    assert_int_equal(tr_store_ping(db), 0);
    tr_store_close(db);
    assert_int_equal(stat(path, &st), 0);

    assert_int_equal(tr_store_open("SQLite://:memory:", &db), 0);
    assert_int_equal(tr_store_ping(db), 0);
    tr_store_close(db);

    static const struct {
        const char *url;
        int rc;
    } bad[] = {
        /* The PostgreSQL engine (test_store_pg.c): nothing listens there. */
        {"postgres://app:hunter2@127.0.0.1:1/app", TR_STORE_EBUSY},
        {"postgresql://app:hunter2@127.0.0.1:1/app", TR_STORE_EBUSY},
        {"mysql://app:hunter2@db.example/app", -EINVAL},
        {"sqlite://", -EINVAL},
        {"", -EINVAL},
        {NULL, -EINVAL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        db = (tr_store_t *)&db; /* must be reset to NULL */
        int rc = tr_store_open(bad[i].url, &db);
        if (rc != bad[i].rc) fail_msg("%s: got %d, want %d", bad[i].url, rc, bad[i].rc);
        assert_null(db);
        const char *why = tr_store_errmsg(NULL);
        assert_true(strlen(why) > 0);
        assert_null(strstr(why, "hunter2")); /* credentials never echoed */
    }
    assert_non_null(strstr(tr_store_errmsg(NULL), "URL"));
    tr_store_open("postgres://x@127.0.0.1:1/z", &db);
    assert_non_null(strstr(tr_store_errmsg(NULL), "PostgreSQL"));

    /* A directory that does not exist cannot hold a database. */
    snprintf(path, sizeof(path), "sqlite://%s/missing/dir/x.db", tmpdir);
    assert_int_equal(tr_store_open(path, &db), TR_STORE_EERROR);
    assert_null(db);
    assert_non_null(strstr(tr_store_errmsg(NULL), "missing/dir"));
}

/* Migrates with a hand-written list (SQLite SQL only). */
static int migrate_list(tr_store_t *db, const tr_migration_t *list, size_t count)
{
    const tr_migrations_t set = {list, count};
    return tr_store_migrate(db, &set);
}

static const tr_migration_t base_migrations[] = {
    {1, "0001_accounts",
     "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);\n"
     "CREATE INDEX accounts_email ON accounts (email);",
     NULL},
    {2, "0002_seed", "INSERT INTO accounts (email) VALUES ('root@example.com');", NULL},
};

static void test_migrate_idempotent(void **state)
{
    (void)state;
    tr_store_t *db = open_db("migrate.db");
    char applied_at[64];

    assert_int_equal(migrate_list(db, base_migrations, 2), 0);
    assert_int_equal(migrate_list(db, base_migrations, 2), 0);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM accounts"),
                     1); /* seed ran once */
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 2);
    assert_int_equal(teststore_query_int(db, "SELECT MAX(version) FROM schema_migrations"), 2);

    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows,
                                    "SELECT name, applied_at FROM schema_migrations "
                                    "WHERE version = $1",
                                    "i", (int64_t)2),
                     0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_string_equal(tr_rows_text(rows, 0), "0002_seed");
    snprintf(applied_at, sizeof(applied_at), "%s", tr_rows_text(rows, 1));
    assert_int_equal(tr_rows_next(rows), 0);
    tr_rows_free(rows);
    /* RFC 3339 UTC with milliseconds: 2026-11-22T15:11:33.123Z */
    assert_int_equal(strlen(applied_at), 24);
    assert_int_equal(applied_at[10], 'T');
    assert_int_equal(applied_at[23], 'Z');
    tr_store_close(db);

    /* A later start with one more migration applies only the new one. */
    const tr_migration_t more[] = {
        base_migrations[0],
        base_migrations[1],
        {3, "0003_names", "ALTER TABLE accounts ADD COLUMN name TEXT;", NULL},
    };
    db = open_db("migrate.db");
    assert_int_equal(migrate_list(db, more, 3), 0);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM accounts"), 1);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 3);
    assert_int_equal(tr_store_exec(db, NULL, "UPDATE accounts SET name = $1", "t", "root"), 0);
    assert_int_equal(migrate_list(db, NULL, 0), 0);
    tr_store_close(db);
}

static void test_migrate_failure_is_atomic(void **state)
{
    (void)state;
    tr_store_t *db = open_db("migrate_fail.db");
    const tr_migration_t broken[] = {
        base_migrations[0],
        {2, "0002_broken", "CREATE TABLE half (a INTEGER);\nINSERT INTO nowhere VALUES (1);", NULL},
    };
    assert_int_equal(migrate_list(db, broken, 2), TR_STORE_EERROR);
    assert_non_null(strstr(tr_store_errmsg(db), "nowhere"));
    assert_true(table_exists(db, "accounts"));
    assert_false(table_exists(db, "half")); /* the whole migration rolled back */
    assert_int_equal(teststore_query_int(db, "SELECT MAX(version) FROM schema_migrations"), 1);
    /* The connection is usable and not left inside a transaction. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_commit(db), 0);

    const tr_migration_t unordered[] = {
        {2, "0002_b", "SELECT 1;", NULL},
        {1, "0001_a", "SELECT 1;", NULL},
    };
    assert_int_equal(migrate_list(db, unordered, 2), -EINVAL);
    const tr_migration_t zero[] = {{0, "0000_zero", "SELECT 1;", NULL}};
    assert_int_equal(migrate_list(db, zero, 1), -EINVAL);
    tr_store_close(db);
}

/* Starts PROCS processes that open and migrate the same new file at once;
 * returns how many failed. */
static int migrate_race(const char *name, const tr_migration_t *migs, size_t count)
{
    enum { PROCS = 8 };
    pid_t pids[PROCS];
    int barrier[2], failed = 0;
    assert_int_equal(pipe(barrier), 0);
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char url[PATH_MAX + 32], byte;
            tr_store_t *db = NULL;
            close(barrier[1]);
            /* Wait until every child exists, then all start together. */
            if (read(barrier[0], &byte, 1) != 0) _exit(2);
            snprintf(url, sizeof(url), "sqlite://%s/%s", tmpdir, name);
            int rc = tr_store_open(url, &db);
            if (rc != 0) fprintf(stderr, "child open: %s\n", tr_store_errmsg(NULL));
            if (rc == 0) rc = migrate_list(db, migs, count);
            tr_store_close(db);
            _exit(rc == 0 ? 0 : 1);
        }
    }
    close(barrier[0]);
    close(barrier[1]);
    for (int i = 0; i < PROCS; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    return failed;
}

static void test_migrate_concurrent_processes(void **state)
{
    (void)state;
    /* Not idempotent on purpose: a double apply would fail (table exists) or
     * double-count (two rows). */
    const tr_migration_t migs[] = {
        {1, "0001_counter", "CREATE TABLE applied (n INTEGER);", NULL},
        {2, "0002_count", "INSERT INTO applied VALUES (2);", NULL},
        {3, "0003_count", "INSERT INTO applied VALUES (3);", NULL},
        {4, "0004_count", "INSERT INTO applied VALUES (4);", NULL},
        {5, "0005_count", "INSERT INTO applied VALUES (5);", NULL},
    };
    /* A race shows up only sometimes, so run several. */
    for (int round = 0; round < 6; round++) {
        char name[64];
        snprintf(name, sizeof(name), "concurrent%d.db", round);
        assert_int_equal(migrate_race(name, migs, 5), 0);
        tr_store_t *db = open_db(name);
        assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM applied"), 4);
        assert_int_equal(teststore_query_int(db, "SELECT SUM(n) FROM applied"), 14);
        assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 5);
        tr_store_close(db);
    }
}

static void test_types_and_nulls(void **state)
{
    (void)state;
    tr_store_t *db = open_db("types.db");
    int64_t changes = -1;
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER, "
                                   "flag INTEGER NOT NULL)",
                                   NULL),
                     0);

    static const struct {
        int64_t id;
        const char *name;
        int64_t n;
        int flag;
    } cases[] = {
        {1, "plain", 42, 1},
        {2, NULL, INT64_MAX, 0},
        {3, "h\xc3\xa9llo \xe2\x9c\x93 'quoted' \"double\" ; DROP TABLE t; --", INT64_MIN, 7},
        {4, "", -1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            tr_store_exec(db, &changes, "INSERT INTO t (id, name, n, flag) VALUES ($1, $2, $3, $4)",
                          "itib", cases[i].id, cases[i].name, cases[i].n, cases[i].flag),
            0);
        assert_int_equal(changes, 1);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tr_rows_t *rows = NULL;
        assert_int_equal(tr_store_query(db, &rows, "SELECT name, n, flag FROM t WHERE id = $1", "i",
                                        cases[i].id),
                         0);
        assert_int_equal(tr_rows_next(rows), 1);
        if (cases[i].name) {
            assert_false(tr_rows_is_null(rows, 0));
            assert_string_equal(tr_rows_text(rows, 0), cases[i].name);
        } else {
            assert_true(tr_rows_is_null(rows, 0));
            assert_null(tr_rows_text(rows, 0));
        }
        assert_false(tr_rows_is_null(rows, 1));
        assert_true(tr_rows_int(rows, 1) == cases[i].n);
        assert_int_equal(tr_rows_int(rows, 2), cases[i].flag ? 1 : 0); /* bool is 0/1 */
        /* Out-of-range columns are NULL, not undefined behaviour. */
        assert_null(tr_rows_text(rows, 3));
        assert_true(tr_rows_is_null(rows, -1));
        assert_int_equal(tr_rows_int(rows, 99), 0);
        assert_int_equal(tr_rows_next(rows), 0);
        assert_int_equal(tr_rows_next(rows), 0); /* stays at the end, no re-run */
        tr_rows_free(rows);
    }
    /* NULL binds NULL, so "= NULL" matches nothing while IS NULL does. */
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM t WHERE name IS NULL"), 1);

    assert_int_equal(
        tr_store_exec(db, &changes, "UPDATE t SET flag = $1 WHERE id > $2", "bi", 1, (int64_t)1),
        0);
    assert_int_equal(changes, 3);
    assert_int_equal(tr_store_exec(db, &changes, "CREATE TABLE other (a INTEGER)", NULL), 0);
    assert_int_equal(changes, 0); /* DDL does not report the previous UPDATE's count */
    assert_int_equal(tr_store_exec(db, &changes, "SELECT * FROM t", ""), 0);
    assert_int_equal(changes, 0);

    /* More parameters than fit on the front's stack. */
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows,
                                    "SELECT $1+$2+$3+$4+$5+$6+$7+$8+$9+$10+$11+$12+$13+$14+$15+$16+"
                                    "$17+$18+$19+$20, $21",
                                    "iiiiiiiiiiiiiiiiiiiit", (int64_t)1, (int64_t)2, (int64_t)3,
                                    (int64_t)4, (int64_t)5, (int64_t)6, (int64_t)7, (int64_t)8,
                                    (int64_t)9, (int64_t)10, (int64_t)11, (int64_t)12, (int64_t)13,
                                    (int64_t)14, (int64_t)15, (int64_t)16, (int64_t)17, (int64_t)18,
                                    (int64_t)19, (int64_t)20, "last"),
                     0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_int_equal(tr_rows_int(rows, 0), 210);
    assert_string_equal(tr_rows_text(rows, 1), "last");
    tr_rows_free(rows);
    tr_store_close(db);
}

static void test_query_params_are_copied(void **state)
{
    (void)state;
    tr_store_t *db = open_db("copied.db");
    char *name = strdup("transient");
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, "SELECT $1", "t", name), 0);
    memset(name, 'x', strlen(name));
    free(name); /* the caller's string dies before the first step */
    assert_int_equal(tr_rows_next(rows), 1);
    assert_string_equal(tr_rows_text(rows, 0), "transient");
    tr_rows_free(rows);
    tr_store_close(db);
}

static void test_constraints(void **state)
{
    (void)state;
    tr_store_t *db = open_db("constraints.db");
    assert_int_equal(
        tr_store_exec(db, NULL,
                      "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL "
                      "UNIQUE, age INTEGER CHECK (age >= 0))",
                      NULL),
        0);
    assert_int_equal(
        tr_store_exec(db, NULL,
                      "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL "
                      "REFERENCES users (id))",
                      NULL),
        0);
    const char *insert = "INSERT INTO users (id, email, age) VALUES ($1, $2, $3)";
    assert_int_equal(tr_store_exec(db, NULL, insert, "iti", (int64_t)1, "a@x", (int64_t)30), 0);

    assert_int_equal(tr_store_exec(db, NULL, insert, "iti", (int64_t)2, "a@x", (int64_t)1),
                     TR_STORE_ECONSTRAINT); /* unique */
    assert_non_null(strstr(tr_store_errmsg(db), "UNIQUE"));
    assert_int_equal(tr_store_exec(db, NULL, insert, "iti", (int64_t)1, "b@x", (int64_t)1),
                     TR_STORE_ECONSTRAINT); /* primary key */
    assert_int_equal(tr_store_exec(db, NULL, insert, "iti", (int64_t)3, NULL, (int64_t)1),
                     TR_STORE_ECONSTRAINT); /* not null */
    assert_int_equal(tr_store_exec(db, NULL, insert, "iti", (int64_t)4, "c@x", (int64_t)-1),
                     TR_STORE_ECONSTRAINT); /* check */
    assert_int_equal(
        tr_store_exec(db, NULL, "INSERT INTO posts (user_id) VALUES ($1)", "i", (int64_t)999),
        TR_STORE_ECONSTRAINT); /* foreign key: foreign_keys=ON */

    /* A violation surfacing while stepping a cursor maps the same way. */
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows,
                                    "INSERT INTO users (id, email) VALUES ($1, $2) RETURNING id",
                                    "it", (int64_t)5, "a@x"),
                     0);
    assert_int_equal(tr_rows_next(rows), TR_STORE_ECONSTRAINT);
    tr_rows_free(rows);

    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM posts"), 0);
    tr_store_close(db);
}

static void test_transactions(void **state)
{
    (void)state;
    tr_store_t *db = open_db("tx.db");
    tr_store_t *other = open_db("tx.db");
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE t (v INTEGER)", NULL), 0);

    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)1), 0);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM t"), 1);
    assert_int_equal(teststore_query_int(other, "SELECT COUNT(*) FROM t"), 0); /* not yet visible */

    /* A second writer meets the write lock; with no busy timeout it is
     * refused at once, as TR_STORE_EBUSY. */
    assert_int_equal(tr_store_exec(other, NULL, "PRAGMA busy_timeout = 0", NULL), 0);
    assert_int_equal(tr_store_begin(other), TR_STORE_EBUSY);

    assert_int_equal(tr_store_rollback(db), 0);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM t"), 0);
    assert_int_equal(teststore_query_int(other, "SELECT COUNT(*) FROM t"), 0);

    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)2), 0);
    assert_int_equal(tr_store_commit(db), 0);
    assert_int_equal(teststore_query_int(other, "SELECT SUM(v) FROM t"), 2);

    /* Rollback outside a transaction is a harmless no-op; commit is not. */
    assert_int_equal(tr_store_rollback(db), 0);
    assert_int_equal(tr_store_commit(db), TR_STORE_EERROR);
    /* Nested BEGIN is an engine error, and leaves the outer transaction. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_begin(db), TR_STORE_EERROR);
    assert_int_equal(tr_store_rollback(db), 0);
    tr_store_close(other);
    tr_store_close(db);
}

static void test_parameter_order(void **state)
{
    (void)state;
    tr_store_t *db = open_db("params.db");
    tr_rows_t *rows = NULL;

    assert_int_equal(tr_store_query(db, &rows, "SELECT $2 || '-' || $1, $1 = $1", "tt", "a", "b"),
                     0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_string_equal(tr_rows_text(rows, 0), "b-a");
    assert_int_equal(tr_rows_int(rows, 1), 1);
    tr_rows_free(rows);

    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE kv (k TEXT, v INTEGER)", NULL), 0);
    assert_int_equal(
        tr_store_exec(db, NULL, "INSERT INTO kv (v, k) VALUES ($2, $1)", "ti", "key", (int64_t)9),
        0);
    assert_int_equal(teststore_query_int(db, "SELECT v FROM kv WHERE k = 'key'"), 9);

    static const struct {
        const char *sql;
        const char *types;
    } mismatched[] = {
        {"SELECT $1, $2", "t"},  /* too few values */
        {"SELECT $1", "tt"},     /* too many values */
        {"SELECT $1, $3", "tt"}, /* a gap: $2 missing */
        {"SELECT ?", "t"},       /* not our parameter style */
        {"SELECT :name", "t"},   /* named parameter */
        {"SELECT $1", NULL},     /* no values at all */
        {"SELECT $1", "x"},      /* unknown type letter */
    };
    for (size_t i = 0; i < sizeof(mismatched) / sizeof(mismatched[0]); i++) {
        int rc = tr_store_query(db, &rows, mismatched[i].sql, mismatched[i].types, "v", "w");
        if (rc != -EINVAL)
            fail_msg("%s with \"%s\": got %d", mismatched[i].sql,
                     mismatched[i].types ? mismatched[i].types : "NULL", rc);
        assert_null(rows);
        rc = tr_store_exec(db, NULL, mismatched[i].sql, mismatched[i].types, "v", "w");
        assert_int_equal(rc, -EINVAL);
    }
    /* The failed binds left nothing behind. */
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM kv"), 1);
    tr_store_close(db);
}

static void test_cursor_rules(void **state)
{
    (void)state;
    tr_store_t *db = open_db("cursor.db");
    tr_rows_t *rows = NULL, *second = NULL;
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE t (v INTEGER)", NULL), 0);
    for (int64_t i = 1; i <= 3; i++)
        assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", i), 0);

    assert_int_equal(tr_store_query(db, &rows, "SELECT v FROM t ORDER BY v", NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_int_equal(tr_rows_int(rows, 0), 1);
    /* One cursor per connection: free it first. */
    assert_int_equal(tr_store_query(db, &second, "SELECT v FROM t ORDER BY v", NULL), -EINVAL);
    assert_null(second);
    assert_int_equal(tr_store_exec(db, NULL, "DELETE FROM t", NULL), -EINVAL);
    assert_int_equal(tr_store_begin(db), -EINVAL);
    assert_int_equal(tr_store_ping(db), -EINVAL);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_int_equal(tr_rows_int(rows, 0), 2);
    tr_rows_free(rows);
    tr_rows_free(NULL);

    /* Freed early, the same statement restarts from the first row. */
    assert_int_equal(tr_store_query(db, &rows, "SELECT v FROM t ORDER BY v", NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_int_equal(tr_rows_int(rows, 0), 1);

    /* Rollback closes an open cursor so error paths always recover. */
    assert_int_equal(tr_store_rollback(db), 0);
    assert_int_equal(tr_store_ping(db), 0);
    tr_rows_free(rows); /* already closed: harmless */
    assert_int_equal(tr_store_ping(db), 0);
    tr_store_close(db);
}

static void test_statement_cache(void **state)
{
    (void)state;
    tr_store_t *db = open_db("cache.db");
    size_t entries = 0;
    uint64_t hits0, misses0, hits, misses;
    char sql[128];

    assert_int_equal(
        tr_store_exec(db, NULL, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", NULL), 0);
    assert_int_equal(tr__store_sqlite_cache_stats(db, &entries, &hits0, &misses0), 0);
    for (int64_t i = 0; i < 1000; i++) {
        char v[32];
        snprintf(v, sizeof(v), "v%lld", (long long)i);
        assert_int_equal(
            tr_store_exec(db, NULL, "INSERT INTO t (k, v) VALUES ($1, $2)", "it", i, v), 0);
    }
    for (int64_t i = 0; i < 1000; i += 7) {
        tr_rows_t *rows = NULL;
        char want[32];
        snprintf(want, sizeof(want), "v%lld", (long long)i);
        assert_int_equal(tr_store_query(db, &rows, "SELECT v FROM t WHERE k = $1", "i", i), 0);
        assert_int_equal(tr_rows_next(rows), 1);
        assert_string_equal(tr_rows_text(rows, 0), want);
        tr_rows_free(rows);
    }
    assert_int_equal(tr__store_sqlite_cache_stats(db, &entries, &hits, &misses), 0);
    assert_int_equal(misses - misses0, 2);     /* each text prepared once... */
    assert_int_equal(hits - hits0, 999 + 142); /* ...and reused after */

    /* Many distinct texts: the cache stays bounded and results stay right. */
    for (int i = 0; i < 400; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d + $1", i);
        tr_rows_t *rows = NULL;
        assert_int_equal(tr_store_query(db, &rows, sql, "i", (int64_t)1), 0);
        assert_int_equal(tr_rows_next(rows), 1);
        assert_int_equal(tr_rows_int(rows, 0), i + 1);
        tr_rows_free(rows);
    }
    assert_int_equal(tr__store_sqlite_cache_stats(db, &entries, &hits, &misses), 0);
    assert_true(entries > 0 && entries <= 128);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM t"), 1000);

    /* A statement whose table changed underneath is re-prepared by SQLite. */
    assert_int_equal(tr_store_exec(db, NULL, "ALTER TABLE t ADD COLUMN w INTEGER", NULL), 0);
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, "SELECT v FROM t WHERE k = $1", "i", (int64_t)5), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_string_equal(tr_rows_text(rows, 0), "v5");
    tr_rows_free(rows);
    tr_store_close(db);
}

static void test_bad_sql(void **state)
{
    (void)state;
    tr_store_t *db = open_db("bad.db");
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_exec(db, NULL, "SELEC 1", NULL), TR_STORE_EERROR);
    assert_non_null(strstr(tr_store_errmsg(db), "syntax error"));
    assert_int_equal(tr_store_query(db, &rows, "SELECT * FROM missing_table", NULL),
                     TR_STORE_EERROR);
    assert_null(rows);
    assert_non_null(strstr(tr_store_errmsg(db), "missing_table"));
    /* Only migrations may run several statements at once. */
    assert_int_equal(tr_store_exec(db, NULL, "SELECT 1; SELECT 2", NULL), -EINVAL);
    assert_int_equal(tr_store_exec(db, NULL, "SELECT 1;  \n", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "SELECT 1; -- why\n/* more */", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "SELECT 1; -- why\nSELECT 2", NULL), -EINVAL);
    assert_int_equal(tr_store_exec(db, NULL, "", NULL), -EINVAL);
    assert_int_equal(tr_store_exec(db, NULL, "-- only a comment", NULL), -EINVAL);
    assert_int_equal(tr_store_ping(db), 0);
    tr_store_close(db);
    tr_store_close(NULL);
}

/* ---- writer lock and checkpointer (store_sqlite_shared.c) ----------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void path_in_tmpdir(char *out, size_t outlen, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", tmpdir, name);
    assert_true(n > 0 && (size_t)n < outlen);
}

static off_t file_size(const char *name)
{
    char path[PATH_MAX];
    struct stat st;
    path_in_tmpdir(path, sizeof(path), name);
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Threads of this process: the checkpointer threads show up here. */
static int thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    int n = 0;
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir));)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* A joined thread may stay listed for a moment while the kernel reaps it. */
static void assert_threads(int want)
{
    double deadline = now_seconds() + 2;
    int n;
    while ((n = thread_count()) != want && now_seconds() < deadline)
        usleep(1000);
    if (n != want) fail_msg("%d threads, want %d", n, want);
}

/* Makes a WAL database with 512-byte pages (so that a WAL of tens of
 * thousands of frames stays a few megabytes) holding items and totals. */
static void create_small_page_db(const char *name)
{
    char path[PATH_MAX];
    sqlite3 *raw = NULL;
    path_in_tmpdir(path, sizeof(path), name);
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw,
                                  "PRAGMA page_size = 512; PRAGMA journal_mode = WAL;"
                                  "CREATE TABLE items (id INTEGER PRIMARY KEY, worker INTEGER);"
                                  "CREATE TABLE totals (k INTEGER PRIMARY KEY, n INTEGER);"
                                  "INSERT INTO totals VALUES (1, 0);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_close(raw), SQLITE_OK);
}

static int wal_frames_of(const char *name)
{
    char wal[PATH_MAX];
    snprintf(wal, sizeof(wal), "%s-wal", name);
    off_t size = file_size(wal);
    return size <= 32 ? 0 : (int)((size - 32) / (512 + 24)); /* header, frame = header + page */
}

static tr__store_wal_stats_t wal_stats(tr_store_t *db)
{
    tr__store_wal_stats_t stats;
    assert_int_equal(tr__store_sqlite_wal_stats(db, &stats), 0);
    return stats;
}

typedef struct writer {
    const char *name;
    int index;
    int transactions;
    atomic_int *finished;
    int rc;
    char error[200];
} writer_t;

/* One committed unit of work as case `i % 5` of the mixed workload; case 4
 * is rolled back. Returns 0 or the first failure. */
static int mixed_unit(tr_store_t *db, int64_t id, int64_t worker, int i)
{
    const char *insert = "INSERT INTO items (id, worker) VALUES ($1, $2)";
    const char *bump = "UPDATE totals SET n = n + 1 WHERE k = 1";
    tr_rows_t *rows = NULL;
    int rc = 0;

    switch (i % 5) {
    case 0: /* a transaction */
        if ((rc = tr_store_begin(db)) == 0 &&
            (rc = tr_store_exec(db, NULL, insert, "ii", id, worker)) == 0 &&
            (rc = tr_store_exec(db, NULL, bump, NULL)) == 0)
            rc = tr_store_commit(db);
        break;
    case 1: /* autocommit statements */
        if ((rc = tr_store_exec(db, NULL, insert, "ii", id, worker)) == 0)
            rc = tr_store_exec(db, NULL, bump, NULL);
        return rc;
    case 2: { /* read-modify-write: loses updates unless writers serialize */
        int64_t n = -1;
        if ((rc = tr_store_begin(db)) != 0) break;
        if ((rc = tr_store_query(db, &rows, "SELECT n FROM totals WHERE k = 1", NULL)) != 0) break;
        if ((rc = tr_rows_next(rows)) == 1) n = tr_rows_int(rows, 0);
        tr_rows_free(rows);
        if (rc != 1) {
            rc = rc == 0 ? -ENOENT : rc;
            break;
        }
        if ((rc = tr_store_exec(db, NULL, insert, "ii", id, worker)) == 0 &&
            (rc = tr_store_exec(db, NULL, "UPDATE totals SET n = $1 WHERE k = 1", "i", n + 1)) == 0)
            rc = tr_store_commit(db);
        break;
    }
    case 3: /* a writing cursor outside a transaction */
        if ((rc = tr_store_query(db, &rows,
                                 "INSERT INTO items (id, worker) VALUES ($1, $2) RETURNING id",
                                 "ii", id, worker)) != 0)
            return rc;
        rc = tr_rows_next(rows) == 1 && tr_rows_int(rows, 0) == id && tr_rows_next(rows) == 0
                 ? 0
                 : -EPROTO;
        tr_rows_free(rows);
        if (rc == 0) rc = tr_store_exec(db, NULL, bump, NULL);
        return rc;
    default: /* rolled back: leaves nothing */
        if ((rc = tr_store_begin(db)) == 0 &&
            (rc = tr_store_exec(db, NULL, insert, "ii", id, worker)) == 0 &&
            (rc = tr_store_exec(db, NULL, bump, NULL)) == 0)
            rc = tr_store_rollback(db);
        return rc;
    }
    if (rc != 0) tr_store_rollback(db);
    return rc;
}

static void *mixed_writer_main(void *arg)
{
    writer_t *w = arg;
    tr_store_t *db = NULL;
    char url[PATH_MAX + 32];
    snprintf(url, sizeof(url), "sqlite://%s/%s", tmpdir, w->name);
    if ((w->rc = tr_store_open(url, &db)) != 0) {
        snprintf(w->error, sizeof(w->error), "open: %s", tr_store_errmsg(NULL));
        goto out;
    }
    /* No waiting on SQLite's lock: any write that reaches it while another
     * connection of this process holds it fails at once with EBUSY. */
    w->rc = tr_store_exec(db, NULL, "PRAGMA busy_timeout = 0", NULL);
    for (int i = 0; i < w->transactions && w->rc == 0; i++)
        w->rc = mixed_unit(db, (int64_t)w->index * 1000000 + i, w->index, i);
    if (w->rc != 0) snprintf(w->error, sizeof(w->error), "%s", tr_store_errmsg(db));
    tr_store_close(db);
out:
    atomic_fetch_add(w->finished, 1);
    return NULL;
}

/* Runs `count` writers on name; calls sample() until they are all done. */
static void run_writers(const char *name, int count, int transactions, void (*sample)(const char *))
{
    enum { MAX_WRITERS = 8 };
    pthread_t threads[MAX_WRITERS];
    writer_t writers[MAX_WRITERS];
    atomic_int finished = 0;
    assert_true(count <= MAX_WRITERS);
    for (int i = 0; i < count; i++) {
        writers[i] = (writer_t){
            .name = name, .index = i, .transactions = transactions, .finished = &finished};
        assert_int_equal(pthread_create(&threads[i], NULL, mixed_writer_main, &writers[i]), 0);
    }
    while (atomic_load(&finished) < count) {
        if (sample) sample(name);
        usleep(200);
    }
    for (int i = 0; i < count; i++) {
        pthread_join(threads[i], NULL);
        if (writers[i].rc != 0) fail_msg("writer %d: %d %s", i, writers[i].rc, writers[i].error);
    }
}

/* Rows and total a mixed workload of this size must leave. */
static int64_t mixed_expected(int writers, int transactions)
{
    int64_t per_writer = transactions / 5 * 4 + (transactions % 5 < 4 ? transactions % 5 : 4);
    return writers * per_writer;
}

static void test_concurrent_writers(void **state)
{
    (void)state;
    enum { WRITERS = 4, TRANSACTIONS = 1500 };
    tr_store_t *db = open_db("writers.db");
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TABLE items (id INTEGER PRIMARY KEY, worker INTEGER)",
                                   NULL),
                     0);
    assert_int_equal(
        tr_store_exec(db, NULL, "CREATE TABLE totals (k INTEGER PRIMARY KEY, n INTEGER)", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO totals VALUES (1, 0)", NULL), 0);

    run_writers("writers.db", WRITERS, TRANSACTIONS, NULL);

    int64_t want = mixed_expected(WRITERS, TRANSACTIONS);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM items"), want);
    assert_int_equal(teststore_query_int(db, "SELECT n FROM totals WHERE k = 1"), want);
    for (int i = 0; i < WRITERS; i++) {
        tr_rows_t *rows = NULL;
        assert_int_equal(tr_store_query(db, &rows, "SELECT COUNT(*) FROM items WHERE worker = $1",
                                        "i", (int64_t)i),
                         0);
        assert_int_equal(tr_rows_next(rows), 1);
        assert_int_equal(tr_rows_int(rows, 0), want / WRITERS);
        tr_rows_free(rows);
    }
    tr_store_close(db);
}

/* Two connections of one thread: the second must not wait for the first,
 * which cannot commit while its thread waits. */
static void test_same_thread_second_writer(void **state)
{
    (void)state;
    char target[PATH_MAX], link_path[PATH_MAX], url[PATH_MAX + 32];
    tr_store_t *a = open_db("samethread.db"), *b = NULL, *c = NULL;
    assert_int_equal(tr_store_exec(a, NULL, "CREATE TABLE t (v INTEGER)", NULL), 0);
    /* Other spellings of the path find the same writer lock. */
    assert_int_equal(tr_store_open("sqlite://./samethread.db", &b), 0);
    path_in_tmpdir(target, sizeof(target), "samethread.db");
    path_in_tmpdir(link_path, sizeof(link_path), "samethread-link.db");
    assert_int_equal(symlink(target, link_path), 0);
    snprintf(url, sizeof(url), "sqlite://%s", link_path);
    assert_int_equal(tr_store_open(url, &c), 0);

    assert_int_equal(tr_store_begin(a), 0);
    assert_int_equal(tr_store_exec(a, NULL, "INSERT INTO t VALUES (1)", NULL), 0);
    double start = now_seconds();
    /* SQLite's busy timeout (5 s) would run out first without our lock. */
    assert_int_equal(tr_store_begin(b), TR_STORE_EBUSY);
    assert_non_null(strstr(tr_store_errmsg(b), "locked"));
    assert_int_equal(tr_store_exec(c, NULL, "INSERT INTO t VALUES (2)", NULL), TR_STORE_EBUSY);
    assert_true(now_seconds() - start < 1.0);
    assert_int_equal(teststore_query_int(b, "SELECT COUNT(*) FROM t"), 0); /* reads go on */
    assert_int_equal(tr_store_commit(a), 0);

    assert_int_equal(tr_store_begin(b), 0);
    assert_int_equal(tr_store_exec(b, NULL, "INSERT INTO t VALUES (3)", NULL), 0);
    assert_int_equal(tr_store_commit(b), 0);
    assert_int_equal(tr_store_exec(c, NULL, "INSERT INTO t VALUES (4)", NULL), 0);
    assert_int_equal(teststore_query_int(a, "SELECT SUM(v) FROM t"), 8);
    tr_store_close(c);
    tr_store_close(b);
    tr_store_close(a);
}

/* The writer lock of the file is free: a second connection of this thread
 * can write at once (it would get EBUSY at once if the lock were held). */
static void assert_writer_free(tr_store_t *other)
{
    assert_int_equal(tr_store_begin(other), 0);
    assert_int_equal(tr_store_rollback(other), 0);
}

static void assert_writer_held(tr_store_t *other)
{
    assert_int_equal(tr_store_begin(other), TR_STORE_EBUSY);
}

static void test_writer_released_on_every_path(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tr_store_t *db = open_db("release.db"), *other = open_db("release.db");
    tr_rows_t *rows = NULL;
    sqlite3 *foreign = NULL;

    assert_int_equal(
        tr_store_exec(db, NULL, "CREATE TABLE u (id INTEGER PRIMARY KEY, email TEXT UNIQUE)", NULL),
        0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO u VALUES (1, 'a@x')", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TABLE child (id INTEGER PRIMARY KEY, "
                                   "u INTEGER REFERENCES u (id) DEFERRABLE INITIALLY DEFERRED)",
                                   NULL),
                     0);
    /* RAISE(ROLLBACK) ends the whole transaction from inside a statement. */
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE doomed (v INTEGER)", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL,
                                   "CREATE TRIGGER doom BEFORE INSERT ON doomed "
                                   "BEGIN SELECT RAISE(ROLLBACK, 'doomed'); END",
                                   NULL),
                     0);
    assert_writer_free(other);

    /* A failed statement inside a transaction keeps it (and the lock) until
     * the rollback. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_writer_held(other);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO u VALUES (2, 'a@x')", NULL),
                     TR_STORE_ECONSTRAINT);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO nowhere VALUES (1)", NULL),
                     TR_STORE_EERROR);
    assert_int_equal(tr_store_begin(db), TR_STORE_EERROR); /* nested */
    assert_writer_held(other);
    assert_int_equal(tr_store_rollback(db), 0);
    assert_writer_free(other);

    /* A write refused by the one-cursor rule; the rollback closes both. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_query(db, &rows, "SELECT id FROM u", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "DELETE FROM u", NULL), -EINVAL);
    assert_writer_held(other);
    assert_int_equal(tr_store_rollback(db), 0);
    assert_writer_free(other);

    /* SQLite rolling the transaction back by itself releases at once; the
     * cleanup rollback after it is a no-op. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO doomed VALUES (1)", NULL),
                     TR_STORE_ECONSTRAINT);
    assert_writer_free(other);
    assert_int_equal(tr_store_rollback(db), 0);

    /* A commit refused by a deferred constraint leaves the transaction open. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO child VALUES (1, 99)", NULL), 0);
    assert_int_equal(tr_store_commit(db), TR_STORE_ECONSTRAINT);
    assert_writer_held(other);
    assert_int_equal(tr_store_rollback(db), 0);
    assert_writer_free(other);

    /* A writing cursor outside a transaction holds the lock until freed,
     * whether it succeeds or fails. */
    assert_int_equal(
        tr_store_query(db, &rows, "INSERT INTO u VALUES (3, 'c@x') RETURNING id", NULL), 0);
    assert_writer_held(other);
    assert_int_equal(tr_rows_next(rows), 1);
    tr_rows_free(rows);
    assert_writer_free(other);
    assert_int_equal(
        tr_store_query(db, &rows, "INSERT INTO u VALUES (4, 'a@x') RETURNING id", NULL), 0);
    assert_int_equal(tr_rows_next(rows), TR_STORE_ECONSTRAINT);
    tr_rows_free(rows);
    assert_writer_free(other);
    assert_int_equal(tr_store_query(db, &rows, "SELECT id FROM u", NULL),
                     0); /* reads take nothing */
    assert_writer_free(other);
    tr_rows_free(rows);

    /* Transactions opened by hand are serialized too. */
    assert_int_equal(tr_store_exec(db, NULL, "BEGIN", NULL), 0);
    assert_writer_held(other);
    assert_int_equal(tr_store_exec(db, NULL, "COMMIT", NULL), 0);
    assert_writer_free(other);

    /* Another process holding SQLite's lock: BEGIN and an autocommit write
     * fail with EBUSY and release ours. */
    path_in_tmpdir(path, sizeof(path), "release.db");
    assert_int_equal(sqlite3_open(path, &foreign), SQLITE_OK);
    assert_int_equal(sqlite3_exec(foreign, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(tr_store_exec(db, NULL, "PRAGMA busy_timeout = 0", NULL), 0);
    assert_int_equal(tr_store_begin(db), TR_STORE_EBUSY);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO u VALUES (5, 'e@x')", NULL),
                     TR_STORE_EBUSY);
    assert_int_equal(sqlite3_exec(foreign, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(foreign), SQLITE_OK);
    assert_writer_free(other);

    /* A failed migration. */
    const tr_migration_t broken[] = {
        {1, "0001_broken", "CREATE TABLE half (a INTEGER); INSERT INTO nowhere VALUES (1);", NULL}};
    assert_int_equal(migrate_list(db, broken, 1), TR_STORE_EERROR);
    assert_writer_free(other);

    /* Closing inside a transaction. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO u VALUES (6, 'f@x')", NULL), 0);
    tr_store_close(db);
    assert_writer_free(other);
    assert_int_equal(teststore_query_int(other, "SELECT COUNT(*) FROM u"), 2);
    tr_store_close(other);
}

static int max_wal_frames;

static void sample_wal(const char *name)
{
    int frames = wal_frames_of(name);
    if (frames > max_wal_frames) max_wal_frames = frames;
}

static void test_wal_stays_bounded(void **state)
{
    (void)state;
    enum { WRITERS = 4, TRANSACTIONS = 10000 };
    create_small_page_db("bounded.db");
    tr_store_t *db = open_db("bounded.db");

    max_wal_frames = 0;
    run_writers("bounded.db", WRITERS, TRANSACTIONS, sample_wal);
    sample_wal("bounded.db");

    int64_t want = mixed_expected(WRITERS, TRANSACTIONS);
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM items"), want);
    assert_int_equal(teststore_query_int(db, "SELECT n FROM totals WHERE k = 1"), want);
    /* Each unit of work writes at least two pages (an items leaf and the
     * totals row), so without checkpoints the WAL would reach three times
     * the limit. It may overshoot the limit by what is written while the
     * checkpointer gets to it, more so when the machine is busy. */
    assert_true(want * 2 > 3 * TR__SQLITE_WAL_LIMIT_FRAMES);
    if (max_wal_frames > 2 * TR__SQLITE_WAL_LIMIT_FRAMES)
        fail_msg("WAL grew to %d frames", max_wal_frames);
    assert_true(wal_stats(db).checkpoints > 0);
    tr_store_close(db);
}

/* A reader holding an old snapshot stops every checkpoint, so the WAL
 * outgrows the limit, but writes go on (the forced checkpoints tried
 * meanwhile give up); once the reader is gone the WAL comes back. */
static void test_wal_limit_after_pinning_reader(void **state)
{
    (void)state;
    char path[PATH_MAX];
    sqlite3 *reader = NULL;
    create_small_page_db("pinned.db");
    tr_store_t *db = open_db("pinned.db");

    path_in_tmpdir(path, sizeof(path), "pinned.db");
    assert_int_equal(sqlite3_open(path, &reader), SQLITE_OK);
    assert_int_equal(sqlite3_exec(reader, "BEGIN; SELECT COUNT(*) FROM items", NULL, NULL, NULL),
                     SQLITE_OK);
    int64_t i = 0;
    /* Writes never fail meanwhile, though forced checkpoints are tried. */
    while (wal_stats(db).wal_frames <= TR__SQLITE_WAL_LIMIT_FRAMES + 1000) {
        assert_int_equal(mixed_unit(db, ++i, 0, 0), 0);
        assert_true(i < 4 * TR__SQLITE_WAL_LIMIT_FRAMES);
    }
    assert_int_equal(wal_stats(db).restarts, 0);
    assert_int_equal(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(reader), SQLITE_OK);

    double deadline = now_seconds() + 10;
    while (wal_stats(db).wal_frames > TR__SQLITE_WAL_LIMIT_FRAMES / 2) {
        assert_true(now_seconds() < deadline);
        assert_int_equal(mixed_unit(db, ++i, 0, 0), 0);
    }
    assert_int_equal(teststore_query_int(db, "SELECT COUNT(*) FROM items"), i);
    tr_store_close(db);
}

static void test_periodic_checkpoint(void **state)
{
    (void)state;
    enum { BLOB = 200 * 1024 };
    char *text = malloc(BLOB + 1);
    memset(text, 'x', BLOB);
    text[BLOB] = '\0';
    tr_store_t *db = open_db("periodic.db");
    assert_int_equal(tr_store_exec(db, NULL, "CREATE TABLE blobs (v TEXT)", NULL), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO blobs VALUES ($1)", "t", text), 0);
    free(text);
    /* About 50 frames, far below the wake-up threshold: only the periodic
     * checkpoint copies them into the database file. */
    double deadline = now_seconds() + 3.0 * TR__SQLITE_CHECKPOINT_PERIOD_MS / 1000;
    while (file_size("periodic.db") < BLOB || wal_stats(db).checkpoints < 1) {
        assert_true(now_seconds() < deadline);
        usleep(10000);
    }
    assert_int_equal(wal_stats(db).restarts, 0);
    tr_store_close(db);
}

static void test_last_close_joins_checkpointer(void **state)
{
    (void)state;
    int base = thread_count(), settled;
    while (usleep(10000), (settled = thread_count()) < base)
        base = settled;
    tr_store_t *a = open_db("lifetime.db");
    assert_threads(base + 1);
    tr_store_t *b = open_db("lifetime.db");
    assert_threads(base + 1); /* one thread per file */
    tr_store_t *other = open_db("lifetime-other.db");
    assert_threads(base + 2);
    tr_store_t *memory = NULL;
    assert_int_equal(tr_store_open("sqlite://:memory:", &memory), 0);
    assert_threads(base + 2); /* nothing to share */
    assert_int_equal(tr__store_sqlite_wal_stats(memory, &(tr__store_wal_stats_t){0}), -EINVAL);
    tr_store_close(memory);

    assert_int_equal(tr_store_exec(a, NULL, "CREATE TABLE t (v INTEGER)", NULL), 0);
    for (int64_t i = 0; i < 100; i++)
        assert_int_equal(tr_store_exec(b, NULL, "INSERT INTO t VALUES ($1)", "i", i), 0);
    tr_store_close(a);
    assert_threads(base + 2);
    assert_true(file_size("lifetime.db-wal") > 0);
    tr_store_close(b);
    assert_threads(base + 1);
    assert_int_equal(file_size("lifetime.db-wal"), 0); /* checkpointed and emptied */
    tr_store_close(other);
    assert_threads(base);

    /* And a new start gets a new thread. */
    a = open_db("lifetime.db");
    assert_threads(base + 1);
    assert_int_equal(teststore_query_int(a, "SELECT COUNT(*) FROM t"), 100);
    tr_store_close(a);
    assert_threads(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_settings),
        cmocka_unit_test(test_url_forms),
        cmocka_unit_test(test_migrate_idempotent),
        cmocka_unit_test(test_migrate_failure_is_atomic),
        cmocka_unit_test(test_migrate_concurrent_processes),
        cmocka_unit_test(test_types_and_nulls),
        cmocka_unit_test(test_query_params_are_copied),
        cmocka_unit_test(test_constraints),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_parameter_order),
        cmocka_unit_test(test_cursor_rules),
        cmocka_unit_test(test_statement_cache),
        cmocka_unit_test(test_bad_sql),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_same_thread_second_writer),
        cmocka_unit_test(test_writer_released_on_every_path),
        cmocka_unit_test(test_wal_stays_bounded),
        cmocka_unit_test(test_wal_limit_after_pinning_reader),
        cmocka_unit_test(test_periodic_checkpoint),
        cmocka_unit_test(test_last_close_joins_checkpointer),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

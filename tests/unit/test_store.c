/*
 * test_store.c - the store over SQLite (kit/store.h): URLs, connection
 * settings, migrations (idempotent, atomic, concurrent), parameter types and
 * parameter order, error codes, transactions, cursors and the statement cache.
 *
 * Every database lives in one mkdtemp directory removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kit/store.h"
#include "kit/store_engine.h"

static char tmpdir[256];
static char oldcwd[PATH_MAX];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/trellis-test-store-XXXXXX");
    if (!mkdtemp(tmpdir) || !getcwd(oldcwd, sizeof(oldcwd))) return -1;
    /* Relative URLs in the tests resolve inside the temporary directory. */
    return chdir(tmpdir);
}

static int group_teardown(void **state)
{
    (void)state;
    if (chdir(oldcwd) != 0) return -1;
    return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
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

/* Runs a query expected to return one row and returns column 0 as int. */
static int64_t query_int(tr_store_t *db, const char *sql)
{
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, sql, NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    int64_t v = tr_rows_int(rows, 0);
    tr_rows_free(rows);
    return v;
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
    assert_int_equal(query_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(query_int(db, "PRAGMA busy_timeout"), 5000);
    assert_int_equal(query_int(db, "PRAGMA synchronous"), 1); /* NORMAL */
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
        {"postgres://app:hunter2@db.example/app", -ENOTSUP},
        {"postgresql://app:hunter2@db.example/app", -ENOTSUP},
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
    tr_store_open("postgres://x@y/z", &db);
    assert_non_null(strstr(tr_store_errmsg(NULL), "postgres"));

    /* A directory that does not exist cannot hold a database. */
    snprintf(path, sizeof(path), "sqlite://%s/missing/dir/x.db", tmpdir);
    assert_int_equal(tr_store_open(path, &db), TR_STORE_EERROR);
    assert_null(db);
    assert_non_null(strstr(tr_store_errmsg(NULL), "missing/dir"));
}

static const tr_migration_t base_migrations[] = {
    {1, "0001_accounts",
     "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);\n"
     "CREATE INDEX accounts_email ON accounts (email);"},
    {2, "0002_seed", "INSERT INTO accounts (email) VALUES ('root@example.com');"},
};

static void test_migrate_idempotent(void **state)
{
    (void)state;
    tr_store_t *db = open_db("migrate.db");
    char applied_at[64];

    assert_int_equal(tr_store_migrate(db, base_migrations, 2), 0);
    assert_int_equal(tr_store_migrate(db, base_migrations, 2), 0);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM accounts"), 1); /* seed ran once */
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 2);
    assert_int_equal(query_int(db, "SELECT MAX(version) FROM schema_migrations"), 2);

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
        {3, "0003_names", "ALTER TABLE accounts ADD COLUMN name TEXT;"},
    };
    db = open_db("migrate.db");
    assert_int_equal(tr_store_migrate(db, more, 3), 0);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM accounts"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 3);
    assert_int_equal(tr_store_exec(db, NULL, "UPDATE accounts SET name = $1", "t", "root"), 0);
    assert_int_equal(tr_store_migrate(db, NULL, 0), 0);
    tr_store_close(db);
}

static void test_migrate_failure_is_atomic(void **state)
{
    (void)state;
    tr_store_t *db = open_db("migrate_fail.db");
    const tr_migration_t broken[] = {
        base_migrations[0],
        {2, "0002_broken", "CREATE TABLE half (a INTEGER);\nINSERT INTO nowhere VALUES (1);"},
    };
    assert_int_equal(tr_store_migrate(db, broken, 2), TR_STORE_EERROR);
    assert_non_null(strstr(tr_store_errmsg(db), "nowhere"));
    assert_true(table_exists(db, "accounts"));
    assert_false(table_exists(db, "half")); /* the whole migration rolled back */
    assert_int_equal(query_int(db, "SELECT MAX(version) FROM schema_migrations"), 1);
    /* The connection is usable and not left inside a transaction. */
    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_commit(db), 0);

    const tr_migration_t unordered[] = {
        {2, "0002_b", "SELECT 1;"},
        {1, "0001_a", "SELECT 1;"},
    };
    assert_int_equal(tr_store_migrate(db, unordered, 2), -EINVAL);
    const tr_migration_t zero[] = {{0, "0000_zero", "SELECT 1;"}};
    assert_int_equal(tr_store_migrate(db, zero, 1), -EINVAL);
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
            if (rc == 0) rc = tr_store_migrate(db, migs, count);
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
        {1, "0001_counter", "CREATE TABLE applied (n INTEGER);"},
        {2, "0002_count", "INSERT INTO applied VALUES (2);"},
        {3, "0003_count", "INSERT INTO applied VALUES (3);"},
        {4, "0004_count", "INSERT INTO applied VALUES (4);"},
        {5, "0005_count", "INSERT INTO applied VALUES (5);"},
    };
    /* A race shows up only sometimes, so run several. */
    for (int round = 0; round < 6; round++) {
        char name[64];
        snprintf(name, sizeof(name), "concurrent%d.db", round);
        assert_int_equal(migrate_race(name, migs, 5), 0);
        tr_store_t *db = open_db(name);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM applied"), 4);
        assert_int_equal(query_int(db, "SELECT SUM(n) FROM applied"), 14);
        assert_int_equal(query_int(db, "SELECT COUNT(*) FROM schema_migrations"), 5);
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
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM t WHERE name IS NULL"), 1);

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

    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM users"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM posts"), 0);
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
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM t"), 1);
    assert_int_equal(query_int(other, "SELECT COUNT(*) FROM t"), 0); /* not yet visible */

    /* A second writer meets the write lock; with no busy timeout it is
     * refused at once, as TR_STORE_EBUSY. */
    assert_int_equal(tr_store_exec(other, NULL, "PRAGMA busy_timeout = 0", NULL), 0);
    assert_int_equal(tr_store_begin(other), TR_STORE_EBUSY);

    assert_int_equal(tr_store_rollback(db), 0);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM t"), 0);
    assert_int_equal(query_int(other, "SELECT COUNT(*) FROM t"), 0);

    assert_int_equal(tr_store_begin(db), 0);
    assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO t VALUES ($1)", "i", (int64_t)2), 0);
    assert_int_equal(tr_store_commit(db), 0);
    assert_int_equal(query_int(other, "SELECT SUM(v) FROM t"), 2);

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
    assert_int_equal(query_int(db, "SELECT v FROM kv WHERE k = 'key'"), 9);

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
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM kv"), 1);
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
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM t"), 1000);

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
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

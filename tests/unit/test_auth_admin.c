/*
 * test_auth_admin.c - what `trellis admin` does to the auth database
 * (services/auth/auth_admin.c) and the schema it relies on: creating users
 * (normalisation, validation, duplicates, a hash that verifies) and listing
 * the outbox (filter, order, paging).
 *
 * Each test gets a fresh SQLite file, migrated with the embedded schema,
 * in one mkdtemp directory removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/crypto.h"
#include "kit/ids.h"
#include "kit/store.h"
#include "services/auth/auth.h"
#include "testutil.h"

static char tmpdir[256];
static int db_seq;
static const tr_pwhash_params_t params = {.opslimit = 2, .memlimit = 19u * 1024 * 1024};

static int group_setup(void **state)
{
    (void)state;
    return testutil_tmpdir(tmpdir, sizeof(tmpdir), "auth");
}

static int group_teardown(void **state)
{
    (void)state;
    return testutil_remove_tree(tmpdir);
}

static int db_setup(void **state)
{
    char url[PATH_MAX];
    tr_store_t *db = NULL;
    snprintf(url, sizeof(url), "sqlite://%s/auth-%d.db", tmpdir, ++db_seq);
    if (tr_store_open(url, &db) != 0) return -1;
    if (tr_store_migrate(db, &auth_migrations) != 0) {
        tr_store_close(db);
        return -1;
    }
    *state = db;
    return 0;
}

static int db_teardown(void **state)
{
    tr_store_close(*state);
    return 0;
}

static const char *str(json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    if (!v) fail_msg("field %s missing", key);
    return v;
}

static void test_create_user(void **state)
{
    tr_store_t *db = *state;
    json_t *user = NULL;
    char err[256] = "";

    assert_int_equal(auth_create_user(db, &params, "  Root@Example.TEST ", "correct horse", "Root",
                                      "admin", &user, err, sizeof(err)),
                     0);
    assert_string_equal(str(user, "email"), "root@example.test");
    assert_string_equal(str(user, "role"), "admin");
    assert_string_equal(str(user, "name"), "Root");
    assert_true(tr_uuid_valid(str(user, "id")));
    assert_int_equal(strlen(str(user, "created_at")), 24);
    assert_null(json_object_get(user, "password_hash"));

    /* The stored hash is argon2id of the password. */
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, "SELECT password_hash FROM users WHERE email = $1",
                                    "t", "root@example.test"),
                     0);
    assert_int_equal(tr_rows_next(rows), 1);
    const char *hash = tr_rows_text(rows, 0);
    assert_memory_equal(hash, "$argon2id$", 10);
    assert_true(tr_password_verify(hash, "correct horse", 13));
    assert_false(tr_password_verify(hash, "wrong horse", 11));
    tr_rows_free(rows);
    json_decref(user);
}

static void test_create_user_defaults_to_role_user(void **state)
{
    tr_store_t *db = *state;
    json_t *user = NULL;
    char err[256] = "";
    assert_int_equal(auth_create_user(db, &params, "a@b.example", "12345678", NULL, NULL, &user,
                                      err, sizeof(err)),
                     0);
    assert_string_equal(str(user, "role"), "user");
    assert_string_equal(str(user, "name"), "");
    json_decref(user);
}

static void test_create_user_duplicate(void **state)
{
    tr_store_t *db = *state;
    json_t *user = NULL;
    char err[256] = "";
    assert_int_equal(auth_create_user(db, &params, "dup@example.test", "password1", NULL, NULL,
                                      &user, err, sizeof(err)),
                     0);
    json_decref(user);
    user = NULL;
    assert_int_equal(auth_create_user(db, &params, "DUP@example.test", "password2", NULL, NULL,
                                      &user, err, sizeof(err)),
                     -EEXIST);
    assert_null(user);
    assert_non_null(strstr(err, "dup@example.test"));
}

static void test_create_user_invalid(void **state)
{
    tr_store_t *db = *state;
    static const struct {
        const char *email, *password, *name, *role, *field;
    } cases[] = {
        {"not-an-email", "password1", NULL, NULL, "email"},
        {NULL, "password1", NULL, NULL, "email"},
        {"x@example.test", "short", NULL, NULL, "password"},
        {"x@example.test", NULL, NULL, NULL, "password"},
        {"x@example.test", "password1", NULL, "emperor", "role"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *user = NULL;
        char err[256] = "";
        int rc = auth_create_user(db, &params, cases[i].email, cases[i].password, cases[i].name,
                                  cases[i].role, &user, err, sizeof(err));
        if (rc != -EINVAL || strncmp(err, cases[i].field, strlen(cases[i].field)) != 0)
            fail_msg("case %zu: rc %d err \"%s\"", i, rc, err);
        assert_null(user);
    }
    /* Nothing was written. */
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, "SELECT COUNT(*) FROM users", NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    assert_int_equal(tr_rows_int(rows, 0), 0);
    tr_rows_free(rows);
}

static void test_schema_refuses_unknown_role(void **state)
{
    tr_store_t *db = *state;
    int rc = tr_store_exec(db, NULL,
                           "INSERT INTO users (id, email, password_hash, role, created_at, "
                           "updated_at) VALUES ('x', 'r@example.test', 'h', 'emperor', 0, 0)",
                           NULL);
    assert_int_equal(rc, TR_STORE_ECONSTRAINT);
}

static void add_message(tr_store_t *db, const char *recipient, const char *payload)
{
    char id[TR_UUID_LEN + 1];
    tr_uuid7(id);
    assert_int_equal(tr_store_exec(db, NULL,
                                   "INSERT INTO outbox (id, kind, recipient, payload, created_at) "
                                   "VALUES ($1, 'password_reset', $2, $3, $4)",
                                   "ttti", id, recipient, payload, tr_now_ms()),
                     0);
}

static void test_outbox_filter_and_order(void **state)
{
    tr_store_t *db = *state;
    json_t *items = NULL;
    char *next = NULL;

    add_message(db, "a@example.test", "{\"token\":\"first\"}");
    add_message(db, "b@example.test", "{\"token\":\"other\"}");
    add_message(db, "a@example.test", "{\"token\":\"second\"}");
    assert_int_equal(tr_store_exec(db, NULL,
                                   "UPDATE outbox SET delivered_at = 1 WHERE recipient = $1", "t",
                                   "b@example.test"),
                     0);

    assert_int_equal(auth_outbox_pending(db, " A@Example.test ", 10, NULL, &items, &next), 0);
    assert_null(next);
    assert_int_equal(json_array_size(items), 2);
    json_t *newest = json_array_get(items, 0);
    assert_string_equal(str(newest, "recipient"), "a@example.test");
    assert_string_equal(str(newest, "kind"), "password_reset");
    assert_string_equal(str(json_object_get(newest, "payload"), "token"), "second");
    assert_string_equal(str(json_object_get(json_array_get(items, 1), "payload"), "token"),
                        "first");
    json_decref(items);

    /* Delivered messages are not pending. */
    assert_int_equal(auth_outbox_pending(db, "b@example.test", 10, NULL, &items, NULL), 0);
    assert_int_equal(json_array_size(items), 0);
    json_decref(items);
}

static void test_outbox_paging(void **state)
{
    tr_store_t *db = *state;
    char *cursor = NULL;
    int seen = 0, pages = 0;

    for (int i = 0; i < 7; i++)
        add_message(db, "p@example.test", "{}");
    do {
        json_t *items = NULL;
        char *next = NULL;
        assert_int_equal(auth_outbox_pending(db, NULL, 3, cursor, &items, &next), 0);
        seen += (int)json_array_size(items);
        pages++;
        assert_true(json_array_size(items) <= 3);
        json_decref(items);
        free(cursor);
        cursor = next;
    } while (cursor && pages < 10);
    assert_int_equal(seen, 7);
    assert_int_equal(pages, 3);

    json_t *items = NULL;
    assert_int_equal(auth_outbox_pending(db, NULL, 0, NULL, &items, NULL), -EINVAL);
    assert_null(items);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_user, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_create_user_defaults_to_role_user, db_setup,
                                        db_teardown),
        cmocka_unit_test_setup_teardown(test_create_user_duplicate, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_create_user_invalid, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_schema_refuses_unknown_role, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_outbox_filter_and_order, db_setup, db_teardown),
        cmocka_unit_test_setup_teardown(test_outbox_paging, db_setup, db_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * test_paging.c - the kit's cursor pagination (kit/paging.h): ?limit=
 * parsing, the opaque cursor codec, and collecting one page from a real
 * query (an in-memory SQLite store), including the extra row that announces
 * the next page and a re-run collect. Also the small helpers handlers use
 * around it: tr_time_json (kit/ids.h) and tr_rows_first_int (kit/store.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kit/ids.h"
#include "kit/paging.h"
#include "kit/store.h"

static void test_limits(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc, want;
    } cases[] = {
        {NULL, 0, 20},       {"1", 0, 1},        {"20", 0, 20},
        {"100", 0, 100},     {"101", 0, 100},    {"99999999999999999999", 0, 100},
        {"0", -EINVAL, 0},   {"", -EINVAL, 0},   {"-1", -EINVAL, 0},
        {"+5", -EINVAL, 0},  {"5x", -EINVAL, 0}, {" 5", -EINVAL, 0},
        {"1.5", -EINVAL, 0}, {"00", -EINVAL, 0}, {"007", 0, 7},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = -1;
        int rc = tr_page_parse_limit(cases[i].text, &got);
        if (rc != cases[i].rc || (rc == 0 && got != cases[i].want))
            fail_msg("limit \"%s\": rc %d value %d", cases[i].text ? cases[i].text : "(none)", rc,
                     got);
    }
}

static void test_cursor_round_trip(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "0192f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f",               /* a UUIDv7 row id */
        "1733312345678,0192f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f", /* (created_at, id) */
        "x",
        "~ !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char cursor[TR_PAGE_CURSOR_MAX + 1], back[TR_PAGE_KEY_MAX + 1];
        assert_int_equal(tr_page_cursor_encode(keys[i], cursor), 0);
        /* Opaque: not the key in clear, and only URL-safe characters. */
        assert_null(strstr(cursor, keys[i]));
        assert_int_equal(strspn(cursor, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789-_"),
                         strlen(cursor));
        assert_int_equal(tr_page_cursor_decode(cursor, back), 0);
        assert_string_equal(back, keys[i]);
    }
    /* The longest key fits exactly; one more byte is refused. */
    char key[TR_PAGE_KEY_MAX + 2], cursor[TR_PAGE_CURSOR_MAX + 1], back[TR_PAGE_KEY_MAX + 1];
    memset(key, 'k', TR_PAGE_KEY_MAX);
    key[TR_PAGE_KEY_MAX] = '\0';
    assert_int_equal(tr_page_cursor_encode(key, cursor), 0);
    assert_true(strlen(cursor) <= TR_PAGE_CURSOR_MAX);
    assert_int_equal(tr_page_cursor_decode(cursor, back), 0);
    assert_string_equal(back, key);
    key[TR_PAGE_KEY_MAX] = 'k';
    key[TR_PAGE_KEY_MAX + 1] = '\0';
    assert_int_equal(tr_page_cursor_encode(key, cursor), -EINVAL);
}

static void test_cursor_refused(void **state)
{
    (void)state;
    char big[TR_PAGE_CURSOR_MAX + 8];
    memset(big, 'A', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    static const struct {
        const char *what, *cursor;
    } cases[] = {
        {"empty", ""},
        {"a raw UUID (the old clear cursor)", "0192f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"},
        {"padding", "eA=="},
        {"standard alphabet", "a+b/"},
        {"whitespace", "eHl6 "},
        {"impossible length", "eHl6e"},
        {"decodes to a NUL byte", "AA"},
        {"decodes to a control byte", "Cg"}, /* "\n" */
        {"decodes to non-ASCII", "w6k"},     /* "é" */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[TR_PAGE_KEY_MAX + 1] = "junk";
        if (tr_page_cursor_decode(cases[i].cursor, out) != -EINVAL || out[0] != '\0')
            fail_msg("%s (\"%s\") was accepted as \"%s\"", cases[i].what, cases[i].cursor, out);
    }
    char out[TR_PAGE_KEY_MAX + 1];
    assert_int_equal(tr_page_cursor_decode(big, out), -EINVAL);
}

/* ---- collecting a page from a real query ---------------------------------- */

static tr_store_t *items_db(int count)
{
    tr_store_t *db = NULL;
    assert_int_equal(tr_store_open("sqlite://:memory:", &db), 0);
    assert_int_equal(
        tr_store_exec(db, NULL, "CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT)", ""), 0);
    for (int i = 0; i < count; i++) {
        char id[8];
        snprintf(id, sizeof(id), "k%03d", i);
        assert_int_equal(tr_store_exec(db, NULL, "INSERT INTO items (id, n) VALUES ($1, $2)", "ti",
                                       id, (int64_t)i),
                         0);
    }
    return db;
}

static json_t *item_json(tr_rows_t *rows, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return json_integer(tr_rows_int(rows, 1));
}

/* One page after page->after, as a service's job would read it. */
static int collect(tr_store_t *db, const tr_page_t *page, int *calls, tr_page_result_t *out)
{
    tr_rows_t *rows = NULL;
    int64_t fetch = (int64_t)page->limit + 1;
    int rc =
        page->after[0]
            ? tr_store_query(db, &rows,
                             "SELECT id, n FROM items WHERE id > $1 "
                             "ORDER BY id LIMIT $2",
                             "ti", page->after, fetch)
            : tr_store_query(db, &rows, "SELECT id, n FROM items ORDER BY id LIMIT $1", "i", fetch);
    return tr_page_collect(rc, rows, page, item_json, calls, out);
}

static void test_collect_walks_every_row_once(void **state)
{
    (void)state;
    tr_store_t *db = items_db(7);
    tr_page_t page = {.limit = 3};
    tr_page_result_t r = {0};
    int calls = 0, pages = 0, seen = 0;

    do {
        assert_int_equal(collect(db, &page, &calls, &r), 0);
        assert_true(json_array_size(r.data) <= 3);
        for (size_t i = 0; i < json_array_size(r.data); i++)
            assert_int_equal(json_integer_value(json_array_get(r.data, i)), seen++);
        pages++;
        if (r.next[0]) assert_int_equal(tr_page_cursor_decode(r.next, page.after), 0);
    } while (r.next[0] && pages < 10);
    assert_int_equal(seen, 7);
    assert_int_equal(pages, 3);
    /* The extra row is read but never becomes JSON. */
    assert_int_equal(calls, 7);
    tr_page_result_clear(&r);
    assert_null(r.data);

    /* Exactly a page's worth: no next page is announced. */
    page.limit = 7;
    page.after[0] = '\0';
    assert_int_equal(collect(db, &page, &calls, &r), 0);
    assert_int_equal(json_array_size(r.data), 7);
    assert_string_equal(r.next, "");
    /* A re-run (a retried transaction) replaces the result, leaking nothing. */
    assert_int_equal(collect(db, &page, &calls, &r), 0);
    assert_int_equal(json_array_size(r.data), 7);
    tr_page_result_clear(&r);
    tr_store_close(db);
}

static void test_collect_failures(void **state)
{
    (void)state;
    tr_store_t *db = items_db(2);
    tr_page_t page = {.limit = 5};
    tr_page_result_t r = {0};
    int calls = 0;
    tr_rows_t *rows = NULL;

    /* A failed query passes its code through and leaves no data. */
    int rc = tr_store_query(db, &rows, "SELECT id, n FROM no_such_table", "");
    assert_int_not_equal(rc, 0);
    assert_int_equal(tr_page_collect(rc, rows, &page, item_json, &calls, &r), rc);
    assert_null(r.data);
    assert_int_equal(calls, 0);
    /* The store is usable afterwards (rows were released). */
    assert_int_equal(collect(db, &page, &calls, &r), 0);
    assert_int_equal(json_array_size(r.data), 2);
    tr_page_result_clear(&r);
    tr_store_close(db);
}

static void test_rows_first_int(void **state)
{
    (void)state;
    tr_store_t *db = items_db(4);
    tr_rows_t *rows = NULL;
    int64_t v = -1;
    int rc = tr_store_query(db, &rows, "SELECT COUNT(*) FROM items", "");
    assert_int_equal(tr_rows_first_int(rc, rows, &v), 0);
    assert_int_equal(v, 4);
    /* No row: untouched. */
    v = -1;
    rc = tr_store_query(db, &rows, "SELECT n FROM items WHERE id = 'none'", "");
    assert_int_equal(tr_rows_first_int(rc, rows, &v), 0);
    assert_int_equal(v, -1);
    /* A failed query's code passes through. */
    rc = tr_store_query(db, &rows, "SELECT nope FROM items", "");
    assert_int_not_equal(rc, 0);
    assert_int_equal(tr_rows_first_int(rc, rows, &v), rc);
    tr_store_close(db);
}

static void test_time_json(void **state)
{
    (void)state;
    json_t *never = tr_time_json(0);
    assert_true(json_is_null(never));
    json_decref(never);
    json_t *t = tr_time_json(1733312345678);
    assert_string_equal(json_string_value(t), "2024-12-04T11:39:05.678Z");
    json_decref(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_refused),
        cmocka_unit_test(test_collect_walks_every_row_once),
        cmocka_unit_test(test_collect_failures),
        cmocka_unit_test(test_rows_first_int),
        cmocka_unit_test(test_time_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

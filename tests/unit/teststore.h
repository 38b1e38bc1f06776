/*
 * teststore.h - what the store tests of both engines (test_store.c on
 * SQLite, test_store_pg.c on PostgreSQL) share. Include after <cmocka.h>.
 */
#ifndef TR_TESTS_TESTSTORE_H
#define TR_TESTS_TESTSTORE_H

#include <stdint.h>

#include "kit/store.h"

/* Runs a query expected to return one row and returns its column 0 as an
 * integer; fails the test otherwise. */
static inline int64_t teststore_query_int(tr_store_t *db, const char *sql)
{
    tr_rows_t *rows = NULL;
    assert_int_equal(tr_store_query(db, &rows, sql, NULL), 0);
    assert_int_equal(tr_rows_next(rows), 1);
    int64_t v = tr_rows_int(rows, 0);
    tr_rows_free(rows);
    return v;
}

#endif

/*
 * paging.h - cursor pagination of list endpoints, the same everywhere.
 *
 * A list answers 200 {"data": [...], "next_cursor": "..." | null} and is
 * asked for with ?limit= (default TR_PAGE_DEFAULT, at most TR_PAGE_MAX: a
 * larger value is clamped, a non-integer or 0 is 400) and ?cursor= (the
 * next_cursor of the previous page).
 *
 * CURSORS ARE OPAQUE. A cursor is the base64url (no padding) of the key of
 * the last row of the previous page -- today a row id, tomorrow perhaps
 * "created_at,id" -- so a service may change what it pages by without
 * changing its clients, and clients are not invited to build cursors.
 * Opaque is not secret: it hides nothing from a curious client. A cursor
 * that does not decode, decodes to something that is not printable ASCII,
 * or fails the service's own key check, is 400 invalid_argument with the
 * field detail "cursor".
 *
 * WHERE THINGS RUN. tr_page_from_query() runs on the loop while the handler
 * validates; it fills a tr_page_t that is plain data, copied into the store
 * job's context. The job collects one page of rows with tr_page_collect()
 * (which touches no request, so it may run on a store pool thread), and done
 * answers with tr_respond_page().
 */
#ifndef TR_PAGING_H
#define TR_PAGING_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "kit/http.h"
#include "kit/store.h"

#define TR_PAGE_DEFAULT 20
#define TR_PAGE_MAX     100
/* Longest key a cursor may carry (bytes, without NUL), and the longest
 * cursor text that encodes it. */
#define TR_PAGE_KEY_MAX    128
#define TR_PAGE_CURSOR_MAX 172 /* ceil(128 * 4 / 3) */

/* What a list request asked for. after is "" on the first page. */
typedef struct tr_page {
    int limit;
    char after[TR_PAGE_KEY_MAX + 1];
} tr_page_t;

/* One page collected by a store job. data is a JSON array owned by the
 * result until tr_respond_page() steals it; next is the cursor (already
 * encoded) of the next page, "" when this is the last. */
typedef struct tr_page_result {
    json_t *data;
    char next[TR_PAGE_CURSOR_MAX + 1];
} tr_page_result_t;

/* Parses ?limit=: NULL gives TR_PAGE_DEFAULT; 1..TR_PAGE_MAX as is; larger
 * values are clamped to TR_PAGE_MAX. Returns 0, or -EINVAL (out untouched)
 * for anything but a positive decimal integer. */
int tr_page_parse_limit(const char *text, int *out);

/* Encodes key (at most TR_PAGE_KEY_MAX bytes) as a cursor into out (at least
 * TR_PAGE_CURSOR_MAX + 1 bytes). Returns 0, or -EINVAL for a longer key. */
int tr_page_cursor_encode(const char *key, char out[TR_PAGE_CURSOR_MAX + 1]);
/* Decodes a cursor into out. Returns 0, or -EINVAL (out is "") when the
 * text is not base64url without padding, is too long, or decodes to
 * anything but printable ASCII. */
int tr_page_cursor_decode(const char *cursor, char out[TR_PAGE_KEY_MAX + 1]);

/* A service's check of a decoded key (e.g. "is a UUID"); true when valid. */
typedef bool tr_page_key_check_fn(const char *key);

/* Reads ?limit= and ?cursor= into page. key_ok (may be NULL) vets the
 * decoded key. On any problem answers 400 invalid_argument with a detail
 * per offending field and returns false; then the request is answered. */
bool tr_page_from_query(tr_req_t *req, tr_page_t *page, tr_page_key_check_fn *key_ok);

/* Builds the JSON of the current row of a listing (a new reference); arg is
 * the job's own. Must not touch any request. */
typedef json_t *tr_page_row_fn(tr_rows_t *rows, void *arg);

/* In a store job: reads one page from rows, the result of a query that
 * asked for page->limit + 1 rows ordered by the paging key, whose first
 * column is that key. query_rc is the query's result; rows is freed in
 * every case. out is reset first (a previous data array is released), so a
 * re-run transaction may collect again. Returns 0, query_rc, or the row
 * error; on error out->data is NULL. */
int tr_page_collect(int query_rc, tr_rows_t *rows, const tr_page_t *page, tr_page_row_fn *row_json,
                    void *arg, tr_page_result_t *out);

/* Releases what a result holds (for done paths that do not answer with it). */
void tr_page_result_clear(tr_page_result_t *r);

/* Answers 200 {"data": r->data, "next_cursor": r->next or null}; the data
 * array is stolen (r->data becomes NULL). */
void tr_respond_page(tr_req_t *req, tr_page_result_t *r);

/* Answers 200 {"data": data, "next_cursor": next_cursor or null} for a
 * listing built another way. data is stolen; next_cursor (may be NULL) is an
 * encoded cursor. */
void tr_respond_list(tr_req_t *req, json_t *data, const char *next_cursor);

#endif

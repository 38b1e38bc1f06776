/*
 * paging.c - cursor pagination (see paging.h).
 *
 * The cursor codec is libsodium's constant-alphabet base64url without
 * padding; decoding refuses padding, whitespace and any other alphabet, so a
 * cursor has exactly one spelling. The decoded key must be printable ASCII:
 * it is bound as a text parameter of the next query, and a NUL or control
 * byte in it can only be a forgery.
 */
#include "kit/paging.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "kit/validate.h"

#define B64_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING

int tr_page_parse_limit(const char *text, int *out)
{
    if (!text) {
        *out = TR_PAGE_DEFAULT;
        return 0;
    }
    if (!*text) return -EINVAL;
    long long v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return -EINVAL;
        /* Anything past the maximum is clamped, so stop growing early. */
        if (v <= TR_PAGE_MAX) v = v * 10 + (*p - '0');
    }
    if (v < 1) return -EINVAL;
    *out = v > TR_PAGE_MAX ? TR_PAGE_MAX : (int)v;
    return 0;
}

int tr_page_cursor_encode(const char *key, char out[TR_PAGE_CURSOR_MAX + 1])
{
    size_t len = strlen(key);
    out[0] = '\0';
    if (len > TR_PAGE_KEY_MAX) return -EINVAL;
    sodium_bin2base64(out, TR_PAGE_CURSOR_MAX + 1, (const unsigned char *)key, len, B64_VARIANT);
    return 0;
}

int tr_page_cursor_decode(const char *cursor, char out[TR_PAGE_KEY_MAX + 1])
{
    size_t len = strlen(cursor), n = 0;
    const char *end = NULL;
    out[0] = '\0';
    if (len == 0 || len > TR_PAGE_CURSOR_MAX) return -EINVAL;
    if (sodium_base642bin((unsigned char *)out, TR_PAGE_KEY_MAX, cursor, len, NULL, &n, &end,
                          B64_VARIANT) != 0 ||
        end != cursor + len || n == 0)
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (out[i] < 0x20 || out[i] > 0x7e) goto bad;
    out[n] = '\0';
    return 0;
bad:
    out[0] = '\0';
    return -EINVAL;
}

bool tr_page_from_query(tr_req_t *req, tr_page_t *page, tr_page_key_check_fn *key_ok)
{
    tr_fields_t f;
    tr_fields_init(&f);
    page->limit = TR_PAGE_DEFAULT;
    page->after[0] = '\0';
    if (tr_page_parse_limit(tr_req_query(req, "limit"), &page->limit) != 0)
        tr_fields_add(&f, "limit", "must be an integer from 1 to 100");
    const char *cursor = tr_req_query(req, "cursor");
    if (cursor && *cursor &&
        (tr_page_cursor_decode(cursor, page->after) != 0 || (key_ok && !key_ok(page->after)))) {
        page->after[0] = '\0';
        tr_fields_add(&f, "cursor", "is not a cursor returned by this list");
    }
    return !tr_fields_respond(&f, req);
}

void tr_page_result_clear(tr_page_result_t *r)
{
    json_decref(r->data);
    r->data = NULL;
    r->next[0] = '\0';
}

int tr_page_collect(int query_rc, tr_rows_t *rows, const tr_page_t *page, tr_page_row_fn *row_json,
                    void *arg, tr_page_result_t *out)
{
    char last[TR_PAGE_KEY_MAX + 1] = "";
    int count = 0, rc = query_rc;

    tr_page_result_clear(out);
    if (rc != 0) goto out;
    out->data = json_array();
    /* The extra row only tells that another page exists. */
    while ((rc = tr_rows_next(rows)) == 1 && ++count <= page->limit) {
        const char *key = tr_rows_text(rows, 0);
        size_t len = key ? strlen(key) : 0;
        if (len > TR_PAGE_KEY_MAX) len = TR_PAGE_KEY_MAX;
        memcpy(last, key ? key : "", len);
        last[len] = '\0';
        json_array_append_new(out->data, row_json(rows, arg));
    }
    if (rc < 0) {
        tr_page_result_clear(out);
        goto out;
    }
    rc = 0;
    if (count > page->limit) tr_page_cursor_encode(last, out->next);
out:
    tr_rows_free(rows);
    return rc;
}

void tr_respond_list(tr_req_t *req, json_t *data, const char *next_cursor)
{
    json_t *body = json_object();
    json_object_set_new(body, "data", data ? data : json_array());
    json_object_set_new(body, "next_cursor",
                        next_cursor && *next_cursor ? json_string(next_cursor) : json_null());
    tr_respond_json(req, 200, body);
}

void tr_respond_page(tr_req_t *req, tr_page_result_t *r)
{
    json_t *data = r->data;
    r->data = NULL;
    tr_respond_list(req, data, r->next);
}

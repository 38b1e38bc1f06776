/*
 * http_internal.h - the private part of a request (tr_req_impl_t) that
 * http.c works on, and the table through which http.c reaches the server.
 *
 * DIRECTION. The server (server.c) sits above the request API (http.c):
 * server.c includes this header, fills a tr_req_impl_t for every request and
 * gives it its ops table; http.c includes only this header and sends answers
 * through req->impl->ops, never by calling into server.c. So includes point
 * one way, server -> http, as in h2o (lib/core hands lib/handler a
 * h2o_req_t whose generator and ostream callbacks it calls). A server other
 * than server.c (a test, a fuzz target) can carry requests by filling the
 * same struct with its own table.
 *
 * A connection owns one tr_req_t and its tr_req_impl_t and reuses them for
 * every request it carries: a connection handles at most one request at a
 * time, so nothing about a request is allocated per request except arena
 * blocks beyond the inline first one.
 */
#ifndef TR_HTTP_INTERNAL_H
#define TR_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/buf.h"
#include "kit/http.h"

#define TR__ARENA_INLINE 1024

typedef struct tr__arena_block tr__arena_block_t;

/* Per-request memory: an inline block, then malloc'ed blocks chained on
 * demand; everything is released at once by tr__arena_reset(). */
typedef struct tr__arena {
    tr__arena_block_t *blocks;
    size_t used; /* bytes of inline_buf handed out */
    _Alignas(max_align_t) char inline_buf[TR__ARENA_INLINE];
} tr__arena_t;

/* What http.c needs from the server that carries the request. */
typedef struct tr__req_ops {
    /* Sends (or discards, when the client is gone) the whole answer of an
     * active request, reports it and releases the request. body is copied. */
    void (*respond)(tr_req_t *req, int status, const char *content_type, const void *body,
                    size_t len);
    /* Ends a started streamed answer abruptly (as tr_respond_abort). */
    void (*abort)(tr_req_t *req);
} tr__req_ops_t;

struct tr__conn; /* the carrying server's connection, opaque here */

struct tr_req_impl {
    const tr__req_ops_t *ops; /* set by the server; never NULL on a live request */
    struct tr__conn *conn;
    tr__arena_t arena;
    tr_buf_t res_headers; /* "Name: value\r\n" lines added by tr_res_header() */
    uint64_t start_ns;    /* uv_hrtime() when the request's first byte was parsed */
    unsigned omit;        /* TR_RES_OMIT_* given by the handler */
    bool active;          /* from creation until released (after the answer is out) */
    bool dispatched;      /* counted in tr_server_in_flight() */
    bool cancelled;       /* the client went away while the request was active */
    bool res_started;     /* tr_respond_start() was called */
};

#define TR__RES_HEADERS_MAX (16 * 1024)

/* Frees the arena's chained blocks and makes the inline block free again. */
void tr__arena_reset(tr__arena_t *a);

/* Percent-decodes len bytes of in into out (room for len + 1 bytes) and
 * NUL-terminates it; returns the decoded length. Malformed escapes and %00
 * are kept literally, so the result never contains an embedded NUL. With
 * plus_is_space, '+' becomes ' ' (query strings). */
size_t tr__percent_decode(char *out, const char *in, size_t len, bool plus_is_space);

#endif

/*
 * server_internal.h - private state shared by server.c and http.c.
 *
 * A connection (server.c) owns one tr_req_t and its tr_req_impl_t and reuses
 * them for every request it carries: a connection handles at most one
 * request at a time, so nothing about a request is allocated per request
 * except arena blocks beyond the inline first one.
 */
#ifndef TR_SERVER_INTERNAL_H
#define TR_SERVER_INTERNAL_H

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

typedef struct tr__conn tr__conn_t;

struct tr_req_impl {
    tr__conn_t *conn;
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

void tr__arena_reset(tr__arena_t *a);

/* Percent-decodes len bytes of in into out (room for len + 1 bytes) and
 * NUL-terminates it; returns the decoded length. Malformed escapes and %00
 * are kept literally, so the result never contains an embedded NUL. With
 * plus_is_space, '+' becomes ' ' (query strings). */
size_t tr__percent_decode(char *out, const char *in, size_t len, bool plus_is_space);

/* Bytes received on the request's connection and held in user space until
 * they are parsed (the stash), for tests of the streaming bound. server.c. */
size_t tr__req_held_bytes(const tr_req_t *req);

/* Sends (or discards, when the client is gone) the answer of an active
 * request, reports it to on_complete and releases the request. server.c. */
void tr__respond(tr_req_t *req, int status, const char *content_type, const void *body, size_t len);

#endif

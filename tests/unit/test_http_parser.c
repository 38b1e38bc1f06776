/*
 * test_http_parser.c - the incremental request parser, table-driven.
 *
 * Every case is fed whole, byte by byte and in 7-byte pieces, the way the
 * server feeds it: after each complete request the rest of the input is fed
 * again after tr__http_parser_next(). The verdicts and the requests seen must
 * not depend on how the bytes were split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "kit/http_parser.h"

#define MAX_REQS 3

typedef struct want_req {
    const char *method;
    const char *target;
    const char *path;
    const char *query;
    const char *body;
    bool keep_alive;
    bool expect_continue;
    const char *header_name; /* optional: a header that must be present */
    const char *header_value;
    size_t nheaders; /* checked when header_name is set */
} want_req_t;

typedef struct parser_case {
    const char *name;
    const char *input;
    size_t max_header_bytes;
    size_t max_body;
    int head_status; /* what the head callback returns (0 = go on) */
    int nreqs;
    want_req_t reqs[MAX_REQS];
    int fail_status; /* 0: the input ends without failure */
} parser_case_t;

#define REQ(...)                                                                                   \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

static const parser_case_t cases[] = {
    {"simple GET",
     "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/a/b?x=1&y=2", "/a/b", "x=1&y=2", "", true, false, "host", "example", 1)},
     0},
    {"headers: order, case, trailing whitespace, empty value",
     "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Pad:   padded  \t\r\nx-pad: second\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/", "/", "", "", true, false, "X-PAD", "padded", 4)},
     0},
    {"content-length body",
     "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
     1024,
     1024,
     0,
     1,
     {REQ("POST", "/p", "/p", "", "hello", true, false, NULL, NULL, 0)},
     0},
    {"chunked body is de-chunked, trailers dropped",
     "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("POST", "/c", "/c", "", "hello world", true, false, "transfer-encoding", "chunked", 2)},
     0},
    {"absolute-form target routes on its path",
     "GET http://example.com:80/a/b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "http://example.com:80/a/b?x=1", "/a/b", "x=1", "", true, false, NULL, NULL, 0)},
     0},
    {"absolute-form without a path is /",
     "GET http://example.com?x=1 HTTP/1.1\r\nHost: t\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "http://example.com?x=1", "/", "x=1", "", true, false, NULL, NULL, 0)},
     0},
    {"pipelined pair",
     "GET /one HTTP/1.1\r\nHost: h\r\n\r\nPOST /two HTTP/1.1\r\nHost: t\r\nContent-Length: "
     "3\r\n\r\nabc",
     1024,
     1024,
     0,
     2,
     {REQ("GET", "/one", "/one", "", "", true, false, NULL, NULL, 0),
      REQ("POST", "/two", "/two", "", "abc", true, false, NULL, NULL, 0)},
     0},
    {"pipelined: second incomplete waits for more",
     "GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost:",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/one", "/one", "", "", true, false, NULL, NULL, 0)},
     0},
    {"head exactly at the limit is accepted",
     "GET /x HTTP/1.1\r\nHost: t\r\nA: 0123456789\r\n\r\n", /* 43 bytes */
     43,
     1024,
     0,
     1,
     {REQ("GET", "/x", "/x", "", "", true, false, "a", "0123456789", 2)},
     0},
    {"head one byte over the limit -> 431",
     "GET /x HTTP/1.1\r\nHost: t\r\nA: 0123456789\r\n\r\n",
     42,
     1024,
     0,
     0,
     {{0}},
     431},
    {"header flood -> 431",
     "GET / HTTP/1.1\r\nHost: t\r\nA: "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
     "B: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n",
     64,
     1024,
     0,
     0,
     {{0}},
     431},
    {"content-length over the limit -> 413 before the body",
     "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n",
     1024,
     10,
     0,
     0,
     {{0}},
     413},
    {"chunked body over the limit -> 413",
     "POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
     "chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
     1024,
     10,
     0,
     0,
     {{0}},
     413},
    {"body exactly at the limit",
     "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789",
     1024,
     10,
     0,
     1,
     {REQ("POST", "/p", "/p", "", "0123456789", true, false, NULL, NULL, 0)},
     0},
    {"garbage -> 400", "\x16\x03\x01\x02\xfc\x03\x03", 1024, 1024, 0, 0, {{0}}, 400},
    {"header without colon -> 400",
     "GET / HTTP/1.1\r\nHost: t\r\nHost h\r\n\r\n",
     1024,
     1024,
     0,
     0,
     {{0}},
     400},
    {"space before the colon -> 400",
     "GET / HTTP/1.1\r\nHost: t\r\nHost : h\r\n\r\n",
     1024,
     1024,
     0,
     0,
     {{0}},
     400},
    {"non-token byte in a header name -> 400",
     "GET / HTTP/1.1\r\nHost: t\r\nHo(st: h\r\n\r\n",
     1024,
     1024,
     0,
     0,
     {{0}},
     400},
    {"content-length with transfer-encoding (smuggling) -> 400",
     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: "
     "chunked\r\n\r\n0\r\n\r\n",
     1024,
     1024,
     0,
     0,
     {{0}},
     400},
    {"bad chunk size -> 400",
     "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     1024,
     1024,
     0,
     0,
     {{0}},
     400},
    {"expect 100-continue is reported",
     "PUT /u HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
     1024,
     1024,
     0,
     1,
     {REQ("PUT", "/u", "/u", "", "ok", true, true, NULL, NULL, 0)},
     0},
    {"head callback verdict fails the stream",
     "POST /missing HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok",
     1024,
     1024,
     404,
     0,
     {{0}},
     404},
    {"HTTP/1.0 closes by default",
     "GET /old HTTP/1.0\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/old", "/old", "", "", false, false, NULL, NULL, 0)},
     0},
    {"HTTP/1.0 with keep-alive",
     "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/old", "/old", "", "", true, false, NULL, NULL, 0)},
     0},
    {"HTTP/1.1 with Connection: close",
     "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/", "/", "", "", false, false, NULL, NULL, 0)},
     0},
    {"upgrade request is answered, then the connection closes",
     "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/ws", "/ws", "", "", false, false, NULL, NULL, 0)},
     0},
/* ---- RFC 9112 framing ---- */
#define TE_HEAD "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
#define FAILS(name, input, status)                                                                 \
    {                                                                                              \
        name, input, 1024, 1024, 0, 0, {{0}}, status                                               \
    }
#define CHUNKED_OK(name, input)                                                                    \
    {                                                                                              \
        name, TE_HEAD input, 1024, 1024, 0, 1,                                                     \
            {REQ("POST", "/c", "/c", "", "hello", true, false, NULL, NULL, 0)}, 0                  \
    }
    FAILS("chunk data followed by XX, not CRLF -> 400", TE_HEAD "5\r\nhelloXX0\r\n\r\n", 400),
    FAILS("chunk data followed by a bare LF -> 400", TE_HEAD "5\r\nhello\n0\r\n\r\n", 400),
    FAILS("chunk data followed by CR and no LF -> 400", TE_HEAD "5\r\nhello\rX0\r\n\r\n", 400),
    FAILS("chunk size line ending in a bare LF -> 400", TE_HEAD "5\nhello\r\n0\r\n\r\n", 400),
    FAILS("chunk size overflowing 64 bits -> 400", TE_HEAD "10000000000000000\r\n", 400),
    FAILS("chunk extension without a name -> 400", TE_HEAD "5;=1\r\nhello\r\n0\r\n\r\n", 400),
    FAILS("chunk extension value with a bad byte -> 400", TE_HEAD "5;a=@\r\nhello\r\n0\r\n\r\n",
          400),
    FAILS("unterminated quoted extension value -> 400", TE_HEAD "5;a=\"q\r\nhello\r\n0\r\n\r\n",
          400),
    FAILS("trailer folded onto a second line -> 400",
          TE_HEAD "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400),
    FAILS("trailer without a colon -> 400", TE_HEAD "5\r\nhello\r\n0\r\nXT\r\n\r\n", 400),
    CHUNKED_OK("several chunk extensions", "5;a=1;b=2\r\nhello\r\n0\r\n\r\n"),
    CHUNKED_OK("chunk extension after whitespace", "5 ;foo=bar\r\nhello\r\n0\r\n\r\n"),
    CHUNKED_OK("quoted chunk extension with a space and an escape",
               "5;a=\"q s\\\"\"\r\nhello\r\n0;last\r\n\r\n"),
    CHUNKED_OK("chunk extensions with BWS everywhere, no value",
               "2 ; a = 1 ;b\t;c\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
    CHUNKED_OK("upper-case hex and leading zeros", "0005\r\nhello\r\n000\r\n\r\n"),
    CHUNKED_OK("trailers are dropped", "5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: two words\r\n\r\n"),
    FAILS("HTTP/1.1 without Host -> 400", "GET / HTTP/1.1\r\n\r\n", 400),
    FAILS("two Host fields -> 400", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    FAILS("Host with a space -> 400", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    FAILS("Host with a non-numeric port -> 400", "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", 400),
    FAILS("Host with userinfo -> 400", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    FAILS("two Host fields on HTTP/1.0 -> 400", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
          400),
    {"HTTP/1.0 without Host is accepted",
     "GET /old HTTP/1.0\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("GET", "/old", "/old", "", "", false, false, NULL, NULL, 0)},
     0},
    {"Host forms: name:port, IPv6 literal, empty",
     "GET /1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\nGET /2 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"
     "GET /3 HTTP/1.1\r\nHost:\r\n\r\n",
     1024,
     1024,
     0,
     3,
     {REQ("GET", "/1", "/1", "", "", true, false, "host", "a.example:8080", 1),
      REQ("GET", "/2", "/2", "", "", true, false, "host", "[::1]:80", 1),
      REQ("GET", "/3", "/3", "", "", true, false, "host", "", 1)},
     0},
    FAILS("Transfer-Encoding: gzip, chunked -> 501",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    FAILS("Transfer-Encoding: xchunked -> 501",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    FAILS("Transfer-Encoding: chunked, gzip -> 501",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
    FAILS("gzip and chunked on two lines -> 501",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
          "chunked\r\n\r\n0\r\n\r\n",
          501),
    FAILS("chunked twice -> 400",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
          400),
    FAILS("empty Transfer-Encoding -> 400",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n", 400),
    FAILS("Transfer-Encoding on HTTP/1.0 -> 400",
          "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    FAILS("transfer-encoding then content-length -> 400",
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: "
          "5\r\n\r\n0\r\n\r\n",
          400),
    {"Transfer-Encoding is case-insensitive",
     "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     1024,
     1024,
     0,
     1,
     {REQ("POST", "/c", "/c", "", "hello", true, false, NULL, NULL, 0)},
     0},
    FAILS("obs-fold with spaces -> 400", "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  b\r\n\r\n", 400),
    FAILS("obs-fold with a tab -> 400", "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n\tb\r\n\r\n", 400),
    FAILS("whitespace-only fold line -> 400",
          "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n \r\nX-B: c\r\n\r\n", 400),
    {"request-target over the head limit -> 414",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n"
     "Host: h\r\n\r\n",
     64,
     1024,
     0,
     0,
     {{0}},
     414},
    {"headers (not the target) over the head limit -> 431",
     "GET /a HTTP/1.1\r\nHost: h\r\nX-A: "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
     64,
     1024,
     0,
     0,
     {{0}},
     431},
#undef FAILS
#undef CHUNKED_OK
#undef TE_HEAD
};

typedef struct head_ctx {
    int status;
    size_t max_body;
    int calls;
} head_ctx_t;

static int on_head(tr_http_parser_t *p, void *ctx, size_t *max_body)
{
    head_ctx_t *h = ctx;
    (void)p;
    h->calls++;
    *max_body = h->max_body;
    return h->status;
}

static void check_request(const parser_case_t *tc, int i, const tr_http_parser_t *p)
{
    const want_req_t *w = &tc->reqs[i];
    assert_string_equal(p->method, w->method);
    assert_string_equal(p->target, w->target);
    assert_string_equal(p->path, w->path);
    assert_int_equal(p->path_len, strlen(w->path));
    assert_string_equal(p->query, w->query);
    assert_int_equal(p->body_len, strlen(w->body));
    assert_memory_equal(p->body, w->body, p->body_len + 1);
    assert_int_equal(p->keep_alive, w->keep_alive);
    assert_int_equal(p->expect_continue, w->expect_continue);
    if (w->header_name) {
        assert_int_equal(p->nheaders, w->nheaders);
        const char *found = NULL;
        for (size_t k = 0; k < p->nheaders && !found; k++)
            if (strcasecmp(p->headers[k].name, w->header_name) == 0) found = p->headers[k].value;
        assert_non_null(found);
        assert_string_equal(found, w->header_value);
    }
}

static void run_case(const parser_case_t *tc, size_t piece)
{
    tr_http_parser_t p;
    head_ctx_t h = {.status = tc->head_status, .max_body = tc->max_body};
    const char *in = tc->input;
    size_t len = strlen(in), off = 0, end = 0;
    int nreqs = 0, fail_status = 0;

    print_message("case: %s (piece %zu)\n", tc->name, piece);
    tr__http_parser_init(&p, tc->max_header_bytes, 1 << 20, on_head, &h);
    while (off < len) {
        if (end <= off) end = off + piece < len ? off + piece : len;
        size_t used = 0;
        tr_http_parse_result_t r = tr__http_parser_feed(&p, in + off, end - off, &used);
        off += used;
        if (r == TR_HTTP_FAILED) {
            fail_status = p.error_status;
            break;
        }
        if (r == TR_HTTP_REQUEST) {
            assert_true(nreqs < tc->nreqs);
            check_request(tc, nreqs, &p);
            nreqs++;
            if (!p.keep_alive) break; /* the server closes here */
            tr__http_parser_next(&p);
        } else {
            assert_int_equal(off, end);
        }
    }
    assert_int_equal(nreqs, tc->nreqs);
    assert_int_equal(fail_status, tc->fail_status);
    if (fail_status) {
        /* A failed stream stays failed. */
        size_t used = 1;
        assert_int_equal(tr__http_parser_feed(&p, "GET", 3, &used), TR_HTTP_FAILED);
        assert_int_equal(used, 0);
    }
    tr__http_parser_free(&p);
}

static void test_cases(void **state)
{
    (void)state;
    static const size_t pieces[] = {SIZE_MAX / 2, 1, 7};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++)
            run_case(&cases[i], pieces[k]);
}

/* The head callback runs once per request, sees the parsed head and the
 * body limit it sets is the one enforced. */
static void test_head_callback_sets_limit(void **state)
{
    (void)state;
    tr_http_parser_t p;
    head_ctx_t h = {.max_body = 3};
    size_t used;
    const char *ok = "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    const char *big = "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd";

    tr__http_parser_init(&p, 1024, 1 << 20, on_head, &h);
    assert_int_equal(tr__http_parser_feed(&p, ok, strlen(ok), &used), TR_HTTP_REQUEST);
    assert_int_equal(used, strlen(ok));
    assert_int_equal(h.calls, 1);
    tr__http_parser_next(&p);
    assert_int_equal(tr__http_parser_feed(&p, big, strlen(big), &used), TR_HTTP_FAILED);
    assert_int_equal(p.error_status, 413);
    assert_int_equal(h.calls, 2);
    tr__http_parser_free(&p);
}

/* Without a callback the default limit applies; started/headers_done track
 * progress, which the server uses for its timers. */
static void test_progress_flags(void **state)
{
    (void)state;
    tr_http_parser_t p;
    size_t used;
    tr__http_parser_init(&p, 1024, 4, NULL, NULL);
    assert_false(p.started);
    assert_int_equal(tr__http_parser_feed(&p, "\r\n", 2, &used), TR_HTTP_NEED_MORE);
    assert_false(p.started);
    assert_int_equal(tr__http_parser_feed(&p, "PO", 2, &used), TR_HTTP_NEED_MORE);
    assert_true(p.started);
    assert_false(p.headers_done);
    const char *rest = "ST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab";
    assert_int_equal(tr__http_parser_feed(&p, rest, strlen(rest), &used), TR_HTTP_NEED_MORE);
    assert_true(p.headers_done);
    assert_int_equal(tr__http_parser_feed(&p, "cdGET", 5, &used), TR_HTTP_REQUEST);
    assert_int_equal(used, 2);
    assert_string_equal(p.body, "abcd");
    tr__http_parser_next(&p);
    assert_false(p.started);
    assert_false(p.headers_done);
    assert_string_equal(p.body, "");
    assert_int_equal(tr__http_parser_feed(&p, "GET", 3, &used), TR_HTTP_NEED_MORE);
    assert_true(p.started);
    tr__http_parser_free(&p);
}

/* Framing that is not body (here: an endless chunk extension) is capped. */
static void test_framing_overhead_capped(void **state)
{
    (void)state;
    tr_http_parser_t p;
    size_t used;
    char ext[512];
    const char *head = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;a=";
    tr__http_parser_init(&p, 256, 256, NULL, NULL);
    assert_int_equal(tr__http_parser_feed(&p, head, strlen(head), &used), TR_HTTP_NEED_MORE);
    memset(ext, 'x', sizeof(ext));
    tr_http_parse_result_t r = TR_HTTP_NEED_MORE;
    for (int i = 0; i < 4 && r == TR_HTTP_NEED_MORE; i++)
        r = tr__http_parser_feed(&p, ext, sizeof(ext), &used);
    assert_int_equal(r, TR_HTTP_FAILED);
    assert_int_equal(p.error_status, 413);
    tr__http_parser_free(&p);
}

/* Feeds a head with nfields header fields (Host included) and returns the
 * failure status, 0 when the request was complete. */
static int feed_fields(size_t limit, size_t nfields)
{
    char head[8192];
    size_t n = (size_t)snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: h\r\n");
    for (size_t i = 1; i < nfields; i++)
        n += (size_t)snprintf(head + n, sizeof(head) - n, "X-%zu: v\r\n", i);
    n += (size_t)snprintf(head + n, sizeof(head) - n, "\r\n");
    tr_http_parser_t p;
    size_t used = 0;
    tr__http_parser_init(&p, sizeof(head), 1024, NULL, NULL);
    if (limit) tr__http_parser_set_max_header_fields(&p, limit);
    tr_http_parse_result_t r = tr__http_parser_feed(&p, head, n, &used);
    int status = r == TR_HTTP_FAILED ? p.error_status : r == TR_HTTP_REQUEST ? 0 : -1;
    tr__http_parser_free(&p);
    return status;
}

static void test_header_field_count(void **state)
{
    (void)state;
    assert_int_equal(feed_fields(0, 100), 0); /* the default is 100 */
    assert_int_equal(feed_fields(0, 101), 431);
    assert_int_equal(feed_fields(3, 3), 0);
    assert_int_equal(feed_fields(3, 4), 431);
}

/* A chunked body in STREAM mode whose sink pauses after every piece: the
 * pieces arrive whole and in order, and the end needs the final CRLF. */
static int pause_sink(void *ctx, const char *data, size_t len)
{
    tr_buf_t *b = ctx;
    tr_buf_append(b, data, len);
    return 1;
}

static void test_chunked_stream_pauses(void **state)
{
    (void)state;
    static const char in[] = "POST /s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3;x=\"a b\"\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    tr_http_parser_t p;
    tr_buf_t got;
    tr_buf_init(&got, 1024);
    tr__http_parser_init(&p, 1024, 1024, NULL, &got);
    p.on_data = pause_sink;
    size_t off = 0, len = strlen(in);
    int pauses = 0;
    tr_http_parse_result_t r = TR_HTTP_NEED_MORE;
    while (r != TR_HTTP_REQUEST) {
        size_t used = 0;
        p.body_mode = TR_HTTP_BODY_STREAM;
        r = tr__http_parser_feed(&p, in + off, len - off, &used);
        off += used;
        assert_int_not_equal(r, TR_HTTP_FAILED);
        if (r == TR_HTTP_PAUSED) pauses++;
        assert_true(pauses < 10);
    }
    assert_int_equal(off, len);
    assert_int_equal(pauses, 2);
    assert_int_equal(got.len, 7);
    assert_memory_equal(got.data, "abcdefg", 7);
    tr__http_parser_free(&p);
    tr_buf_free(&got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_head_callback_sets_limit),
        cmocka_unit_test(test_progress_flags),
        cmocka_unit_test(test_framing_overhead_capped),
        cmocka_unit_test(test_header_field_count),
        cmocka_unit_test(test_chunked_stream_pauses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

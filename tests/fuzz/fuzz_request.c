/*
 * fuzz_request.c - libFuzzer target for everything a request's bytes reach
 * before a handler runs: the incremental parser, the router (at
 * headers-complete time, as the server does), percent-decoding of path
 * parameters and query lookups in the request arena.
 *
 * The first input byte picks how the rest is split into reads (0 = all at
 * once, n = pieces of n bytes), so the fuzzer also explores boundaries that
 * fall in the middle of tokens. Build with clang -fsanitize=fuzzer,address,
 * undefined (cmake -DTRELLIS_FUZZ=ON -DCMAKE_C_COMPILER=clang); the seed
 * corpus is tests/fuzz/corpus/request/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kit/http_parser.h"
#include "kit/router.h"
#include "kit/http_internal.h"

#define MAX_HEADER_BYTES 512
#define MAX_BODY_BYTES   4096

static void handler(tr_req_t *req)
{
    (void)req;
}

static const tr_route_t routes[] = {
    {"GET", "/healthz", handler, TR_AUTH_NONE, NULL, 0},
    {"GET", "/api/users/me", handler, TR_AUTH_NONE, NULL, 0},
    {"GET", "/api/users/{id}", handler, TR_AUTH_NONE, NULL, 0},
    {"PATCH", "/api/users/{id}", handler, TR_AUTH_NONE, NULL, 64},
    {"POST", "/api/posts/{post}/comments/{comment}/like", handler, TR_AUTH_NONE, NULL, 0},
    {"DELETE", "/api/posts/{post}", handler, TR_AUTH_NONE, NULL, 0},
};

static tr_router_t *router;

typedef struct ctx {
    tr_match_result_t result;
    tr_match_t match;
} ctx_t;

static int on_head(tr_http_parser_t *p, void *arg, size_t *max_body)
{
    ctx_t *c = arg;
    c->result = tr_router_match(router, p->method, p->path, p->path_len, &c->match);
    if (c->result == TR_MATCH_OK && c->match.route->max_body) *max_body = c->match.route->max_body;
    if (p->expect_continue && c->result != TR_MATCH_OK)
        return c->result == TR_MATCH_NOT_FOUND ? 404 : 405;
    return 0;
}

/* What dispatch does with a complete request, minus the handler. */
static void use_request(tr_http_parser_t *p, ctx_t *c)
{
    static tr_req_impl_t impl;
    tr_req_t req = {
        .method = p->method,
        .target = p->target,
        .path = p->path,
        .query = p->query,
        .headers = p->headers,
        .nheaders = p->nheaders,
        .body = p->body,
        .body_len = p->body_len,
        .impl = &impl,
    };
    if (p->path_len != strlen(p->path) || p->body[p->body_len] != '\0') abort();
    if (c->result == TR_MATCH_OK) {
        for (size_t i = 0; i < c->match.nparams; i++) {
            size_t len = c->match.params[i].value_len;
            char *value = tr_req_alloc(&req, len + 1);
            if (tr__percent_decode(value, c->match.params[i].value, len, false) > len) abort();
            req.params[i].name = c->match.params[i].name;
            req.params[i].value = value;
        }
        req.nparams = c->match.nparams;
        if (req.nparams && !tr_req_param(&req, c->match.params[0].name)) abort();
    }
    (void)tr_req_query(&req, "q");
    (void)tr_req_query(&req, "");
    (void)tr_req_header(&req, "x-request-id");
    tr__arena_reset(&impl.arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router) {
        router = tr_router_new();
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
            if (tr_router_add(router, &routes[i]) != 0) abort();
    }
    if (size == 0) return 0;

    size_t piece = data[0] ? data[0] : SIZE_MAX;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, off = 0, end = 0;
    ctx_t c = {0};
    tr_http_parser_t p;

    tr__http_parser_init(&p, MAX_HEADER_BYTES, MAX_BODY_BYTES, on_head, &c);
    while (off < len) {
        if (end <= off) end = len - off > piece ? off + piece : len;
        size_t used = 0;
        tr_http_parse_result_t r = tr__http_parser_feed(&p, in + off, end - off, &used);
        if (used > end - off) abort();
        off += used;
        if (r == TR_HTTP_FAILED) break;
        if (r == TR_HTTP_REQUEST) {
            use_request(&p, &c);
            if (!p.keep_alive) break;
            tr__http_parser_next(&p);
        } else if (off != end) {
            abort();
        }
    }
    tr__http_parser_free(&p);
    return 0;
}

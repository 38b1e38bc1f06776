/*
 * authcall.c - calls to auth's /internal/ endpoints (see authcall.h): one
 * request with the internal token, its JSON answer buffered (bounded) and
 * parsed for the caller.
 */
#include "kit/authcall.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/http.h"

#define AUTH_CALL_MAX (8u << 20)

struct tr__auth_call {
    tr__auth_call_cb cb;
    void *arg;
    tr_client_req_t *creq;
    tr_buf_t answer;
    int status;
};

static void call_end(tr__auth_call_t *c, int err)
{
    json_t *doc = NULL;
    if (err == 0) {
        json_error_t jerr;
        doc = json_loadb(c->answer.data ? c->answer.data : "", c->answer.len, 0, &jerr);
    }
    c->cb(c->arg, err, c->status, doc);
    json_decref(doc);
    tr_buf_free(&c->answer);
    free(c);
}

static void call_on_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n, void *data)
{
    (void)r;
    (void)h;
    (void)n;
    ((tr__auth_call_t *)data)->status = status;
}

static void call_on_body(tr_client_req_t *r, const char *chunk, size_t len, void *data)
{
    tr__auth_call_t *c = data;
    if (tr_buf_append(&c->answer, chunk, len) != 0) {
        tr_client_cancel(r);
        call_end(c, -EPROTO);
    }
}

static void call_on_done(tr_client_req_t *r, void *data)
{
    (void)r;
    call_end(data, 0);
}

static void call_on_error(tr_client_req_t *r, int err, void *data)
{
    (void)r;
    call_end(data, err);
}

static const tr_client_callbacks_t call_callbacks = {.on_head = call_on_head,
                                                     .on_body = call_on_body,
                                                     .on_done = call_on_done,
                                                     .on_error = call_on_error};

int tr__auth_call(const tr__auth_link_t *link, const char *method, const char *target,
                  const char *body, uint64_t timeout_ms, tr__auth_call_cb cb, void *arg,
                  tr__auth_call_t **out)
{
    tr_header_t headers[] = {{TR_INTERNAL_TOKEN_HEADER, link->internal_token},
                             {"Content-Type", "application/json"}};
    tr__auth_call_t *c = tr_xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    tr_buf_init(&c->answer, AUTH_CALL_MAX);
    tr_client_opts_t o;
    tr_client_opts_init(&o);
    o.method = method;
    o.target = target;
    o.headers = headers;
    o.nheaders = body ? 2 : 1;
    o.body = body;
    o.body_len = body ? strlen(body) : 0;
    o.connect_timeout_ms = 500;
    o.total_timeout_ms = timeout_ms;
    o.retry.max_retries = 0; /* callers retry on their own schedule */
    o.cb = &call_callbacks;
    o.data = c;
    tr_upstream_t *up = atomic_load(link->auth);
    int rc = up ? tr_client_request(link->client, up, &o, &c->creq) : -EAGAIN;
    if (rc != 0) {
        tr_buf_free(&c->answer);
        free(c);
        return rc;
    }
    if (out) *out = c;
    return 0;
}

void tr__auth_call_cancel(tr__auth_call_t *c)
{
    if (!c) return;
    tr_client_cancel(c->creq);
    tr_buf_free(&c->answer);
    free(c);
}

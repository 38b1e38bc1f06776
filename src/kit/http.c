/*
 * http.c - the request accessors and answer functions of http.h.
 *
 * Sending is the server's job, reached through req->impl->ops
 * (http_internal.h, DIRECTION: this file never calls into server.c); this
 * file turns what handlers have (JSON, error codes) into bytes, and owns the
 * per-request arena and the one definition of the error envelope.
 *
 * ARENA. Requests allocate small things (decoded parameters, copies of
 * strings), almost always less than the inline block kept in the connection.
 * Larger needs chain malloc'ed blocks that tr__arena_reset() frees when the
 * request is answered, so a request never costs a malloc in the common case.
 */
#include "kit/http.h"
#include "kit/alloc.h"
#include "kit/http_internal.h"

#include <errno.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARENA_BLOCK_BYTES 4096
#define JSON_STACK_BYTES  4096

struct tr__arena_block {
    tr__arena_block_t *next;
    size_t size;
    size_t used;
    max_align_t data[];
};

static void *arena_alloc(tr__arena_t *a, size_t size)
{
    size_t align = alignof(max_align_t);
    size = size ? (size + align - 1) & ~(align - 1) : align;

    if (size <= TR__ARENA_INLINE - a->used) {
        void *p = a->inline_buf + a->used;
        a->used += size;
        return p;
    }
    tr__arena_block_t *b = a->blocks;
    if (!b || size > b->size - b->used) {
        size_t cap = size > ARENA_BLOCK_BYTES ? size : ARENA_BLOCK_BYTES;
        b = tr_xmalloc(sizeof(*b) + cap);
        b->size = cap;
        b->used = 0;
        b->next = a->blocks;
        a->blocks = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    return p;
}

void tr__arena_reset(tr__arena_t *a)
{
    while (a->blocks) {
        tr__arena_block_t *next = a->blocks->next;
        free(a->blocks);
        a->blocks = next;
    }
    a->used = 0;
}

void *tr_req_alloc(tr_req_t *req, size_t size)
{
    return arena_alloc(&req->impl->arena, size);
}

void *tr_req_zalloc(tr_req_t *req, size_t size)
{
    return memset(arena_alloc(&req->impl->arena, size), 0, size);
}

char *tr_req_strdup(tr_req_t *req, const char *s)
{
    if (!s) return NULL;
    size_t len = strlen(s);
    char *d = arena_alloc(&req->impl->arena, len + 1);
    memcpy(d, s, len + 1);
    return d;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes one character at in[*i] (advancing *i); the rule shared by
 * tr__percent_decode and the allocation-free key comparison below. */
static char decode_char(const char *in, size_t len, size_t *i, bool plus_is_space)
{
    char c = in[*i];
    if (c == '+' && plus_is_space) {
        (*i)++;
        return ' ';
    }
    if (c == '%' && *i + 2 < len) {
        int hi = hex_digit(in[*i + 1]);
        int lo = hex_digit(in[*i + 2]);
        if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
            *i += 3;
            return (char)(hi << 4 | lo);
        }
    }
    (*i)++;
    return c;
}

size_t tr__percent_decode(char *out, const char *in, size_t len, bool plus_is_space)
{
    size_t i = 0, n = 0;
    while (i < len)
        out[n++] = decode_char(in, len, &i, plus_is_space);
    out[n] = '\0';
    return n;
}

const char *tr_req_header(const tr_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

const char *tr_req_param(const tr_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0) return req->params[i].value;
    return NULL;
}

/* True when the encoded key (len bytes) decodes to exactly name. */
static bool key_equals(const char *key, size_t len, const char *name)
{
    size_t i = 0;
    while (i < len) {
        if (*name == '\0' || decode_char(key, len, &i, true) != *name) return false;
        name++;
    }
    return *name == '\0';
}

const char *tr_req_query(tr_req_t *req, const char *name)
{
    const char *p = req->query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t key_len = eq ? (size_t)(eq - p) : len;
        if (key_equals(p, key_len, name)) {
            const char *value = eq ? eq + 1 : p + len;
            size_t value_len = (size_t)(p + len - value);
            char *out = tr_req_alloc(req, value_len + 1);
            tr__percent_decode(out, value, value_len, true);
            return out;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

bool tr_req_cancelled(const tr_req_t *req)
{
    return req->impl->cancelled;
}

static bool is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Headers the server writes itself; a handler's copy would duplicate or
 * contradict them. Date and X-Request-Id stop being managed when the
 * handler opted out of them (tr_res_omit). */
static bool is_managed_header(const char *name, unsigned omit)
{
    static const struct {
        const char *name;
        unsigned omit_flag;
    } managed[] = {
        {"content-length", 0},
        {"content-type", 0},
        {"date", TR_RES_OMIT_DATE},
        {"connection", 0},
        {"x-request-id", TR_RES_OMIT_REQUEST_ID},
        {"transfer-encoding", 0},
    };
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++)
        if (strcasecmp(name, managed[i].name) == 0) return !(omit & managed[i].omit_flag);
    return false;
}

int tr_res_header(tr_req_t *req, const char *name, const char *value)
{
    int rc = 0;
    if (!name || !*name || !value || is_managed_header(name, req->impl->omit)) {
        rc = -EINVAL;
        goto out;
    }
    for (const char *p = name; *p; p++) {
        if (!is_token_char((unsigned char)*p)) {
            rc = -EINVAL;
            goto out;
        }
    }
    /* CR or LF in a value would let it inject headers or a whole response. */
    if (value[strcspn(value, "\r\n")] != '\0') {
        rc = -EINVAL;
        goto out;
    }

    tr_buf_t *b = &req->impl->res_headers;
    size_t before = b->len;
    if (tr_buf_append_str(b, name) || tr_buf_append(b, ": ", 2) || tr_buf_append_str(b, value) ||
        tr_buf_append(b, "\r\n", 2)) {
        /* Over the limit: drop this header whole rather than half of it. */
        b->len = before;
        if (b->data) b->data[before] = '\0';
        rc = TR_ETOOBIG;
    }
out:
    return rc;
}

void tr_res_omit(tr_req_t *req, unsigned flags)
{
    req->impl->omit |= flags & (TR_RES_OMIT_DATE | TR_RES_OMIT_REQUEST_ID);
}

bool tr_respond_started(const tr_req_t *req)
{
    return req->impl->res_started;
}

void tr_respond(tr_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    req->impl->ops->respond(req, status, content_type, body, len);
}

void tr_respond_json(tr_req_t *req, int status, json_t *body)
{
    char stack[JSON_STACK_BYTES];
    char *heap = NULL;
    const char *out = stack;
    size_t n = 0;

    if (!body) {
        req->impl->ops->respond(req, status, NULL, NULL, 0);
        return;
    }
    n = json_dumpb(body, stack, sizeof(stack), JSON_COMPACT | JSON_ENCODE_ANY);
    if (n > sizeof(stack)) {
        heap = tr_xmalloc(n);
        n = json_dumpb(body, heap, n, JSON_COMPACT | JSON_ENCODE_ANY);
        out = heap;
    }
    json_decref(body);
    if (n == 0) {
        /* Only a value jansson cannot encode gets here: a handler bug. */
        free(heap);
        tr_respond_error(req, TR_ERR_INTERNAL, "response could not be encoded", NULL);
        return;
    }
    req->impl->ops->respond(req, status, "application/json", out, n);
    free(heap);
}

void tr_respond_error(tr_req_t *req, tr_err_t err, const char *message, json_t *details)
{
    tr_respond_json(req, tr_err_status(err),
                    tr_error_envelope(err, message, req->request_id, details));
}

void tr_respond_body_error(tr_req_t *req, int status)
{
    if (tr_respond_started(req)) {
        req->impl->ops->abort(req);
        return;
    }
    switch (status) {
    case -EMSGSIZE:
        tr_respond_error(req, TR_ERR_PAYLOAD_TOO_LARGE, "request body too large", NULL);
        break;
    case -ETIMEDOUT:
        tr_respond_error(req, TR_ERR_REQUEST_TIMEOUT, "request body not received in time", NULL);
        break;
    default:
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT, "malformed or incomplete request body",
                         NULL);
        break;
    }
}

json_t *tr_error_envelope(tr_err_t err, const char *message, const char *request_id,
                          json_t *details)
{
    json_t *error = json_object();
    json_t *text = message ? json_string(message) : NULL;
    /* A message that is not valid UTF-8 cannot go into JSON. */
    if (!text) text = json_string(tr_http_reason(tr_err_status(err)));
    json_object_set_new(error, "code", json_string(tr_err_code(err)));
    json_object_set_new(error, "message", text);
    json_object_set_new(error, "request_id", json_string(request_id ? request_id : ""));
    if (details) json_object_set_new(error, "details", details);

    json_t *root = json_object();
    json_object_set_new(root, "error", error);
    return root;
}

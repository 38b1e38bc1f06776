/*
 * http.h - one HTTP request as a handler sees it, and the ways to answer it.
 *
 * LIFETIME. The server creates a tr_req_t when a complete request has been
 * read and hands it to the service's dispatch function. From then on the
 * request belongs to whoever will answer it: a handler answers at once or
 * later (after a thread-pool job or a call to another service completes) by
 * calling exactly one tr_respond*() function on the worker loop that owns the
 * request. tr_respond*() sends (or, if the client has gone, discards) the
 * answer, writes the access log line, records metrics and frees the request
 * and everything allocated with tr_req_alloc(). The request must not be
 * touched after that call.
 *
 * THREADS. A request lives on one worker loop (req->worker->loop). Code that
 * runs on the libuv thread pool may read the request but must answer it from
 * the after-work callback, which runs back on the loop.
 */
#ifndef TR_HTTP_H
#define TR_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/errors.h"

typedef struct tr_worker tr_worker_t;
typedef struct tr_route tr_route_t;
typedef struct tr_req_impl tr_req_impl_t;

#define TR_MAX_PARAMS 8
#define TR_REQUEST_ID_MAX 128

typedef struct tr_header {
    const char *name; /* as sent; compare case-insensitively */
    const char *value;
} tr_header_t;

typedef struct tr_param {
    const char *name;  /* template name, e.g. "id" of {id} */
    const char *value; /* percent-decoded path segment */
} tr_param_t;

/* W3C trace context of the request (https://www.w3.org/TR/trace-context/). */
typedef struct tr_trace {
    char trace_id[33];  /* 32 lowercase hex; from traceparent or generated */
    char parent_id[17]; /* caller's span id, "" when the trace started here */
    char span_id[17];   /* this request's span id */
    uint8_t flags;      /* trace-flags (bit 0: sampled) */
} tr_trace_t;

/* Who is calling, filled by the service's authenticator. */
typedef struct tr_identity {
    char user_id[40];    /* UUIDv7 of the user; "" when anonymous */
    char role[24];       /* admin, moderator, verified_user, user */
    char session_id[40]; /* session the token belongs to; "" for API keys */
    char method[8];      /* "jwt" or "api_key" */
    int64_t expires_at;  /* token exp (unix seconds), 0 for API keys */
} tr_identity_t;

typedef struct tr_req {
    const char *method; /* "GET", "POST", ... */
    const char *target; /* request-target as sent: path and query */
    const char *path;   /* path part of target, not percent-decoded */
    const char *query;  /* query part without '?', "" when none */
    int http_minor;     /* 0 or 1 (HTTP/1.x) */

    const tr_header_t *headers; /* in arrival order */
    size_t nheaders;

    const char *body; /* NUL-terminated; "" when the request had none */
    size_t body_len;

    char request_id[TR_REQUEST_ID_MAX + 1]; /* accepted or generated */
    tr_trace_t trace;
    const char *client_ip; /* peer address as text */

    const tr_route_t *route; /* the matched route */
    tr_param_t params[TR_MAX_PARAMS];
    size_t nparams;

    bool authenticated;
    tr_identity_t identity;

    tr_worker_t *worker; /* the loop and per-worker state that own this request */
    void *handler_data;  /* free for the handler's own use */

    tr_req_impl_t *impl; /* the server's private state */
} tr_req_t;

/* Header value by case-insensitive name, or NULL. The first of repeats wins. */
const char *tr_req_header(const tr_req_t *req, const char *name);
/* Path parameter by template name, or NULL. */
const char *tr_req_param(const tr_req_t *req, const char *name);
/* Percent-decoded query parameter by name, allocated in the request's arena;
 * NULL when absent. The first occurrence wins. */
const char *tr_req_query(tr_req_t *req, const char *name);

/* Memory that lives exactly as long as the request (freed by tr_respond*). */
void *tr_req_alloc(tr_req_t *req, size_t size);
char *tr_req_strdup(tr_req_t *req, const char *s);

/* True when the client closed the connection while the request was pending;
 * the handler should still call tr_respond*() to release the request. */
bool tr_req_cancelled(const tr_req_t *req);

/* Adds a response header (copied). Call before tr_respond*(). Content-Length,
 * Content-Type, Date, Connection and X-Request-Id are managed by the server. */
void tr_res_header(tr_req_t *req, const char *name, const char *value);

/* Answers with the given body (copied; may be NULL when len is 0). For HEAD
 * requests the body is not sent but Content-Length is kept. */
void tr_respond(tr_req_t *req, int status, const char *content_type, const void *body,
                size_t len);
/* Answers with a JSON body. Takes ownership of body (the reference is stolen);
 * body NULL sends no body (use with 204). */
void tr_respond_json(tr_req_t *req, int status, json_t *body);
/* Answers with the standard error envelope of ARCHITECTURE.md §5:
 * {"error":{"code","message","request_id","details"?}}; the status comes from
 * err. Takes ownership of details (a JSON array, may be NULL). */
void tr_respond_error(tr_req_t *req, tr_err_t err, const char *message, json_t *details);

/* Builds the error envelope object (the one place its shape is defined).
 * Returns a new reference. details is stolen and may be NULL. */
json_t *tr_error_envelope(tr_err_t err, const char *message, const char *request_id,
                          json_t *details);

#endif

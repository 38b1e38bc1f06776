/*
 * http.h - one HTTP request as a handler sees it, and the ways to answer it.
 *
 * LIFETIME. The server creates a tr_req_t when a request's headers are
 * complete and hands it to the service's dispatch function once it is ready
 * (the whole body read, or at once for a streamed body; see server.h). From
 * then on the request belongs to whoever will answer it: a handler answers at
 * once or later (after a thread-pool job or a call to another service
 * completes) on the worker loop that owns the request, by calling exactly
 * one of
 *   - tr_respond(), tr_respond_json(), tr_respond_error(),
 *     tr_respond_body_error()                    (whole answers),
 *   - tr_respond_start(), tr_respond_write()..., then tr_respond_end() or
 *     tr_respond_abort()                         (streamed answers),
 *   - tr_req_upgrade()                           (connection hand-off).
 * Answering sends (or, if the client has gone, discards) the answer, reports
 * it to the server's on_complete hook (access log, metrics) and releases the
 * request and everything allocated with tr_req_alloc(). The request must not
 * be touched after that call, with one exception: write callbacks still
 * pending after tr_respond_end()/tr_respond_abort() run with the request
 * valid (see tr_write_cb).
 *
 * THREADS. A request lives on one worker loop (req->worker->loop). Code that
 * runs on the libuv thread pool may read the request but must answer it from
 * the after-work callback, which runs back on the loop. Every function here
 * must be called on that loop, and every callback runs on it.
 *
 * STREAMED REQUEST BODIES. A request dispatched in TR_BODY_STREAM mode
 * (chosen by the server's on_headers hook, server.h) has req->body "" and its
 * body not yet read. The handler calls tr_req_body_start() to receive it
 * piecewise, de-chunked, and may pause and resume the flow: while paused the
 * server stops reading the socket once it holds about one read's worth
 * (<= 64 KiB + max_header_bytes), so a slow consumer makes TCP push back on
 * the client instead of making the server buffer. A handler that answers
 * without reading the body, or before its end, gets no more body callbacks:
 * the server discards the rest, or closes the connection after the answer
 * when discarding is not worth it (server.h, EARLY ANSWERS).
 *
 * STREAMED ANSWERS. tr_respond_start() fixes the status and headers;
 * tr_respond_write() queues body bytes without copying them and calls back
 * once they are handed to the kernel, which is the backpressure signal (a
 * proxy reads the next upstream chunk only then); tr_respond_end() completes
 * the answer exactly like tr_respond() (keep-alive, pipelining, on_complete).
 *
 * SERVER-MANAGED RESPONSE HEADERS. The server writes Date, Content-Length,
 * Content-Type, Transfer-Encoding, Connection and X-Request-Id itself;
 * tr_res_header() refuses them, so headers copied from an upstream cannot
 * duplicate or contradict the framing. Content-Type and Content-Length are
 * arguments of tr_respond*()/tr_respond_start(); Date and X-Request-Id can
 * be given up with tr_res_omit() (tr_res_header() then accepts them).
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

/* The header that carries the shared internal service token on calls to
 * /internal/ routes (kit/service.h, INTERNAL ROUTES). */
#define TR_INTERNAL_TOKEN_HEADER "X-Internal-Token"

#define TR_MAX_PARAMS     8
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
    bool tls;              /* the connection is TLS (server tls_cert_file/tls_key_file) */
    int local_port;        /* the server's port the client connected to */

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

/* Memory that lives exactly as long as the request (freed when it is
 * answered). */
void *tr_req_alloc(tr_req_t *req, size_t size);
char *tr_req_strdup(tr_req_t *req, const char *s);
/* tr_req_alloc, zeroed: the usual way to get a handler's context. */
void *tr_req_zalloc(tr_req_t *req, size_t size);

/* True when the client closed the connection while the request was pending.
 * The handler must still answer (any whole answer, or tr_respond_end() /
 * tr_respond_abort() after tr_respond_start()) to release the request; the
 * answer is then discarded. */
bool tr_req_cancelled(const tr_req_t *req);

/* Called at most once, from the loop, when the client goes away (closes or
 * half-closes its connection, or the connection fails or is closed by the
 * drain deadline) while req is pending: not answered, or its streamed
 * answer not ended. tr_req_cancelled() is then true. A streaming body's
 * on_end(-ECONNRESET) and failed write callbacks come first. The handler
 * must still answer (the answer is discarded); it may do so from the
 * callback. Setting it again replaces it; cb NULL clears it. A cb set after
 * the client left is never called: check tr_req_cancelled() after setting
 * it. */
typedef void (*tr_req_cancel_cb)(tr_req_t *req, void *arg);
void tr_req_on_cancel(tr_req_t *req, tr_req_cancel_cb cb, void *arg);

/* The request body's announced size: its Content-Length, -1 for a chunked
 * body (size unknown until its end), 0 when the request has no body. */
int64_t tr_req_body_length(const tr_req_t *req);

/* ---- streamed request bodies --------------------------------------------- */

/* A piece of the body, de-chunked; data is valid only during the call. The
 * callback may pause the body and may answer the request (whole or
 * streamed), but must not call tr_req_upgrade(). */
typedef void (*tr_body_data_cb)(tr_req_t *req, const char *data, size_t len, void *arg);
/* The body ended. status is 0 when it was received completely (trailers are
 * dropped), or a negative error after which no more of it will come and the
 * connection is closed after the answer:
 *   -EMSGSIZE    the body grew past the request's max_body (answer 413),
 *   -ETIMEDOUT   no byte for idle_timeout_ms while not paused (answer 408),
 *   -EBADMSG     malformed chunked framing (answer 400),
 *   -ECONNRESET  the client went away before sending the whole body
 *                (tr_req_cancelled() is true when it closed entirely).
 * tr_respond_body_error() turns such a status into the right answer. */
typedef void (*tr_body_end_cb)(tr_req_t *req, int status, void *arg);

/* Starts delivering the body: on_data for each piece, then on_end exactly
 * once, unless the request is answered first (then neither is called again).
 * Callbacks never run from inside tr_req_body_start() itself but from the
 * loop (when called from the dispatch function, possibly right after it
 * returns). A body that was buffered (TR_BODY_BUFFER, the default) comes as
 * one on_data with req->body (none when empty), then on_end(0). Sends
 * "100 Continue" first when the client asked for it and nothing of the
 * answer has been sent. on_data may be NULL to drop the body but still
 * learn of its end. A streamed answer may be under way meanwhile (full
 * duplex). Returns 0, or -EINVAL when called before dispatch (from
 * on_headers), twice, with on_end NULL, or after the request was answered;
 * then no callback is ever called. */
int tr_req_body_start(tr_req_t *req, tr_body_data_cb on_data, tr_body_end_cb on_end, void *arg);
/* Stops body delivery: no on_data, and no on_end(0), until
 * tr_req_body_resume() (an error end, e.g. the client leaving, still comes).
 * Takes effect at once, also from inside on_data (the rest of what was read
 * is kept for later). Idempotent. The body timeout does not run while
 * paused. */
void tr_req_body_pause(tr_req_t *req);
/* Resumes delivery; the next callbacks come from the loop, never from
 * inside this call. Idempotent; a no-op once the body ended or the request
 * was answered. */
void tr_req_body_resume(tr_req_t *req);

/* ---- response headers ---------------------------------------------------- */

/* Adds a response header (copied). Call before a whole answer or
 * tr_respond_start(). Returns 0; -EINVAL when the name is not a token, the
 * value holds CR or LF, or the name is server-managed (see the file
 * comment): the header is dropped; TR_ETOOBIG (kit/buf.h) when the headers
 * would exceed 16 KiB: dropped whole. Callers may ignore the result: a
 * dropped header never corrupts the answer. */
int tr_res_header(tr_req_t *req, const char *name, const char *value);

#define TR_RES_OMIT_DATE       0x1u /* no Date from the server (pass an upstream's) */
#define TR_RES_OMIT_REQUEST_ID 0x2u /* no X-Request-Id from the server */
/* Stops the server from writing the given managed headers in this request's
 * answer (flags are OR'ed); tr_res_header() then accepts those names. */
void tr_res_omit(tr_req_t *req, unsigned flags);

/* ---- whole answers ------------------------------------------------------- */

/* Answers with the given body (copied; may be NULL when len is 0). For HEAD
 * requests the body is not sent but Content-Length is kept. After
 * tr_respond_start() this is a bug: it is logged and handled as
 * tr_respond_abort(). (The same holds for the other whole answers.) */
void tr_respond(tr_req_t *req, int status, const char *content_type, const void *body, size_t len);
/* Answers with a JSON body. Takes ownership of body (the reference is stolen);
 * body NULL sends no body (use with 204). */
void tr_respond_json(tr_req_t *req, int status, json_t *body);
/* Answers with the standard error envelope of ARCHITECTURE.md §5:
 * {"error":{"code","message","request_id","details"?}}; the status comes from
 * err. Takes ownership of details (a JSON array, may be NULL). */
void tr_respond_error(tr_req_t *req, tr_err_t err, const char *message, json_t *details);
/* Answers a request whose body failed (status as given to tr_body_end_cb):
 * 413, 408 or 400 (any other status) with the error envelope when no answer
 * has started, else tr_respond_abort(). */
void tr_respond_body_error(tr_req_t *req, int status);

/* Builds the error envelope object (the one place its shape is defined).
 * Returns a new reference. details is stolen and may be NULL. */
json_t *tr_error_envelope(tr_err_t err, const char *message, const char *request_id,
                          json_t *details);

/* ---- streamed answers ---------------------------------------------------- */

/* Called once per successful tr_respond_write(), in order, from the loop
 * (never from inside tr_respond_write()): status 0 when the bytes were handed
 * to the kernel (or dropped because the answer has no body: HEAD, 204, 304),
 * -ECONNRESET when the client went away first. The data may be reused or
 * freed from then on. req is valid during the call even when it comes after
 * tr_respond_end() or tr_respond_abort(), but must not be answered again. */
typedef void (*tr_write_cb)(tr_req_t *req, int status, void *arg);

/* Starts a streamed answer with status (200..599), the headers added so far
 * with tr_res_header(), content_type (NULL: no Content-Type) and
 * content_length: >= 0 sends Content-Length and the body must be exactly that
 * long; -1 sends Transfer-Encoding: chunked to HTTP/1.1 clients, and to
 * HTTP/1.0 clients a body delimited by closing the connection. HEAD gets the
 * framing headers a GET would get and no body; 204 and 304 get neither;
 * their body bytes are dropped. The head goes out with the first write or
 * the end, in the same packet. Returns 0, or -EINVAL (nothing happened, the
 * request is still to be answered) when the request was already answered or
 * started, or the status or length is invalid. When the client is gone it
 * returns 0 and writes then fail. */
int tr_respond_start(tr_req_t *req, int status, const char *content_type, int64_t content_length);
/* Queues len body bytes (at most 1 GiB per call). They are NOT copied when
 * cb is non-NULL: they must stay valid and unchanged until cb is called.
 * With cb NULL they are copied (at most 256 MiB in flight that way). len 0 is allowed (its callback
 * still comes, in order). Returns 0, or: -EINVAL before tr_respond_start(), after the end, or when
 * the bytes would exceed the announced Content-Length; -ECONNRESET when the client is gone;
 * TR_ETOOBIG when copying would exceed the limit. On error nothing was queued and cb is never
 * called. */
int tr_respond_write(tr_req_t *req, const void *data, size_t len, tr_write_cb cb, void *arg);
/* Completes a streamed answer (sends the last chunk of a chunked body),
 * reports it to on_complete, and goes on with the connection like
 * tr_respond() (keep-alive, the next pipelined request) once everything is
 * written. An answer shorter than its Content-Length cannot be completed: it
 * is logged and handled as tr_respond_abort(). Returns 0, or -EINVAL (no
 * effect) when the answer was not started or already ended. */
int tr_respond_end(tr_req_t *req);
/* Ends the request without completing its answer (an upstream broke off):
 * what was queued is still written, then the connection is closed, so the
 * client sees a truncated body, or no answer at all when nothing was
 * started. on_complete gets the started status, else 499. */
void tr_respond_abort(tr_req_t *req);
/* True once tr_respond_start() was called for this request. */
bool tr_respond_started(const tr_req_t *req);

/* ---- connection hand-off (Upgrade) --------------------------------------- */

typedef struct tr_upgrade {
    int fd;        /* the client's connected TCP socket: non-blocking, close-on-exec */
    char *pending; /* bytes the client sent after the request head (malloc'ed,
                    * NUL-terminated), NULL when none */
    size_t pending_len;
} tr_upgrade_t;

/* Takes the client connection away from the HTTP server for a protocol
 * switch (WebSocket pass-through) the handler decided, typically after the
 * upstream answered 101. Nothing is written to the client: the caller writes
 * the 101 response head itself (e.g. the upstream's) on the socket. The
 * request must be complete (body fully read; an Upgrade request normally has
 * none), not answered or started, and no "100 Continue" still being written.
 * On success the request is reported to on_complete with status (normally
 * 101; 0 bytes sent) and released; the server forgets the connection (it no
 * longer counts toward max_connections, in-flight requests or the shutdown
 * drain; the server's handles on it are closed); and the caller owns out->fd
 * (close() it, or uv_tcp_open() it on this worker's loop and uv_close() the
 * handle) and out->pending (free() it). The caller must have closed what it
 * took over when its worker_stop hook returns, or the worker's loop cannot
 * close cleanly. Returns 0, or -EINVAL (request not in that state),
 * -ECONNRESET (the client is gone), -ENOTSUP (a TLS connection: its
 * session state cannot be handed over with the socket) or a negative errno
 * from dup(); then nothing changed and the request is still to be answered. */
int tr_req_upgrade(tr_req_t *req, int status, tr_upgrade_t *out);

#endif

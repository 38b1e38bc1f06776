/*
 * client.h - the kit's asynchronous HTTP/1.1 client, streaming both ways.
 *
 * THREADS. A tr_client_t belongs to one libuv loop (one per worker thread)
 * and every call on it, on its requests, and every callback, happens on that
 * loop's thread. Upstreams (upstream.h) are shared between the clients of all
 * workers; the connection pools, balancer cursors and retry budgets are per
 * client, so the hot path takes no lock.
 *
 * A REQUEST goes to one upstream. Each try picks an available instance
 * (upstream.h), takes an idle keep-alive connection to it from this client's
 * pool or opens one, writes the request head and body, and parses the
 * response with llhttp. When the response has been read completely, the
 * request body was fully written, the upstream allowed keep-alive and nothing
 * unexpected followed the response, the connection goes back to the pool;
 * otherwise it is closed. Idle pooled connections keep reading so an upstream
 * that closes one is noticed at once, not on the next request.
 *
 * CALLBACKS. A request that tr_client_request accepted ends with exactly one
 * of on_done, on_error or on_upgrade, unless the caller cancels it first
 * (then none). on_head comes at most once, before any on_body and before
 * on_done; on_error may come after on_head (the upstream failed mid-body: the
 * caller must abort whatever it was relaying). After on_done/on_error/
 * on_upgrade returns, the tr_client_req_t is gone. Callbacks may call
 * tr_client_cancel, tr_client_pause, tr_client_resume, tr_client_write and
 * tr_client_end on their own request, and may start new requests.
 * on_done/on_error are never called from inside tr_client_request or
 * tr_client_write/tr_client_end (they always come from the loop).
 *
 * RETRIES (retry.h) happen inside the client and are invisible to the caller,
 * but only before on_head: once the caller has seen a response head it gets
 * that response. A response whose status the policy retries (e.g. 503) is
 * discarded (its connection closed) when a retry will follow, and delivered
 * when it will not (no retries left, not eligible, budget exhausted, or the
 * backoff would overrun the total timeout). Each try asks the circuit breaker
 * first; a breaker that opened meanwhile ends the request with
 * TR_CLIENT_EBREAKER_OPEN.
 *
 * TIMEOUTS (0 disables each):
 *   connect_timeout_ms  establishing one TCP connection;
 *   try_timeout_ms      one try, from its start to the response head;
 *   total_timeout_ms    the whole request, from the start (for streamed
 *                       bodies: from tr_client_end, so an upload of any
 *                       length is not cut) to the response head, retries and
 *                       backoff included;
 *   idle_timeout_ms     after the head, the response body making no progress
 *                       while the caller has not paused it.
 * A timeout before the head is TR_CLIENT_ETRY_TIMEOUT / ETOTAL_TIMEOUT
 * (504 for the gateway); an idle body is TR_CLIENT_EIDLE_TIMEOUT.
 *
 * FRAMING. The client writes Content-Length or chunked Transfer-Encoding
 * itself and drops Content-Length, Transfer-Encoding and Connection from the
 * caller's headers; stripping the other hop-by-hop headers when proxying
 * (Keep-Alive, Proxy-*, TE, Trailer, Upgrade) is the caller's job. Host is
 * sent as the instance's host:port unless the caller passes one. Response
 * bodies arrive de-chunked. Responses to HEAD, 1xx (skipped, except 101 in
 * upgrade mode), 204 and 304 have no body.
 *
 * FAILURE ACCOUNTING. Connect errors, timeouts, resets before the head,
 * malformed responses and 5xx statuses count as failures for the breaker and
 * for the instance's outlier detection; any other response is a success.
 * Cancelled requests count as neither, and neither does a reused keep-alive
 * connection that turns out closed before any response byte (the upstream
 * closed it while idle: a race, not a sign of ill health; the try is retried
 * like any reset when the request is retryable).
 */
#ifndef TR_CLIENT_H
#define TR_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kit/errors.h"
#include "kit/http.h"
#include "kit/retry.h"
#include "kit/upstream.h"

typedef struct tr_client tr_client_t;
typedef struct tr_client_req tr_client_req_t;

/* Client errors (negative, distinct from errno values and TR_ETOOBIG). */
#define TR_CLIENT_ECONNECT         (-7101) /* connect refused, unreachable or reset */
#define TR_CLIENT_ECONNECT_TIMEOUT (-7102) /* connect_timeout_ms passed */
#define TR_CLIENT_ETRY_TIMEOUT     (-7103) /* try_timeout_ms passed on the last try */
#define TR_CLIENT_ETOTAL_TIMEOUT   (-7104) /* total_timeout_ms passed */
#define TR_CLIENT_EIDLE_TIMEOUT    (-7105) /* response body stalled for idle_timeout_ms */
#define TR_CLIENT_ECLOSED          (-7106) /* upstream closed or reset mid-exchange */
#define TR_CLIENT_EPROTOCOL        (-7107) /* malformed or oversized response */
#define TR_CLIENT_EBREAKER_OPEN    (-7108) /* the upstream's circuit breaker is open */
#define TR_CLIENT_ENO_HEALTHY      (-7109) /* no instance is healthy and not ejected */

/* Short name of a client error ("connect_failed", "timeout", "closed",
 * "protocol", "breaker_open", "no_healthy"), or "error" for anything else.
 * These are the status label values of upstream_requests_total. */
const char *tr_client_error_name(int err);
/* Human-readable text for logs. */
const char *tr_client_strerror(int err);
/* The public error a proxy answers with: connect errors, breaker open and no
 * healthy instance -> TR_ERR_UNAVAILABLE (503); timeouts ->
 * TR_ERR_DEADLINE_EXCEEDED (504); closed, protocol and anything else ->
 * TR_ERR_BAD_GATEWAY (502). */
tr_err_t tr_client_error_public(int err);

typedef struct tr_client_callbacks {
    /* The response head. headers and their strings are valid only during the
     * call. May be NULL. */
    void (*on_head)(tr_client_req_t *r, int status, const tr_header_t *headers, size_t nheaders,
                    void *data);
    /* A piece of the (de-chunked) response body, valid only during the call,
     * or, when the callback pauses the request (tr_client_pause), valid and
     * unchanged until the caller resumes or cancels it: a proxy can hand the
     * bytes to a zero-copy write, pause, and resume from the write's
     * completion. May be NULL (the body is read and dropped). */
    void (*on_body)(tr_client_req_t *r, const char *chunk, size_t len, void *data);
    /* The response is complete. Required. */
    void (*on_done)(tr_client_req_t *r, void *data);
    /* The request failed with a TR_CLIENT_E* code. Required. */
    void (*on_error)(tr_client_req_t *r, int err, void *data);
    /* Streamed request bodies: every byte given to tr_client_write so far has
     * been handed to the kernel (the write queue is empty again). Called only
     * after a tr_client_write that left bytes queued. May be NULL. */
    void (*on_written)(tr_client_req_t *r, void *data);
    /* Upgrade mode: the upstream answered 101. The caller now owns stream:
     * reading is stopped, stream->data is the caller's to set, and it must be
     * closed with uv_close() and free()d in (or after) the close callback.
     * extra holds bytes that arrived after the response head (already read
     * from the socket; valid only during the call). Required with upgrade. */
    void (*on_upgrade)(tr_client_req_t *r, const tr_header_t *headers, size_t nheaders,
                       uv_tcp_t *stream, const char *extra, size_t extra_len, void *data);
} tr_client_callbacks_t;

typedef struct tr_client_opts {
    const char *method; /* "GET", ... (copied into the head) */
    const char *target; /* path and query, e.g. "/api/x?y=1" (copied) */
    /* Request headers, copied into the head at tr_client_request. A name or
     * value containing CR or LF, or an empty name, is rejected (-EINVAL). */
    const tr_header_t *headers;
    size_t nheaders;

    /* Buffered body: borrowed, must stay valid and unchanged until the
     * request ends (it is re-sent by retries). Content-Length is sent when
     * body_len > 0 or the method is not GET, HEAD, DELETE, OPTIONS or TRACE. */
    const void *body;
    size_t body_len;
    /* Streamed body: the caller sends it with tr_client_write/tr_client_end.
     * stream_length >= 0 sends Content-Length (the caller must write exactly
     * that many bytes), -1 sends chunked. */
    bool stream_body;
    int64_t stream_length;

    /* Upgrade mode (WebSocket pass-through): sends "Connection: Upgrade";
     * the caller passes the Upgrade header and the protocol's own headers.
     * Never retried, and no streamed body. A 101 answer ends with on_upgrade;
     * any other answer is delivered as a normal response and its connection
     * is not reused. */
    bool upgrade;

    uint64_t connect_timeout_ms; /* default 2000 */
    uint64_t try_timeout_ms;     /* default 0 (only the total applies) */
    uint64_t total_timeout_ms;   /* default 30000 */
    uint64_t idle_timeout_ms;    /* default 60000 */
    tr_retry_policy_t retry;     /* default tr_retry_policy_defaults */

    const tr_client_callbacks_t *cb; /* borrowed; must outlive the request */
    void *data;                      /* passed to every callback */
} tr_client_opts_t;

/* Fills o with the defaults above (method GET, target "/", no headers, no
 * body, no callbacks). */
void tr_client_opts_init(tr_client_opts_t *o);

/* Creates a client on loop. Its housekeeping timer (closing expired idle
 * connections, dropping retired upstreams) and its idle connections do not
 * keep the loop alive. Returns 0 (never fails today; the int is for the
 * style of the kit). */
int tr_client_new(uv_loop_t *loop, tr_client_t **out);
/* Cancels every request still in flight (no callbacks), stops health checks
 * and closes every connection and timer. Not from inside a client callback. The memory is released
 * by the close callbacks, so the loop must run once more (uv_run, UV_RUN_DEFAULT) before
 * uv_loop_close. Streams handed over by on_upgrade are the caller's and are not touched. */
void tr_client_free(tr_client_t *c);

/* Starts a request to up. On success returns 0 and *out (may be NULL when
 * the caller does not need the handle, e.g. no streamed body and no cancel);
 * the callbacks report the rest. On failure no callback will be called and
 * returns: -EINVAL (bad options or header), TR_CLIENT_EBREAKER_OPEN or
 * TR_CLIENT_ENO_HEALTHY (fail fast, also counted in
 * upstream_requests_total). */
int tr_client_request(tr_client_t *c, tr_upstream_t *up, const tr_client_opts_t *o,
                      tr_client_req_t **out);

/* Streamed body: queues len bytes (copied; len 0 is a no-op). Returns 0 or
 * -EINVAL when the request has no streamed body or it already ended. With
 * a Content-Length, writing more than announced is -EINVAL. Backpressure is
 * the caller's: stop feeding while tr_client_write_pending() is above what it
 * wants to hold and continue on on_written. */
int tr_client_write(tr_client_req_t *r, const void *data, size_t len);
/* Ends the streamed body (chunked: sends the last chunk) and starts the
 * total and per-try clocks. Returns 0 or -EINVAL (no streamed body, already
 * ended, or fewer bytes written than the announced length; the request is
 * then left as it was and the caller should cancel it). */
int tr_client_end(tr_client_req_t *r);
/* Bytes accepted by tr_client_write that the kernel has not taken yet. */
size_t tr_client_write_pending(const tr_client_req_t *r);

/* Stops delivering on_body (and reading from the upstream) until
 * tr_client_resume; at most one socket read's worth of body is held
 * meanwhile. Called before on_head, it takes effect right after on_head. */
void tr_client_pause(tr_client_req_t *r);
/* Continues delivery. Held body is delivered from the loop, not from inside
 * this call. */
void tr_client_resume(tr_client_req_t *r);

/* Abandons the request: no callback comes after this call, the connection (if
 * any) is closed rather than reused, a half-open probe slot is given back,
 * and r is freed. Safe from inside the request's own callbacks. The gateway
 * calls this when its client disconnects. */
void tr_client_cancel(tr_client_req_t *r);

/* "host:port" of the instance of the current (or last) try, "" before the
 * first try; for access logs. Valid while r is. */
const char *tr_client_req_instance(const tr_client_req_t *r);
/* Tries made so far (1 + retries). */
unsigned tr_client_req_tries(const tr_client_req_t *r);

/* Makes this client's loop run the active health checks of up (see
 * upstream.h); call it on exactly one worker per upstream. Checks stop when
 * the upstream is retired or the client freed. Returns 0, or -EINVAL when
 * up has no health_path, -EALREADY when this client already checks it. */
int tr_client_run_health_checks(tr_client_t *c, tr_upstream_t *up);

/*
 * PROPAGATION. Headers that carry the request id and the trace to the
 * upstream: X-Request-Id (the caller's) and a traceparent whose parent-id is
 * a fresh span id for the outgoing call, a child of the caller's span.
 */
typedef struct tr_client_propagation {
    char traceparent[56]; /* "00-<trace_id>-<span_id>-<flags>" */
    char span_id[17];     /* the outgoing call's span id */
} tr_client_propagation_t;

/* Fills out[0] (X-Request-Id) and out[1] (traceparent) from req; the values
 * point into req and p, which must outlive their use (tr_client_request copies
 * them). Returns the number of headers written (2). */
size_t tr_client_propagate(const tr_req_t *req, tr_client_propagation_t *p, tr_header_t out[2]);

#endif

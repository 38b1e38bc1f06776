/*
 * server.h - the HTTP/1.1 server: N worker threads, one libuv loop each,
 * each with its own SO_REUSEPORT listener on the same port.
 *
 * PROTOCOL. llhttp parses requests. Keep-alive is the default for HTTP/1.1;
 * pipelined requests are answered in order because a connection has at most
 * one request being handled at a time: reading pauses while a request is
 * pending and resumes (with whatever was already buffered) once the answer is
 * written. Chunked request bodies are de-chunked. HEAD gets the headers of
 * GET without the body. "Expect: 100-continue" gets "100 Continue" once the
 * route is known and the announced body fits, else the final error at once.
 *
 * LIMITS (all from tr_server_config_t):
 *   request line + headers over max_header_bytes -> 431 and close (414
 *     when the limit is reached inside the request-target)
 *   more than max_header_fields header fields -> 431 and close
 *   head and body not received within request_timeout_ms of the request's
 *     first byte -> 408 and close (-ETIMEDOUT to a streaming handler)
 *   framing refused by RFC 9112 (http_parser.h, FRAMING) -> 400 and close;
 *     a transfer coding other than chunked -> 501 and close
 *   body over the route's max_body (default max_body_bytes; for requests
 *     the on_headers hook claimed, the limit it set) -> 413 and close
 *   headers not complete within header_timeout_ms -> 408 and close
 *   keep-alive connection idle for idle_timeout_ms -> closed
 *   more than max_connections open on a worker -> 503 and close
 *   malformed request -> 400 and close
 *
 * ROUTING. When a request's headers are complete the server matches it with
 * the router (so the body limit is known before the body is read). A matched
 * request follows its route: the body is read whole (up to the route's
 * max_body), then the request goes to config->dispatch on the worker's loop.
 * One it does not match (no path, or the path under other methods only)
 * goes to config->on_headers when the config has that hook, else the server
 * answers 404, or 405 with Allow.
 *
 * HEADER-TIME HOOK (config->on_headers), for servers that route themselves
 * (the gateway). Without a router every request goes to the hook; with both,
 * the router's routes come first (e.g. /healthz, /metrics) and the hook gets
 * the rest. The hook sees the request with its head (method, target,
 * headers, request_id, trace, client_ip), req->route NULL and no body, and
 * may set req->handler_data, req->identity and response headers. It then
 * either
 *   - answers at once with a whole answer (tr_respond_error() for 401, 404,
 *     429, ...; a streamed answer or a hand-off is not for the hook) and
 *     returns 0; the body is then dealt with as under EARLY ANSWERS;
 *   - returns an HTTP status (400..599): the server answers it with the
 *     standard error envelope (404 "no route matches this path", 405 with
 *     the router's Allow when it knew the path, ...), as it would have
 *     without the hook;
 *   - returns 0 having set *mode (preset TR_BODY_BUFFER) and *max_body
 *     (preset max_body_bytes): TR_BODY_BUFFER reads the body whole, then
 *     calls dispatch; TR_BODY_STREAM calls dispatch at once and the handler
 *     reads the body with tr_req_body_start() (http.h). Either way a
 *     Content-Length over *max_body is answered 413 (with close) before
 *     dispatch, and a streamed body growing past it ends with -EMSGSIZE.
 * Requests claimed by the hook reach dispatch with req->route NULL (so
 * dispatch is required with the hook); the tr_req_t (request_id,
 * handler_data, identity) is the one the hook saw.
 *
 * EARLY ANSWERS. A request answered before its body was read completely (by
 * the hook, or by a handler that did not read it all) keeps its connection
 * only when the rest is cheap to skip: the server then reads and drops it,
 * concurrently with writing the answer (no deadlock with a client that sends
 * everything before reading), up to max_body bytes in all, then goes on with
 * the next request. The answer says "Connection: close" and the connection
 * is closed after it (lingering, so the client reads the answer rather than
 * a reset) when more than 64 KiB of announced Content-Length remain, when
 * the client waits on an "Expect: 100-continue" that was not answered, or
 * when the body failed.
 *
 * SHUTDOWN. tr_server_stop() (any thread; async-signal-unsafe) closes the
 * listeners, closes idle connections, lets in-flight requests finish for up to
 * drain_timeout_ms, then closes everything and ends the worker loops;
 * tr_server_wait() joins the workers. Streamed requests are in flight like
 * any other: when the deadline closes their connection, a body still being
 * read ends with -ECONNRESET and pending writes call back with -ECONNRESET,
 * before the worker_stop hook runs; a request still unanswered after that
 * is freed by the server. Connections taken over with tr_req_upgrade() are
 * not waited for: they are the taker's to close (in worker_stop at the
 * latest).
 */
#ifndef TR_SERVER_H
#define TR_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kit/http.h"
#include "kit/router.h"

typedef struct tr_server tr_server_t;

/* How the server reads the body of a request claimed by on_headers. */
typedef enum tr_body_mode {
    TR_BODY_BUFFER, /* read it whole (bounded), then dispatch; req->body holds it */
    TR_BODY_STREAM  /* dispatch at headers; the handler reads it (tr_req_body_start) */
} tr_body_mode_t;

/* Per-thread state. The server creates one per worker thread. */
struct tr_worker {
    int index;       /* 0 .. workers-1 */
    uv_loop_t *loop; /* this worker's loop */
    tr_server_t *server;
    void *service; /* the owning tr_service_t (opaque to the server) */
    void *state;   /* set by the service's worker_init */
};

typedef struct tr_server_config {
    const char *host;            /* "127.0.0.1" or "0.0.0.0" or "::" */
    int port;                    /* 0 = any free port (see tr_server_port) */
    int workers;                 /* >= 1 */
    size_t max_connections;      /* per worker */
    size_t max_header_bytes;     /* request line + headers */
    size_t max_body_bytes;       /* default body limit for routes without one */
    uint64_t header_timeout_ms;  /* time to receive complete headers */
    uint64_t idle_timeout_ms;    /* keep-alive idle time */
    uint64_t drain_timeout_ms;   /* grace period for in-flight requests on stop */
    size_t max_header_fields;    /* header fields per request; 0: the default (100) */
    uint64_t request_timeout_ms; /* first byte to last body byte; 0: none */

    /* May be NULL when on_headers is set (every request then goes there). */
    const tr_router_t *router;
    /* Called on the worker loop for every request ready for its handler: a
     * routed, fully read one, or one the on_headers hook claimed (route
     * NULL). Must lead to exactly one answer (see http.h). May be NULL with a
     * router and no hook: each route's handler is then called directly. */
    void (*dispatch)(tr_req_t *req);
    /* Called on the worker loop when the headers of a request the router did
     * not match (of every request, without a router) are complete; see
     * HEADER-TIME HOOK above. Returns 0 or an HTTP status for the server to
     * answer. NULL: the server answers 404/405 itself. */
    int (*on_headers)(tr_req_t *req, tr_body_mode_t *mode, size_t *max_body);
    /* Called on each worker thread before it accepts connections and after
     * its loop ended. worker_start returning non-zero aborts tr_server_start. */
    int (*worker_start)(tr_worker_t *w);
    void (*worker_stop)(tr_worker_t *w);
    /* Called on the worker loop once per finished request, after the
     * response was queued (a whole answer, tr_respond_end(),
     * tr_respond_abort() or tr_req_upgrade()), for logging and metrics.
     * req->route is NULL for answers the server gives itself (400, 404, 405,
     * 408, 413, 431, 503) and for requests claimed by on_headers, and
     * req->method is "" when the request line was not parsed. */
    void (*on_complete)(tr_req_t *req, int status, size_t bytes_sent, double seconds);
    void *service; /* copied into every tr_worker_t */
    /* PEM certificate chain and private key: both set, every connection is
     * TLS 1.2+ (req->tls true); both NULL, plain TCP. Loaded (and checked to
     * match) by tr_server_start(). */
    const char *tls_cert_file;
    const char *tls_key_file;
} tr_server_config_t;

/* Fills a config with the defaults: 127.0.0.1, port 0, 1 worker, 10000
 * connections, 16 KiB headers, 100 header fields, 1 MiB body, 10 s header
 * timeout, 60 s idle, 60 s request deadline, 10 s drain. */
void tr_server_config_defaults(tr_server_config_t *cfg);

/* Binds, starts the worker threads and returns once all listen. The config is
 * copied (the router pointer is kept). Returns 0 or a negative errno (e.g.
 * -EADDRINUSE; -EINVAL for a config with neither router nor on_headers, or
 * with on_headers but no dispatch, or with only one of the TLS files, or
 * TLS files that do not load, logged); nothing is left running on failure. */
int tr_server_start(const tr_server_config_t *cfg, tr_server_t **out);
/* The port actually bound (useful with port 0). */
int tr_server_port(const tr_server_t *srv);
/* Begins graceful shutdown; safe to call from any thread, more than once. */
void tr_server_stop(tr_server_t *srv);
/* True once tr_server_stop() was called: handlers holding requests open
 * (long polls) should answer them now so the drain ends early. Any thread. */
bool tr_server_stopping(const tr_server_t *srv);
/* Waits for all workers to end, then frees the server. */
void tr_server_wait(tr_server_t *srv);
/* Number of requests currently being handled, across workers. */
size_t tr_server_in_flight(const tr_server_t *srv);

#endif

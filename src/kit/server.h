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
 *   request line + headers over max_header_bytes -> 431 and close
 *   body over the route's max_body (default max_body_bytes) -> 413 and close
 *   headers not complete within header_timeout_ms -> 408 and close
 *   keep-alive connection idle for idle_timeout_ms -> closed
 *   more than max_connections open on a worker -> 503 and close
 *   malformed request -> 400 and close
 *
 * ROUTING. When a request's headers are complete the server matches it with
 * the router (so the body limit is known before the body is read). 404 and 405
 * (with Allow) are answered by the server. A matched, fully read request goes
 * to config->dispatch on the worker's loop.
 *
 * SHUTDOWN. tr_server_stop() (any thread; async-signal-unsafe) closes the
 * listeners, closes idle connections, lets in-flight requests finish for up to
 * drain_timeout_ms, then closes everything and ends the worker loops;
 * tr_server_wait() joins the workers.
 */
#ifndef TR_SERVER_H
#define TR_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kit/http.h"
#include "kit/router.h"

typedef struct tr_server tr_server_t;

/* Per-thread state. The server creates one per worker thread. */
struct tr_worker {
    int index;          /* 0 .. workers-1 */
    uv_loop_t *loop;    /* this worker's loop */
    tr_server_t *server;
    void *service;      /* the owning tr_service_t (opaque to the server) */
    void *state;        /* set by the service's worker_init */
};

typedef struct tr_server_config {
    const char *host;           /* "127.0.0.1" or "0.0.0.0" or "::" */
    int port;                   /* 0 = any free port (see tr_server_port) */
    int workers;                /* >= 1 */
    size_t max_connections;     /* per worker */
    size_t max_header_bytes;    /* request line + headers */
    size_t max_body_bytes;      /* default body limit for routes without one */
    uint64_t header_timeout_ms; /* time to receive complete headers */
    uint64_t idle_timeout_ms;   /* keep-alive idle time */
    uint64_t drain_timeout_ms;  /* grace period for in-flight requests on stop */

    const tr_router_t *router;
    /* Called on the worker loop for every routed, fully read request. Must
     * lead to exactly one tr_respond*() call (see http.h). */
    void (*dispatch)(tr_req_t *req);
    /* Called on each worker thread before it accepts connections and after
     * its loop ended. worker_start returning non-zero aborts tr_server_start. */
    int (*worker_start)(tr_worker_t *w);
    void (*worker_stop)(tr_worker_t *w);
    /* Called on the worker loop once per finished request, after the
     * response was queued, for logging and metrics. req->route is NULL for
     * answers the server gives itself (400, 404, 405, 408, 413, 431, 503),
     * and req->method is "" when the request line was not parsed. */
    void (*on_complete)(tr_req_t *req, int status, size_t bytes_sent, double seconds);
    void *service; /* copied into every tr_worker_t */
} tr_server_config_t;

/* Fills a config with the defaults: 127.0.0.1, port 0, 1 worker, 10000
 * connections, 16 KiB headers, 1 MiB body, 10 s header timeout, 60 s idle,
 * 10 s drain. */
void tr_server_config_defaults(tr_server_config_t *cfg);

/* Binds, starts the worker threads and returns once all listen. The config is
 * copied (the router pointer is kept). Returns 0 or a negative errno (e.g.
 * -EADDRINUSE); nothing is left running on failure. */
int tr_server_start(const tr_server_config_t *cfg, tr_server_t **out);
/* The port actually bound (useful with port 0). */
int tr_server_port(const tr_server_t *srv);
/* Begins graceful shutdown; safe to call from any thread, more than once. */
void tr_server_stop(tr_server_t *srv);
/* Waits for all workers to end, then frees the server. */
void tr_server_wait(tr_server_t *srv);
/* Number of requests currently being handled, across workers. */
size_t tr_server_in_flight(const tr_server_t *srv);

#endif

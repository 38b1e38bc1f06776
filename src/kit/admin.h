/*
 * admin.h - the operator listener every service runs beside its public one.
 *
 * WHY A SECOND LISTENER. /metrics (and any operator endpoint to come) tells
 * whoever can read it how the process is built and how it behaves: routes,
 * upstream names and addresses, breaker and health state, memory. Kong and
 * Envoy keep such endpoints on an admin address that is loopback by
 * default, and so does Trellis: the public port answers /metrics with 404.
 *
 * WHAT IT SERVES.
 *   GET /metrics   Prometheus text: the kit's registry (tr_metrics_render)
 *                  plus the service's metrics_extra (the gateway's upstream
 *                  series).
 *   GET /healthz   the service's liveness, as on the public port (the
 *                  service's healthz hook when it has one).
 *   GET /readyz    the service's readiness, as on the public port: its own
 *                  database connection pinged, then the service's ready
 *                  hook.
 * /healthz and /readyz stay on the public port too, where orchestrators
 * probe them.
 *
 * WHERE. --admin-host (default 127.0.0.1) and --admin-port: by default the
 * public port + 1000 (gateway 8000 -> 9000, auth 8001 -> 9001), or any free
 * port when the public port is 0 (tests); "off" runs no admin listener. The
 * "listening" log line carries the bound port as "admin_port" (absent when
 * off).
 *
 * THREADS. The admin listener is a tr_server_t of its own with one worker
 * thread, so a scrape never waits behind public traffic and public workers
 * never share a connection or a loop with it. Its worker carries the
 * caller's service pointer (w->service, so tr_req_service works in the
 * hooks) but no per-worker service state: a healthz or ready hook that the
 * admin listener calls must only read process-wide state. Requests to it are
 * neither logged nor counted in http_requests_total (a scrape every few
 * seconds would drown both).
 *
 * LAYERING. The runner (service.c) starts it with hooks; this module knows
 * nothing of tr_service_t, so the dependency points one way.
 */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include <stdint.h>

#include "kit/buf.h"
#include "kit/config.h"
#include "kit/http.h"

/* --admin-host and --admin-port, for the service's option sets. */
extern const tr_option_t tr_admin_options[];

typedef struct tr_admin tr_admin_t;

typedef struct tr_admin_config {
    const tr_config_t *config; /* --admin-host, --admin-port */
    int public_port;           /* as configured: 0 makes the default admin port 0 too */
    const char *db_url;        /* the database /readyz pings; NULL: none */
    void *service;             /* w->service of the admin worker (opaque here) */
    /* /healthz: answers the request (NULL: 200 {"status":"ok"}). */
    void (*healthz)(tr_req_t *req);
    /* /readyz after the database ping: 0 when ready, else -1 with *why
     * (NULL: ready). */
    int (*ready)(void *service, const char **why);
    /* /metrics: appends after the kit's registry (NULL: nothing). */
    int (*metrics_extra)(tr_buf_t *out, uint64_t now_ms);
} tr_admin_config_t;

/* Starts an admin listener (cfg is copied; its strings must outlive the
 * listener). Returns 0 with *out set (NULL when --admin-port is "off"),
 * -EINVAL for an invalid --admin-port (logged), or the negative errno of
 * tr_server_start (e.g. -EADDRINUSE, logged). Nothing runs on failure.
 * Main thread. */
int tr_admin_start(const tr_admin_config_t *cfg, tr_admin_t **out);
/* The bound port; 0 for a NULL admin. */
int tr_admin_port(const tr_admin_t *admin);
/* Stops the listener, waits for its worker and frees it. NULL is a no-op.
 * Main thread. */
void tr_admin_stop(tr_admin_t *admin);

#endif

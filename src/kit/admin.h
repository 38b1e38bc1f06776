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
 * never share a connection or a loop with it. Its handlers see the service
 * (tr_req_service) but no per-worker service state: a healthz or ready hook
 * that the admin listener calls must only read process-wide state. Requests
 * to it are neither logged nor counted in http_requests_total (a scrape
 * every few seconds would drown both).
 */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include "kit/config.h"
#include "kit/service.h"

/* --admin-host and --admin-port, for the service's option sets. */
extern const tr_option_t tr_admin_options[];

typedef struct tr_admin tr_admin_t;

/* Starts the admin listener of svc (its config, def and db_url must be
 * set) for a service whose public listener was configured with public_port
 * (0 when the kernel chose it, which makes the default admin port 0 too). Returns 0
 * with *out set (NULL when --admin-port is "off"), -EINVAL for an invalid
 * --admin-port (logged), or the negative errno of tr_server_start (e.g.
 * -EADDRINUSE, logged). Nothing runs on failure. Main thread. */
int tr_admin_start(tr_service_t *svc, int public_port, tr_admin_t **out);
/* The bound port; 0 for a NULL admin. */
int tr_admin_port(const tr_admin_t *admin);
/* Stops the listener, waits for its worker and frees it. NULL is a no-op.
 * Main thread. */
void tr_admin_stop(tr_admin_t *admin);

#endif

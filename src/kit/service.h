/*
 * service.h - what a service is, and the runner every service shares.
 *
 * A service is a static tr_service_def_t: its name, its port offset, its
 * route table, its migrations, its options and a few hooks. tr_service_run()
 * does everything else: loads configuration (defaults < TRELLIS_* env <
 * flags), sets up logging, opens and migrates the service's database
 * (<data>/<name>.db unless --db is given), starts the HTTP server with the
 * built-in routes (/healthz, /readyz, /metrics), authenticates requests for
 * routes that ask for it (kit/authn.h: a service writes no authentication
 * code and never trusts an X-User-* header), checks roles, logs and counts every request, and on
 * SIGTERM/SIGINT drains and exits 0. Routes under /internal/ require the
 * internal service token (see INTERNAL ROUTES below).
 *
 * On SQLite each worker thread opens its own store connection (w->state is
 * the service's; tr_worker_store(w) is the kit's). On a networked database
 * (PostgreSQL) the workers get no connection: a bounded pool of --db-pool
 * connections, each on its own thread, runs the database work handlers
 * hand to tr_store_run (store_job.h, store_pool.h).
 */
#ifndef TR_SERVICE_H
#define TR_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/authn.h"
#include "kit/buf.h"
#include "kit/config.h"
#include "kit/http.h"
#include "kit/router.h"
#include "kit/server.h"
#include "kit/store.h"

typedef struct tr_service tr_service_t;

typedef struct tr_service_def {
    const char *name;    /* "auth" */
    int port_offset;     /* port = port-base (8000) + offset */
    int default_workers; /* when --workers is not given; 0 = number of cores */
    const tr_route_t *routes;
    size_t nroutes;
    const tr_migrations_t *migrations; /* generated from migrations/; NULL: none */
    const tr_option_t *options;        /* service-specific options, {NULL}-terminated */
    /* More option tables, for options a kit module declares (e.g.
     * tr_ratelimit_config_options); NULL-terminated array, may be NULL. */
    const tr_option_t *const *option_sets;

    /* Process-wide set-up after config, logging and migrations; before
     * serving. Returns 0, or a negative code to abort start after logging
     * why: -EINVAL when an option value is unusable (the process exits 2,
     * as for a bad flag), anything else for other failures (exit 1). */
    int (*init)(tr_service_t *svc);
    void (*close)(tr_service_t *svc);
    /* Per worker thread, after its store is open. */
    int (*worker_init)(tr_worker_t *w);
    void (*worker_close)(tr_worker_t *w);
    /* The auth service itself: the kit's authenticator asks this process's
     * own listener for revocations and API keys instead of --auth-url. */
    bool authn_self;
    /* Gets the kit's authenticator although no route of the table asks for
     * credentials: the service authenticates the requests it claims itself
     * (kit/authn.h, tr_authn_bearer / tr_authn_api_key). */
    bool authn;

    /* ---- optional hooks for services that are not ordinary (the gateway) ---- */

    /* A service without a database: no migrations, no store per worker
     * (tr_worker_store() is NULL), and /readyz asks the ready hook only. */
    bool no_store;
    /* Requests the route table does not match go to on_headers when their
     * head is complete (server.h, HEADER-TIME HOOK); the requests it claims
     * then go to handle_claimed (req->route NULL). Both or neither. */
    int (*on_headers)(tr_req_t *req, tr_body_mode_t *mode, size_t *max_body);
    tr_handler_fn handle_claimed;
    /* Called instead of the kit's access log line and request metrics for
     * requests with req->route NULL (claimed ones and the server's own
     * 400/404/405/408/413/431/503 answers). NULL: the kit logs them with
     * route "unmatched". */
    void (*on_complete)(tr_req_t *req, int status, size_t bytes_sent, double seconds);
    /* Readiness for /readyz (after the database check when there is a
     * database): returns 0 when ready, else non-zero with *why a short
     * client-safe reason (answered 503). NULL: ready. Any worker thread. */
    int (*ready)(tr_service_t *svc, const char **why);
    /* Replaces the built-in /healthz handler (which answers {"status":"ok"}). */
    tr_handler_fn healthz;
    /* Appends service-specific exposition text to /metrics after the
     * registry's. Returns 0 or TR_ETOOBIG. Any worker thread. */
    int (*metrics_extra)(tr_buf_t *out, uint64_t now_ms);
    /* SIGHUP: called on the main thread while the server runs. NULL: SIGHUP
     * keeps its default action. */
    void (*reload)(tr_service_t *svc);
} tr_service_def_t;

struct tr_service {
    const tr_service_def_t *def;
    tr_config_t *config;
    char *data_dir; /* absolute, created 0700 */
    char *db_url;
    void *state; /* the service's process-wide state (set in init) */
    tr_server_t *server;
};

/* Runs a service until SIGTERM/SIGINT. argv holds the flags only. Returns the
 * process exit code: 0 after a clean shutdown, 2 for bad configuration, 1
 * for start failures. */
int tr_service_run(const tr_service_def_t *def, int argc, char **argv);

/* The service that owns a worker, and that worker's database connection:
 * NULL for a service without a database and for one on a networked
 * database, whose connections belong to the store pool and must never be
 * used on a loop (use tr_store_run). */
tr_service_t *tr_worker_service(const tr_worker_t *w);
tr_store_t *tr_worker_store(const tr_worker_t *w);
/* Shorthands from a request. */
tr_service_t *tr_req_service(const tr_req_t *req);
tr_store_t *tr_req_store(const tr_req_t *req);

/* INTERNAL ROUTES. A route whose pattern starts with "/internal/" is for
 * other services only: the runner answers 401 (error envelope) unless the
 * request carries "X-Internal-Token" equal, compared in constant time, to
 * the shared secret <data>/secrets/internal_token (or --internal-token /
 * TRELLIS_INTERNAL_TOKEN), which it loads at start when the service has
 * such a route. Callers load the same secret with tr_service_internal_token. */

/* The option every service declares for that secret ("internal-token"). */
extern const tr_option_t tr_service_options[];

/* Loads (creating it when absent) the internal token for svc into *out
 * (malloc'ed). Returns 0 or a negative errno. */
int tr_service_internal_token(const tr_service_t *svc, char **out);

#endif

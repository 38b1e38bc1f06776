/*
 * service.h - what a service is, and the runner every service shares.
 *
 * A service is a static tr_service_def_t: its name, its port offset, its
 * route table, its migrations, its options and a few hooks. tr_service_run()
 * does everything else: loads configuration (defaults < TRELLIS_* env <
 * flags), sets up logging, opens and migrates the service's database
 * (<data>/<name>.db unless --db is given), starts the HTTP server with the
 * built-in routes (/healthz, /readyz, /metrics), authenticates requests for
 * routes that ask for it, checks roles, logs and counts every request, and on
 * SIGTERM/SIGINT drains and exits 0.
 *
 * Each worker thread opens its own store connection (w->state is the
 * service's; tr_worker_store(w) is the kit's).
 */
#ifndef TR_SERVICE_H
#define TR_SERVICE_H

#include <stddef.h>

#include "kit/config.h"
#include "kit/http.h"
#include "kit/router.h"
#include "kit/server.h"
#include "kit/store.h"

typedef struct tr_service tr_service_t;

typedef enum tr_auth_result {
    TR_AUTH_OK = 0,          /* identity filled in */
    TR_AUTH_NO_CREDENTIALS,  /* no Authorization / X-API-Key */
    TR_AUTH_INVALID          /* credentials present but not acceptable */
} tr_auth_result_t;

typedef struct tr_service_def {
    const char *name;    /* "auth" */
    int port_offset;     /* port = port-base (8000) + offset */
    int default_workers; /* when --workers is not given; 0 = number of cores */
    const tr_route_t *routes;
    size_t nroutes;
    const tr_migration_t *migrations;
    size_t nmigrations;
    const tr_option_t *options; /* service-specific options, {NULL}-terminated */

    /* Process-wide set-up after config, logging and migrations; before
     * serving. Returns 0 or non-zero to abort start (after logging why). */
    int (*init)(tr_service_t *svc);
    void (*close)(tr_service_t *svc);
    /* Per worker thread, after its store is open. */
    int (*worker_init)(tr_worker_t *w);
    void (*worker_close)(tr_worker_t *w);
    /* Authenticates a request for routes with auth != TR_AUTH_NONE, filling
     * req->identity. Synchronous. May be NULL (then every credentialed route
     * answers 401). *why gets a short client-safe reason for TR_AUTH_INVALID. */
    tr_auth_result_t (*authenticate)(tr_req_t *req, const char **why);
} tr_service_def_t;

struct tr_service {
    const tr_service_def_t *def;
    tr_config_t *config;
    char *data_dir; /* absolute, created 0700 */
    char *db_url;
    void *state;    /* the service's process-wide state (set in init) */
    tr_server_t *server;
};

/* Runs a service until SIGTERM/SIGINT. argv holds the flags only. Returns the
 * process exit code: 0 after a clean shutdown, 2 for bad configuration, 1
 * for start failures. */
int tr_service_run(const tr_service_def_t *def, int argc, char **argv);

/* The service that owns a worker, and that worker's database connection. */
tr_service_t *tr_worker_service(const tr_worker_t *w);
tr_store_t *tr_worker_store(const tr_worker_t *w);
/* Shorthands from a request. */
tr_service_t *tr_req_service(const tr_req_t *req);
tr_store_t *tr_req_store(const tr_req_t *req);

/* True when role is listed in the comma-separated roles list. */
bool tr_role_allowed(const char *roles, const char *role);

#endif

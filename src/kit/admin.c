/*
 * admin.c - the operator listener of admin.h: a one-worker tr_server_t
 * with its own router and its own database connection.
 *
 * The admin worker's tr_worker_t points at the caller's service
 * (w->service), so tr_req_service() works in its hooks, and at this
 * module's state (w->state), which holds the connection /readyz pings: the
 * public workers' connections belong to their threads and are never
 * touched here.
 */
#include "kit/admin.h"
#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/log.h"
#include "kit/metrics.h"
#include "kit/server.h"
#include "kit/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_BYTES (4u << 20)
#define ADMIN_PORT_OFFSET 1000

const tr_option_t tr_admin_options[] = {
    {"admin-host", "127.0.0.1", "address of the admin listener (/metrics, /healthz, /readyz)"},
    {"admin-port", NULL,
     "port of the admin listener: default the public port + 1000 (any free port when the "
     "public port is 0); \"off\" for none"},
    {NULL, NULL, NULL},
};

struct tr_admin {
    tr_admin_config_t cfg;
    tr_router_t *router;
    tr_server_t *server;
    tr_store_t *store; /* the admin worker's own connection; NULL with no_store */
};

static tr_admin_t *admin_of(const tr_req_t *req)
{
    return req->worker->state;
}

static void handle_metrics(tr_req_t *req)
{
    const tr_admin_config_t *cfg = &admin_of(req)->cfg;
    tr_buf_t out;
    tr_buf_init(&out, METRICS_MAX_BYTES);
    if (tr_metrics_render(&out) != 0 ||
        (cfg->metrics_extra && cfg->metrics_extra(&out, uv_now(req->worker->loop)) != 0)) {
        tr_buf_free(&out);
        tr_respond_error(req, TR_ERR_INTERNAL, "metrics too large to render", NULL);
        return;
    }
    tr_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    tr_buf_free(&out);
}

static void handle_healthz(tr_req_t *req)
{
    const tr_admin_config_t *cfg = &admin_of(req)->cfg;
    if (cfg->healthz) {
        cfg->healthz(req);
        return;
    }
    static const char body[] = "{\"status\":\"ok\"}";
    tr_respond(req, 200, "application/json", body, sizeof(body) - 1);
}

static void handle_readyz(tr_req_t *req)
{
    tr_admin_t *admin = admin_of(req);
    const char *why = NULL;
    if (admin->cfg.db_url && (!admin->store || tr_store_ping(admin->store) != 0)) {
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "database not usable", NULL);
        return;
    }
    if (admin->cfg.ready && admin->cfg.ready(admin->cfg.service, &why) != 0) {
        tr_respond_error(req, TR_ERR_UNAVAILABLE, why ? why : "not ready", NULL);
        return;
    }
    static const char body[] = "{\"status\":\"ready\"}";
    tr_respond(req, 200, "application/json", body, sizeof(body) - 1);
}

static const tr_route_t admin_routes[] = {
    {"GET", "/metrics", handle_metrics, TR_AUTH_NONE, NULL, 0},
    {"GET", "/healthz", handle_healthz, TR_AUTH_NONE, NULL, 0},
    {"GET", "/readyz", handle_readyz, TR_AUTH_NONE, NULL, 0},
};

/* The admin server's `service` is the tr_admin_t; the worker gets the
 * service itself in w->service, as public workers do, and us in w->state. */
static int admin_worker_start(tr_worker_t *w)
{
    tr_admin_t *admin = w->service;
    int rc = 0;
    w->service = admin->cfg.service;
    w->state = admin;
    /* A failed open is not fatal: /readyz then answers 503, which is the
     * truth about the database. */
    if (admin->cfg.db_url && (rc = tr_store_open(admin->cfg.db_url, &admin->store)) != 0)
        tr_log_warn("admin listener: cannot open the database (%d)", rc);
    return 0;
}

static void admin_worker_stop(tr_worker_t *w)
{
    tr_admin_t *admin = w->state;
    tr_store_close(admin->store);
    admin->store = NULL;
}

/* --admin-port: "off", an explicit port, or the default (admin.h). Returns
 * 0 with *port (-1 for off) or -EINVAL. */
static int admin_port_from(const tr_config_t *cfg, int public_port, int *port)
{
    const char *v = tr_config_get(cfg, "admin-port");
    int64_t n;
    if (v && strcmp(v, "off") == 0) {
        *port = -1;
        return 0;
    }
    if (!v) {
        if (public_port == 0) {
            *port = 0;
            return 0;
        }
        if (public_port + ADMIN_PORT_OFFSET > 65535) {
            tr_log_error("--admin-port has no default for public port %d; give one, or off",
                         public_port);
            return -EINVAL;
        }
        *port = public_port + ADMIN_PORT_OFFSET;
        return 0;
    }
    if (tr_config_int(cfg, "admin-port", &n) != 0 || n < 0 || n > 65535) {
        tr_log_error("invalid --admin-port %s (a port from 0 to 65535, or off)", v);
        return -EINVAL;
    }
    *port = (int)n;
    return 0;
}

static void admin_free(tr_admin_t *admin)
{
    if (!admin) return;
    tr_router_free(admin->router);
    free(admin);
}

int tr_admin_start(const tr_admin_config_t *cfg, tr_admin_t **out)
{
    tr_admin_t *admin = NULL;
    tr_server_config_t sc;
    int port = 0;
    int rc = 0;

    *out = NULL;
    if ((rc = admin_port_from(cfg->config, cfg->public_port, &port)) != 0 || port < 0) goto out;
    admin = tr_xcalloc(1, sizeof(*admin));
    admin->cfg = *cfg;
    admin->router = tr_router_new();
    for (size_t i = 0; i < sizeof(admin_routes) / sizeof(admin_routes[0]); i++)
        if ((rc = tr_router_add(admin->router, &admin_routes[i])) != 0) goto out;

    tr_server_config_defaults(&sc);
    sc.host = tr_config_get(cfg->config, "admin-host");
    sc.port = port;
    sc.workers = 1;
    sc.max_connections = 64;
    sc.drain_timeout_ms = 1000;
    sc.router = admin->router;
    sc.worker_start = admin_worker_start;
    sc.worker_stop = admin_worker_stop;
    sc.service = admin;
    if ((rc = tr_server_start(&sc, &admin->server)) != 0) {
        tr_log_error("cannot listen on %s:%d (admin): %s", sc.host, sc.port, strerror(-rc));
        goto out;
    }
    *out = admin;
    admin = NULL;
out:
    admin_free(admin);
    return rc;
}

int tr_admin_port(const tr_admin_t *admin)
{
    return admin ? tr_server_port(admin->server) : 0;
}

void tr_admin_stop(tr_admin_t *admin)
{
    if (!admin) return;
    tr_server_stop(admin->server);
    tr_server_wait(admin->server);
    admin_free(admin);
}

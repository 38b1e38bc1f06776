/*
 * service.c - the runner every service shares (see service.h).
 *
 * Start-up order matters and is the same for every service:
 *   1. configuration (bad flags exit 2 before anything is created),
 *   2. logging, data directory, database URL,
 *   3. migrations, applied once on a connection of the main thread,
 *   4. the service's init hook (keys, counters, process-wide state),
 *   5. the server, whose worker threads each open their own store connection
 *      before accepting,
 *   6. the "listening" log line, which supervisors and tests wait for.
 * Shutdown runs the same steps backwards after SIGTERM or SIGINT.
 *
 * Authentication is the kit's (authn.h): a service that has credentialed
 * routes gets the authenticator, which fills req->identity from a bearer
 * token or an API key before the handler runs; the runner answers 401/403
 * in the one standard way. The internal service token of /internal/ routes
 * is checked here too: the same shared secret for every service, always
 * compared in constant time.
 *
 * QUIET PLUMBING. Successful answers to /healthz, /readyz, /metrics and
 * /internal/ routes (health checks, the revocation feed's long poll) are
 * logged at debug, so an idle platform writes nothing at info.
 */
#include "kit/service.h"
#include "kit/admin.h"
#include "kit/alloc.h"
#include "kit/authn_internal.h"
#include "kit/buf.h"
#include "kit/crypto.h"
#include "kit/fs.h"
#include "kit/log.h"
#include "kit/metrics.h"
#include "kit/store_engine.h"
#include "kit/store_job.h"
#include "kit/store_pool.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Kit-private per-service state, reachable from workers via w->service. */
typedef struct service_impl {
    tr_service_t pub;    /* first, so a tr_service_t * is a service_impl * */
    tr_store_t **stores; /* one connection per worker, indexed by worker (SQLite) */
    int workers;
    tr__store_pool_t *pool;                 /* networked database: the connections */
    tr__store_pool_client_t **pool_clients; /* per worker, indexed by worker */
    tr_router_t *router;
    char *internal_token; /* loaded when the service has /internal/ or credentialed routes */
    size_t internal_token_len;
    tr__authn_t *authn;                 /* NULL when no route asks for credentials */
    tr__authn_worker_t **authn_workers; /* one per worker, indexed by worker */
} service_impl_t;

#define INTERNAL_PREFIX "/internal/"

const tr_option_t tr_service_options[] = {
    {"internal-token", NULL,
     "shared token for /internal/ calls between services (default: generated into "
     "<data>/secrets/internal_token)"},
    {NULL, NULL, NULL},
};

tr_service_t *tr_worker_service(const tr_worker_t *w)
{
    return (tr_service_t *)w->service;
}

tr_store_t *tr_worker_store(const tr_worker_t *w)
{
    service_impl_t *impl = (service_impl_t *)w->service;
    return impl->stores[w->index];
}

/* The authenticator of req's worker, NULL when the service has none. */
static tr__authn_worker_t *authn_worker_of(const tr_req_t *req)
{
    const service_impl_t *impl = (const service_impl_t *)req->worker->service;
    return impl->authn_workers ? impl->authn_workers[req->worker->index] : NULL;
}

tr_authn_result_t tr_authn_bearer(tr_req_t *req, const char *authorization, const char **why)
{
    tr__authn_worker_t *aw = authn_worker_of(req);
    if (aw) return tr__authn_bearer(aw, req, authorization, why);
    *why = "this service does not authenticate";
    return TR_AUTHN_UNAVAILABLE;
}

void tr_authn_api_key(tr_req_t *req, const char *key, tr_authn_done_fn done, void *arg,
                      tr_authn_lookup_t **pending)
{
    tr__authn_worker_t *aw = authn_worker_of(req);
    *pending = NULL;
    if (aw)
        tr__authn_api_key(aw, req, key, done, arg, pending);
    else
        done(req, TR_AUTHN_UNAVAILABLE, "this service does not authenticate", arg);
}

int tr_service_set_auth(tr_service_t *svc, const char *instance)
{
    service_impl_t *impl = (service_impl_t *)svc;
    return impl->authn ? tr__authn_set_auth(impl->authn, instance) : -ENOENT;
}

tr_revocations_t *tr_service_revocations(const tr_service_t *svc)
{
    const service_impl_t *impl = (const service_impl_t *)svc;
    return impl->authn ? tr__authn_revocations(impl->authn) : NULL;
}

tr_service_t *tr_req_service(const tr_req_t *req)
{
    return tr_worker_service(req->worker);
}

tr_store_t *tr_req_store(const tr_req_t *req)
{
    return tr_worker_store(req->worker);
}

/* ---- built-in routes ---------------------------------------------------- */

/* The probes are on the public port; /metrics is on the admin listener only
 * (admin.h). */

static void handle_healthz(tr_req_t *req)
{
    const tr_service_def_t *def = tr_req_service(req)->def;
    if (def->healthz) {
        def->healthz(req);
        return;
    }
    static const char body[] = "{\"status\":\"ok\"}";
    tr_respond(req, 200, "application/json", body, sizeof(body) - 1);
}

static int ping_job(tr_store_t *db, void *ctx)
{
    (void)ctx;
    return tr_store_ping(db);
}

static void readyz_answer(tr_req_t *req, void *ctx, int rc)
{
    tr_service_t *svc = tr_req_service(req);
    const char *why = NULL;
    (void)ctx;
    if (rc != 0) {
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "database not usable", NULL);
        return;
    }
    const service_impl_t *impl = (const service_impl_t *)svc;
    /* A service that routes requests itself (the gateway) serves its public
     * routes meanwhile; its credentialed ones answer 503 until loaded. */
    if (impl->authn && !svc->def->authn && !tr__authn_ready(impl->authn)) {
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "revoked sessions not loaded yet", NULL);
        return;
    }
    if (svc->def->ready && svc->def->ready(svc, &why) != 0) {
        tr_respond_error(req, TR_ERR_UNAVAILABLE, why ? why : "not ready", NULL);
        return;
    }
    static const char body[] = "{\"status\":\"ready\"}";
    tr_respond(req, 200, "application/json", body, sizeof(body) - 1);
}

/* The database ping runs like any handler's database work: on the pool for
 * a networked database, so /readyz never blocks the loop. */
static void handle_readyz(tr_req_t *req)
{
    if (tr_req_service(req)->def->no_store)
        readyz_answer(req, NULL, 0);
    else
        tr_store_run(req, 0, ping_job, readyz_answer, NULL);
}

static const tr_route_t builtin_routes[] = {
    {"GET", "/healthz", handle_healthz, TR_AUTH_NONE, NULL, 0},
    {"GET", "/readyz", handle_readyz, TR_AUTH_NONE, NULL, 0},
};

/* ---- request pipeline --------------------------------------------------- */

/* True when the request carries the internal token. The length check is not
 * secret: every service's token has the same, generated length. */
static bool internal_token_ok(const service_impl_t *impl, const tr_req_t *req)
{
    const char *got = tr_req_header(req, TR_INTERNAL_TOKEN_HEADER);
    if (!got || !impl->internal_token) return false;
    size_t len = strlen(got);
    return len == impl->internal_token_len && tr_memeq_ct(got, impl->internal_token, len);
}

/* The last steps of every routed request: the role check, then the handler. */
static void run_handler(tr_req_t *req)
{
    const tr_route_t *route = req->route;
    if (req->authenticated && route->roles && !tr_role_allowed(route->roles, req->identity.role)) {
        tr_respond_error(req, TR_ERR_PERMISSION_DENIED, "your role does not allow this operation",
                         NULL);
        return;
    }
    route->handler(req);
}

static void authenticated(tr_req_t *req, tr_authn_result_t result, const char *why, void *arg)
{
    (void)arg;
    switch (result) {
    case TR_AUTHN_OK:
        break;
    case TR_AUTHN_NO_CREDENTIALS:
        if (TR_AUTH_MODE(req->route->auth) != TR_AUTH_REQUIRED) break;
        why = "authentication required";
        /* fall through */
    case TR_AUTHN_INVALID:
        memset(&req->identity, 0, sizeof(req->identity));
        req->authenticated = false;
        tr_res_header(req, "WWW-Authenticate", "Bearer");
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, why, NULL);
        return;
    case TR_AUTHN_UNAVAILABLE:
        memset(&req->identity, 0, sizeof(req->identity));
        req->authenticated = false;
        tr_res_header(req, "Retry-After", "1");
        tr_respond_error(req, TR_ERR_UNAVAILABLE, why, NULL);
        return;
    }
    run_handler(req);
}

static void dispatch(tr_req_t *req)
{
    const tr_route_t *route = req->route;
    service_impl_t *impl = (service_impl_t *)tr_req_service(req);

    if (!route) {
        /* Claimed by the service's on_headers hook (the server only lets
         * such requests through when the hook is set). */
        impl->pub.def->handle_claimed(req);
        return;
    }
    if (strncmp(route->pattern, INTERNAL_PREFIX, sizeof(INTERNAL_PREFIX) - 1) == 0 &&
        !internal_token_ok(impl, req)) {
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "internal token required", NULL);
        return;
    }
    /* Identity comes from the authenticator only, never from a header. */
    memset(&req->identity, 0, sizeof(req->identity));
    req->authenticated = false;
    if (TR_AUTH_MODE(route->auth) == TR_AUTH_NONE) {
        route->handler(req);
        return;
    }
    tr__authn_authenticate(impl->authn_workers[req->worker->index], req,
                           (route->auth & TR_AUTH_API_KEY) != 0, authenticated, NULL);
}

/* Probes, metrics scrapes and service-to-service plumbing (see QUIET
 * PLUMBING). */
static bool is_plumbing(const char *pattern)
{
    return strncmp(pattern, INTERNAL_PREFIX, sizeof(INTERNAL_PREFIX) - 1) == 0 ||
           strcmp(pattern, "/healthz") == 0 || strcmp(pattern, "/readyz") == 0 ||
           strcmp(pattern, "/metrics") == 0;
}

static void on_complete(tr_req_t *req, int status, size_t bytes_sent, double seconds)
{
    const tr_service_def_t *def = tr_worker_service(req->worker)->def;
    if (!req->route && def->on_complete) {
        def->on_complete(req, status, bytes_sent, seconds);
        return;
    }
    const char *route = req->route ? req->route->pattern : "unmatched";
    tr_metrics_observe_request(route, req->method, status, seconds);
    tr_log_level_t level = status >= 500 ? TR_LOG_ERROR : TR_LOG_INFO;
    if (status < 400 && req->route && is_plumbing(route)) level = TR_LOG_DEBUG;
    if (!tr_log_enabled(level)) return;
    tr_log_field_t f[] = {
        TR_LOG_STR("request_id", req->request_id),
        TR_LOG_STR("trace_id", req->trace.trace_id),
        TR_LOG_STR("user_id", req->authenticated ? req->identity.user_id : NULL),
        TR_LOG_STR("method", req->method),
        TR_LOG_STR("route", route),
        TR_LOG_INT("status", status),
        TR_LOG_MILLIS("duration_ms", (int64_t)(seconds * 1e6)),
        TR_LOG_INT("bytes", bytes_sent),
        TR_LOG_STR("client_ip", req->client_ip),
    };
    /* user_id is left out for anonymous requests. */
    if (req->authenticated) {
        tr_log_fields(level, "request", f, sizeof(f) / sizeof(f[0]));
    } else {
        memmove(&f[2], &f[3], sizeof(f) - 3 * sizeof(f[0]));
        tr_log_fields(level, "request", f, sizeof(f) / sizeof(f[0]) - 1);
    }
}

/* A worker of a service on a networked database attaches to the pool
 * instead of opening a connection of its own. */
static int worker_attach_pool(service_impl_t *impl, tr_worker_t *w)
{
    int rc = tr__store_pool_attach(impl->pool, w->loop, &impl->pool_clients[w->index]);
    if (rc != 0) tr_log_error("worker %d: cannot attach to the database pool (%d)", w->index, rc);
    return rc;
}

static void worker_detach_pool(service_impl_t *impl, tr_worker_t *w)
{
    if (!impl->pool) return;
    tr__store_pool_detach(impl->pool_clients[w->index]);
    impl->pool_clients[w->index] = NULL;
}

static int worker_start(tr_worker_t *w)
{
    service_impl_t *impl = (service_impl_t *)w->service;
    int rc = 0;
    if (impl->pool && (rc = worker_attach_pool(impl, w)) != 0) return rc;
    if (!impl->pub.def->no_store && !impl->pool &&
        (rc = tr_store_open(impl->pub.db_url, &impl->stores[w->index])) != 0) {
        tr_log_error("worker %d: cannot open database (%d)", w->index, rc);
        return rc;
    }
    tr__store_job_bind(impl->stores[w->index],
                       impl->pool_clients ? impl->pool_clients[w->index] : NULL);
    if (impl->authn) impl->authn_workers[w->index] = tr__authn_worker_start(impl->authn, w);
    if (impl->pub.def->worker_init && (rc = impl->pub.def->worker_init(w)) != 0) {
        tr__store_job_bind(NULL, NULL);
        tr__authn_worker_stop(impl->authn_workers[w->index]);
        impl->authn_workers[w->index] = NULL;
        tr_store_close(impl->stores[w->index]);
        impl->stores[w->index] = NULL;
        worker_detach_pool(impl, w);
    }
    return rc;
}

static void worker_stop(tr_worker_t *w)
{
    service_impl_t *impl = (service_impl_t *)w->service;
    if (impl->pub.def->worker_close) impl->pub.def->worker_close(w);
    tr__store_detached_flush(w); /* work still waiting needs the store */
    tr__store_job_bind(NULL, NULL);
    tr__authn_worker_stop(impl->authn_workers[w->index]);
    impl->authn_workers[w->index] = NULL;
    tr_store_close(impl->stores[w->index]);
    impl->stores[w->index] = NULL;
    worker_detach_pool(impl, w);
}

/* ---- start-up helpers --------------------------------------------------- */

static int config_uint(const tr_config_t *cfg, const char *name,
                       int (*parse)(const tr_config_t *, const char *, int64_t *), int64_t min,
                       int64_t *out)
{
    int rc = parse(cfg, name, out);
    if (rc == 0 && *out < min) rc = -EINVAL;
    if (rc != 0) fprintf(stderr, "trellis: invalid value for --%s\n", name);
    return rc;
}

/* config_uint with an upper bound, said in the message when exceeded. */
static int config_range(const tr_config_t *cfg, const char *name,
                        int (*parse)(const tr_config_t *, const char *, int64_t *), int64_t min,
                        int64_t max, int64_t *out)
{
    int rc = config_uint(cfg, name, parse, min, out);
    if (rc == 0 && *out > max) {
        fprintf(stderr, "trellis: invalid value for --%s (at most %lld)\n", name, (long long)max);
        rc = -EINVAL;
    }
    return rc;
}

static int server_config_from(const tr_config_t *cfg, const tr_service_def_t *def,
                              tr_server_config_t *sc)
{
    int64_t v;
    tr_server_config_defaults(sc);
    sc->host = tr_config_get(cfg, "host");

    if (tr_config_get(cfg, "port")) {
        if (config_range(cfg, "port", tr_config_int, 0, 65535, &v)) return -EINVAL;
        sc->port = (int)v;
    } else {
        if (config_range(cfg, "port-base", tr_config_int, 1, 65535 - def->port_offset, &v))
            return -EINVAL;
        sc->port = (int)v + def->port_offset;
    }
    if (tr_config_get(cfg, "workers")) {
        if (config_range(cfg, "workers", tr_config_int, 1, 256, &v)) return -EINVAL;
        sc->workers = (int)v;
    } else if (def->default_workers > 0) {
        sc->workers = def->default_workers;
    } else {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        sc->workers = n > 0 ? (int)n : 1;
    }
    if (config_uint(cfg, "max-connections", tr_config_int, 1, &v)) return -EINVAL;
    sc->max_connections = (size_t)v;
    if (config_uint(cfg, "max-header-bytes", tr_config_size, 1024, &v)) return -EINVAL;
    sc->max_header_bytes = (size_t)v;
    if (config_uint(cfg, "max-body-bytes", tr_config_size, 0, &v)) return -EINVAL;
    sc->max_body_bytes = (size_t)v;
    if (config_uint(cfg, "header-timeout", tr_config_duration_ms, 1, &v)) return -EINVAL;
    sc->header_timeout_ms = (uint64_t)v;
    if (config_uint(cfg, "idle-timeout", tr_config_duration_ms, 1, &v)) return -EINVAL;
    sc->idle_timeout_ms = (uint64_t)v;
    if (config_uint(cfg, "drain-timeout", tr_config_duration_ms, 0, &v)) return -EINVAL;
    sc->drain_timeout_ms = (uint64_t)v;
    if (config_uint(cfg, "max-header-fields", tr_config_int, 1, &v)) return -EINVAL;
    sc->max_header_fields = (size_t)v;
    if (config_uint(cfg, "request-timeout", tr_config_duration_ms, 0, &v)) return -EINVAL;
    sc->request_timeout_ms = (uint64_t)v;
    sc->tls_cert_file = tr_config_get(cfg, "tls-cert");
    sc->tls_key_file = tr_config_get(cfg, "tls-key");
    /* An empty value (e.g. TRELLIS_TLS_CERT=) means unset. */
    if (sc->tls_cert_file && !*sc->tls_cert_file) sc->tls_cert_file = NULL;
    if (sc->tls_key_file && !*sc->tls_key_file) sc->tls_key_file = NULL;
    if (!sc->tls_cert_file != !sc->tls_key_file) {
        fprintf(stderr, "trellis: --tls-cert and --tls-key go together\n");
        return -EINVAL;
    }
    if (sc->tls_cert_file &&
        (access(sc->tls_cert_file, R_OK) != 0 || access(sc->tls_key_file, R_OK) != 0)) {
        fprintf(stderr, "trellis: cannot read the --tls-cert or --tls-key file\n");
        return -EINVAL;
    }
    return 0;
}

static int migrate(const tr_service_t *svc)
{
    tr_store_t *db = NULL;
    if (svc->def->no_store) return 0;
    int rc = tr_store_open(svc->db_url, &db);
    if (rc != 0) {
        /* The URL is not logged: a PostgreSQL URL may carry a password. */
        tr_log_error("cannot open database: %s", tr_store_errmsg(NULL));
        return rc;
    }
    if (svc->def->migrations) rc = tr_store_migrate(db, svc->def->migrations);
    if (rc != 0) tr_log_error("migrations failed: %s", tr_store_errmsg(db));
    tr_store_close(db);
    return rc;
}

/* Starts the store pool when the service's database is networked
 * (store_pool.h); SQLite services keep a connection per worker. */
static int pool_start(service_impl_t *impl, int workers)
{
    const tr_service_t *svc = &impl->pub;
    int64_t threads;
    if (svc->def->no_store || !tr_store_url_networked(svc->db_url)) return 0;
    if (config_uint(svc->config, "db-pool", tr_config_int, 1, &threads) ||
        threads > TR_STORE_POOL_MAX_THREADS)
        return -EINVAL;
    int rc = tr__store_pool_start(svc->db_url, (int)threads,
                                  (size_t)threads * TR_STORE_POOL_QUEUE_PER_THREAD, &impl->pool);
    if (rc != 0) {
        tr_log_error("cannot open the database pool: %s", tr_store_errmsg(NULL));
        return rc;
    }
    impl->pool_clients = tr_xcalloc((size_t)workers, sizeof(*impl->pool_clients));
    return 0;
}

static void pool_stop(service_impl_t *impl)
{
    tr__store_pool_stop(impl->pool);
    impl->pool = NULL;
    free(impl->pool_clients);
    impl->pool_clients = NULL;
}

int tr_service_internal_token(const tr_service_t *svc, char **out)
{
    int rc =
        tr_config_secret(svc->config, "internal-token", svc->data_dir, "internal_token", 32, out);
    if (rc != 0) tr_log_error("cannot load or create the internal token: %s", strerror(-rc));
    return rc;
}

/* Loads the internal token when some route needs it. */
/* True when some route of def asks for credentials (or def->authn). */
static bool wants_authn(const tr_service_def_t *def)
{
    if (def->authn) return true;
    for (size_t i = 0; i < def->nroutes; i++)
        if (TR_AUTH_MODE(def->routes[i].auth) != TR_AUTH_NONE) return true;
    return false;
}

/* The token is needed to serve /internal/ routes and, for the revocation
 * feed and API-key checks, to call auth's. */
static int load_internal_token(service_impl_t *impl)
{
    const tr_service_def_t *def = impl->pub.def;
    bool needed = wants_authn(def);
    for (size_t i = 0; i < def->nroutes && !needed; i++)
        needed = strncmp(def->routes[i].pattern, INTERNAL_PREFIX, sizeof(INTERNAL_PREFIX) - 1) == 0;
    if (!needed) return 0;
    int rc = tr_service_internal_token(&impl->pub, &impl->internal_token);
    if (rc == 0) impl->internal_token_len = strlen(impl->internal_token);
    return rc;
}

static int build_router(service_impl_t *impl)
{
    const tr_service_def_t *def = impl->pub.def;
    impl->router = tr_router_new();
    for (size_t i = 0; i < sizeof(builtin_routes) / sizeof(builtin_routes[0]); i++)
        if (tr_router_add(impl->router, &builtin_routes[i]) != 0) return -EINVAL;
    for (size_t i = 0; i < def->nroutes; i++) {
        int rc = tr_router_add(impl->router, &def->routes[i]);
        if (rc != 0) {
            tr_log_error("bad route %s %s (%d)", def->routes[i].method, def->routes[i].pattern, rc);
            return rc;
        }
    }
    return 0;
}

/* "listening" is what supervisors and tests wait for, so it should mean
 * "credentials work": wait a moment for the first revocation-feed answer.
 * Auth asks itself, which takes milliseconds; another service waits at
 * most a little for auth, and otherwise starts anyway and answers 503 to
 * credentialed requests (and /readyz) until the feed has loaded. */
static void wait_for_revocations(const tr__authn_t *a, bool self)
{
    uint64_t deadline = uv_hrtime() + (self ? 5000u : 2000u) * 1000000u;
    while (!tr__authn_ready(a) && uv_hrtime() < deadline)
        uv_sleep(5);
}

/* ---- signals ------------------------------------------------------------ */

typedef struct signal_ctx {
    uv_signal_t term, intr, hup;
    bool has_hup;  /* the service reloads on SIGHUP */
    bool stopping; /* a first SIGTERM/SIGINT arrived */
    tr_server_t *server;
    tr_service_t *svc;
} signal_ctx_t;

static void on_signal(uv_signal_t *h, int signum)
{
    signal_ctx_t *ctx = h->data;
    if (ctx->stopping) return;
    ctx->stopping = true;
    tr_log_info("received %s, draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    if (ctx->server) tr_server_stop(ctx->server);
    /* The handlers stay installed until the drain is over (signals_close):
     * a Ctrl-C reaches a supervised service twice, as SIGINT from the
     * terminal and as SIGTERM from `trellis up`, and the second one must not
     * find the default action and kill the process mid-drain. Unreferenced,
     * they no longer keep this loop running. */
    uv_unref((uv_handle_t *)&ctx->term);
    uv_unref((uv_handle_t *)&ctx->intr);
    if (ctx->has_hup) uv_unref((uv_handle_t *)&ctx->hup);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    signal_ctx_t *ctx = h->data;
    (void)signum;
    /* Before the server runs there is nothing to reload into. */
    if (ctx->server) ctx->svc->def->reload(ctx->svc);
}

/* The main thread's loop only waits for SIGTERM / SIGINT. The handlers are
 * installed before the server starts, so a signal that arrives right after
 * the "listening" line still drains instead of killing the process. */
static void signals_install(uv_loop_t *loop, signal_ctx_t *ctx)
{
    uv_loop_init(loop);
    uv_signal_init(loop, &ctx->term);
    uv_signal_init(loop, &ctx->intr);
    ctx->term.data = ctx->intr.data = ctx;
    uv_signal_start(&ctx->term, on_signal, SIGTERM);
    uv_signal_start(&ctx->intr, on_signal, SIGINT);
    if (ctx->svc->def->reload) {
        ctx->has_hup = true;
        uv_signal_init(loop, &ctx->hup);
        ctx->hup.data = ctx;
        uv_signal_start(&ctx->hup, on_sighup, SIGHUP);
    }
}

/* Closes the signal handles once the service has stopped (or failed to
 * start); from here on a signal has its default action again. */
static void signals_close(uv_loop_t *loop, signal_ctx_t *ctx)
{
    if (!uv_is_closing((uv_handle_t *)&ctx->term)) {
        uv_close((uv_handle_t *)&ctx->term, NULL);
        uv_close((uv_handle_t *)&ctx->intr, NULL);
        if (ctx->has_hup) uv_close((uv_handle_t *)&ctx->hup, NULL);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

/* ---- the admin listener (kit/admin.h) ------------------------------------ */

static int admin_ready(void *service, const char **why)
{
    tr_service_t *svc = service;
    return svc->def->ready ? svc->def->ready(svc, why) : 0;
}

static int admin_start(tr_service_t *svc, int public_port, tr_admin_t **out)
{
    tr_admin_config_t ac = {
        .config = svc->config,
        .public_port = public_port,
        .db_url = svc->def->no_store ? NULL : svc->db_url,
        .service = svc,
        .healthz = handle_healthz,
        .ready = admin_ready,
        .metrics_extra = svc->def->metrics_extra,
    };
    return tr_admin_start(&ac, out);
}

/* ---- the runner --------------------------------------------------------- */

static void print_usage(const tr_service_def_t *def, const tr_option_t *const *sets)
{
    printf("usage: trellis serve %s [options]\n\noptions (also as TRELLIS_<NAME> environment "
           "variables):\n",
           def->name);
    tr_config_print_help(sets);
}

int tr_service_run(const tr_service_def_t *def, int argc, char **argv)
{
    static const tr_option_t no_options[] = {{NULL, NULL, NULL}};
    const tr_option_t *sets[16] = {tr_config_common_options, tr_service_options, tr_admin_options,
                                   tr_store_pool_options, def->options ? def->options : no_options};
    size_t nsets = 5;
    if (wants_authn(def)) sets[nsets++] = tr_authn_options;
    for (size_t i = 0; def->option_sets && def->option_sets[i] && nsets < 15; i++)
        sets[nsets++] = def->option_sets[i];
    service_impl_t impl = {.pub.def = def};
    tr_admin_t *admin = NULL;
    signal_ctx_t signals = {0};
    uv_loop_t signal_loop;
    bool signals_ready = false;
    tr_service_t *svc = &impl.pub;
    tr_server_config_t sc;
    tr_log_level_t level;
    char err[256];
    int exit_code = 1;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(def, sets);
            return 0;
        }
    }
    if (tr_config_load(&svc->config, sets, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "trellis serve %s: %s\n", def->name, err);
        return 2;
    }
    if (tr_log_parse_level(tr_config_get(svc->config, "log-level"), &level) != 0) {
        fprintf(stderr, "trellis serve %s: invalid --log-level (debug, info, warn, error)\n",
                def->name);
        exit_code = 2;
        goto out;
    }
    tr_log_init(def->name, level);
    if (server_config_from(svc->config, def, &sc) != 0) {
        exit_code = 2;
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);

    const char *data = tr_config_get(svc->config, "data");
    char resolved[PATH_MAX];
    if ((rc = tr_mkdir_p(data, 0700)) != 0 || !realpath(data, resolved)) {
        tr_log_error("cannot create data directory %s: %s", data, strerror(rc ? -rc : errno));
        goto out;
    }
    svc->data_dir = tr_xstrdup(resolved);
    const char *db = tr_config_get(svc->config, "db");
    svc->db_url = db ? tr_xstrdup(db) : tr_xasprintf("sqlite://%s/%s.db", svc->data_dir, def->name);

    if (migrate(svc) != 0) goto out;
    if (load_internal_token(&impl) != 0) goto out;
    if (wants_authn(def) && (rc = tr__authn_init(svc->config, svc->data_dir, impl.internal_token,
                                                 def->authn_self, sc.workers, &impl.authn)) != 0) {
        if (rc == -EINVAL) exit_code = 2;
        goto out;
    }
    if (def->init && (rc = def->init(svc)) != 0) {
        if (rc == -EINVAL) exit_code = 2;
        goto out;
    }
    if (build_router(&impl) != 0) goto close_service;

    impl.workers = sc.workers;
    impl.stores = tr_xcalloc((size_t)sc.workers, sizeof(tr_store_t *));
    impl.authn_workers = tr_xcalloc((size_t)sc.workers, sizeof(tr__authn_worker_t *));
    if ((rc = pool_start(&impl, sc.workers)) != 0) {
        if (rc == -EINVAL) exit_code = 2;
        goto close_service;
    }
    sc.router = impl.router;
    sc.dispatch = dispatch;
    sc.worker_start = worker_start;
    sc.worker_stop = worker_stop;
    sc.on_complete = on_complete;
    sc.on_headers = def->on_headers;
    sc.service = &impl;
    signals.svc = svc;
    signals_install(&signal_loop, &signals);
    signals_ready = true;
    if ((rc = tr_server_start(&sc, &svc->server)) != 0) {
        tr_log_error("cannot listen on %s:%d: %s", sc.host, sc.port, strerror(-rc));
        goto close_service;
    }
    if (admin_start(svc, sc.port, &admin) != 0) {
        tr_server_stop(svc->server);
        tr_server_wait(svc->server);
        svc->server = NULL;
        goto close_service;
    }

    if (impl.authn && def->authn_self) {
        /* Auth learns revocations from its own listener, like everyone. */
        char self[64];
        snprintf(self, sizeof(self), "127.0.0.1:%d", tr_server_port(svc->server));
        tr__authn_set_auth(impl.authn, self);
    }
    if (impl.authn) wait_for_revocations(impl.authn, def->authn_self);

    json_t *f = json_object();
    json_object_set_new(f, "host", json_string(sc.host));
    json_object_set_new(f, "port", json_integer(tr_server_port(svc->server)));
    if (admin) json_object_set_new(f, "admin_port", json_integer(tr_admin_port(admin)));
    json_object_set_new(f, "workers", json_integer(sc.workers));
    json_object_set_new(f, "data", json_string(svc->data_dir));
    tr_log_json(TR_LOG_INFO, "listening", f);

    signals.server = svc->server;
    uv_run(&signal_loop, UV_RUN_DEFAULT);
    tr_server_wait(svc->server);
    svc->server = signals.server = NULL; /* late signals find nothing to act on */
    tr_admin_stop(admin);
    tr_log_info("stopped");
    exit_code = 0;

close_service:
    pool_stop(&impl);
    if (def->close) def->close(svc);
out:
    tr__authn_free(impl.authn);
    free(impl.authn_workers);
    if (signals_ready) signals_close(&signal_loop, &signals);
    tr_router_free(impl.router);
    free(impl.stores);
    free(svc->data_dir);
    free(svc->db_url);
    if (impl.internal_token) {
        sodium_memzero(impl.internal_token, impl.internal_token_len);
        free(impl.internal_token);
    }
    tr_config_free(svc->config);
    return exit_code;
}

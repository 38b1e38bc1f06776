/*
 * gateway.c - the gateway service: options, start-up, worker set-up, the
 * decision taken when a request's head is complete, the access log, and
 * SIGHUP.
 *
 * THE HEADER-TIME DECISION (on_headers) is synchronous and cheap, and
 * answers everything it can before a byte of body is read: CORS preflights,
 * invalid and /internal paths, 404/405, and -- with the route known -- a
 * missing, malformed, expired or revoked token (401) or an insufficient
 * role (403). What it claims goes on with a body mode: bodies up to
 * SMALL_BODY bytes with a Content-Length are read whole (one write to the
 * upstream, and a request that can be retried), anything larger or chunked
 * is streamed. The decision is taken against the worker's current table;
 * when a reload lands between the head and dispatch, dispatch decides again
 * against the new table (gw_decide) rather than use routes of a table that
 * may be gone.
 *
 * START-UP never depends on the upstreams: routes are loaded, upstream
 * objects made (addresses resolved), and /readyz answers 200 as soon as the
 * server listens, so `trellis up` cannot deadlock on start order. A routes
 * file that does not validate stops the start with exit code 2 and the
 * message naming the field.
 */
#include "gateway/call.h"
#include "gateway/gateway.h"
#include "gateway/health.h"
#include "gateway/headers.h"
#include "gateway/proxy.h"
#include "gateway/state.h"
#include "gateway/table.h"
#include "gateway/tunnel.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "kit/alloc.h"
#include "kit/authn.h"
#include "kit/config.h"
#include "kit/log.h"

#define SMALL_BODY  (64 * 1024)
#define MAX_WORKERS 256 /* the kit's limit on --workers */

static const tr_option_t gateway_options[] = {
    {"routes", NULL, "routes file (JSON, see docs/gateway.md; default: the built-in routes)"},
    {"upstream-host", "127.0.0.1",
     "host of upstreams named after a Trellis service that the routes give no instances"},
    {"web-root", "web", "directory served at / for paths no route claims (empty: none)"},
    {"cors-origins", NULL, "comma-separated origins allowed to call from browsers, or *"},
    {"cors-credentials", "false", "allow credentialed cross-origin requests (true/false)"},
    {"cors-max-age", "10m", "how long browsers may cache a preflight answer"},
    {"trust-forwarded", "false",
     "append to the client's X-Forwarded-For instead of replacing it (behind another proxy)"},
    {"api-key-cache-ttl", "10s", "how long a valid X-API-Key is remembered"},
    {"api-key-negative-ttl", "2s", "how long a refused X-API-Key is remembered"},
    {NULL, NULL, NULL},
};

static const tr_option_t *const gateway_option_sets[] = {tr_ratelimit_config_options, NULL};

/* ---- headers every answer carries ---------------------------------------- */

static void add_cors(tr_req_t *req, const gw_cors_headers_t *h)
{
    for (size_t i = 0; i < h->n; i++)
        tr_res_header(req, h->h[i].name, h->h[i].value);
}

void gw_common_headers(tr_req_t *req)
{
    gw_state_t *st = gw_state_of(req);
    tr_res_header(req, "X-Content-Type-Options", "nosniff");
    tr_res_header(req, "Referrer-Policy", "no-referrer");
    /* HSTS belongs to TLS answers only (--tls-cert / --tls-key). */
    if (req->tls) tr_res_header(req, "Strict-Transport-Security", "max-age=31536000");
    if (gw_cors_enabled(&st->cors)) {
        gw_cors_headers_t h;
        gw_cors_actual(&st->cors, tr_req_header(req, "Origin"), &h);
        add_cors(req, &h);
    }
}

/* ---- the decision ---------------------------------------------------------- */

static bool wants_websocket(const tr_req_t *req)
{
    const char *upgrade = tr_req_header(req, "Upgrade");
    const char *connection = tr_req_header(req, "Connection");
    return strcmp(req->method, "GET") == 0 && upgrade && connection &&
           gw_header_has_token(upgrade, "websocket") && gw_header_has_token(connection, "upgrade");
}

static void reject_401(tr_req_t *req, const char *why)
{
    tr_res_header(req, "WWW-Authenticate", "Bearer");
    tr_respond_error(req, TR_ERR_UNAUTHENTICATED, why ? why : "authentication required", NULL);
}

int gw_decide(gw_call_t *call, const gw_live_t *live)
{
    tr_req_t *req = call->req;
    gw_worker_t *gw = call->gw;
    size_t path_len = strlen(req->path);
    const char *why = NULL;

    switch (gw_path_classify(req->path, path_len)) {
    case GW_PATH_INVALID:
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT, "invalid request path", NULL);
        return 1;
    case GW_PATH_INTERNAL:
        tr_respond_error(req, TR_ERR_NOT_FOUND, "no route matches this path", NULL);
        return 1;
    case GW_PATH_OK:
        break;
    }
    switch (gw_table_match(live->table, req->method, req->path, path_len, &call->match)) {
    case GW_MATCH_NOT_FOUND:
        if (gw->st->web_root &&
            (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)) {
            call->kind = GW_CALL_STATIC;
            call->route_name = "static";
            return 0;
        }
        tr_respond_error(req, TR_ERR_NOT_FOUND, "no route matches this path", NULL);
        return 1;
    case GW_MATCH_METHOD_NOT_ALLOWED:
        tr_res_header(req, "Allow", call->match.allow);
        tr_respond_error(req, TR_ERR_METHOD_NOT_ALLOWED, "method not allowed for this path", NULL);
        return 1;
    case GW_MATCH_OK:
        break;
    }
    const gw_route_t *route = call->match.route;
    call->route = route;
    call->route_name = live->route_names[route - live->table->routes];
    call->up = live->ups[route->upstream];
    call->upstream_name = call->up->name;
    call->generation = live->generation;
    call->kind = route->websocket && wants_websocket(req) ? GW_CALL_WEBSOCKET : GW_CALL_PROXY;

    memset(&req->identity, 0, sizeof(req->identity));
    req->authenticated = false;
    call->need_api_key = false;
    /* Credentials are checked before anything depends on the upstream, so
     * an anonymous caller learns nothing of the topology (401 before 503). */
    if (route->auth != TR_AUTH_NONE) {
        const char *authorization = tr_req_header(req, "Authorization");
        if (authorization) {
            switch (tr_authn_bearer(req, authorization, &why)) {
            case TR_AUTHN_OK:
                break;
            case TR_AUTHN_UNAVAILABLE:
                tr_res_header(req, "Retry-After", "1");
                tr_respond_error(req, TR_ERR_UNAVAILABLE, why, NULL);
                return 1;
            case TR_AUTHN_NO_CREDENTIALS:
            case TR_AUTHN_INVALID:
                reject_401(req, why);
                return 1;
            }
        } else if (route->api_key && tr_req_header(req, "X-API-Key")) {
            call->need_api_key = true;
            return 0; /* roles are checked once the key is known (proxy.c) */
        } else if (route->auth == TR_AUTH_REQUIRED) {
            reject_401(req, "authentication required");
            return 1;
        } else {
            return 0;
        }
    }
    if (route->roles && !tr_role_allowed(route->roles, req->identity.role)) {
        tr_respond_error(req, TR_ERR_PERMISSION_DENIED, "your role does not allow this operation",
                         NULL);
        return 1;
    }
    return 0;
}

static int answer_preflight(tr_req_t *req, const gw_cors_t *cors, const char *origin,
                            const char *request_method)
{
    gw_cors_headers_t h;
    switch (gw_cors_preflight(cors, origin, request_method,
                              tr_req_header(req, "Access-Control-Request-Headers"), &h)) {
    case GW_CORS_ALLOW:
        add_cors(req, &h);
        tr_respond(req, 204, NULL, NULL, 0);
        break;
    case GW_CORS_ORIGIN_DENIED:
        add_cors(req, &h);
        tr_respond_error(req, TR_ERR_PERMISSION_DENIED, "origin not allowed", NULL);
        break;
    case GW_CORS_HEADERS_INVALID:
        add_cors(req, &h);
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT, "invalid Access-Control-Request-Headers",
                         NULL);
        break;
    }
    return 0;
}

static int gw_on_headers(tr_req_t *req, tr_body_mode_t *mode, size_t *max_body)
{
    gw_worker_t *gw = gw_worker_of(req);
    gw_state_t *st = gw->st;
    const char *origin = NULL, *request_method = NULL;

    gw_call_t *call = tr_req_alloc(req, sizeof(*call));
    memset(call, 0, sizeof(*call));
    call->req = req;
    call->gw = gw;
    req->handler_data = call;

    if (gw_cors_enabled(&st->cors)) {
        origin = tr_req_header(req, "Origin");
        request_method = tr_req_header(req, "Access-Control-Request-Method");
        if (gw_cors_is_preflight(req->method, origin, request_method)) {
            call->route_name = "preflight";
            tr_res_header(req, "X-Content-Type-Options", "nosniff");
            tr_res_header(req, "Referrer-Policy", "no-referrer");
            return answer_preflight(req, &st->cors, origin, request_method);
        }
    }
    gw_common_headers(req);
    gw_hold_t *h = gw_hold_current(gw);
    if (gw_decide(call, h->live) != 0) return 0;

    switch (call->kind) {
    case GW_CALL_STATIC:
    case GW_CALL_WEBSOCKET:
        *mode = TR_BODY_BUFFER;
        *max_body = 0;
        break;
    case GW_CALL_PROXY: {
        int64_t len = tr_req_body_length(req);
        *max_body = call->route->max_body;
        call->streamed_body = !(len >= 0 && len <= SMALL_BODY);
        *mode = call->streamed_body ? TR_BODY_STREAM : TR_BODY_BUFFER;
        break;
    }
    }
    /* The route belongs to the current table, which may be replaced before
     * dispatch: dispatch looks it up again when that happened. */
    return 0;
}

/* ---- access log and metrics ------------------------------------------------ */

static void gw_on_complete(tr_req_t *req, int status, size_t bytes_sent, double seconds)
{
    const gw_call_t *call = req->handler_data;
    gw_state_t *st = tr_worker_service(req->worker)->state;
    const char *route = call && call->route_name ? call->route_name : "unmatched";
    const char *upstream = call && call->upstream_name ? call->upstream_name : "";
    char status_text[12];

    tr_metrics_observe_request(route, req->method, status, seconds);
    snprintf(status_text, sizeof(status_text), "%d", status);
    const char *labels[] = {route, upstream[0] ? upstream : "none", status_text};
    tr_counter_inc(st->m.requests, labels);

    tr_log_level_t level = status >= 500 ? TR_LOG_ERROR : TR_LOG_INFO;
    if (!tr_log_enabled(level)) return;
    int64_t upstream_us = -1;
    if (call && call->upstream_head_ns > call->upstream_start_ns && call->upstream_start_ns)
        upstream_us = (int64_t)((call->upstream_head_ns - call->upstream_start_ns) / 1000);
    tr_log_field_t f[14];
    size_t n = 0;
    f[n++] = TR_LOG_STR("request_id", req->request_id);
    f[n++] = TR_LOG_STR("trace_id", req->trace.trace_id);
    if (req->authenticated) f[n++] = TR_LOG_STR("user_id", req->identity.user_id);
    f[n++] = TR_LOG_STR("method", req->method);
    f[n++] = TR_LOG_STR("route", route);
    f[n++] = TR_LOG_INT("status", status);
    if (upstream[0]) {
        f[n++] = TR_LOG_STR("upstream", upstream);
        if (call->instance) f[n++] = TR_LOG_STR("instance", call->instance);
        if (upstream_us >= 0) f[n++] = TR_LOG_MILLIS("upstream_ms", upstream_us);
        if (call->tries > 1) f[n++] = TR_LOG_INT("tries", call->tries);
    }
    f[n++] = TR_LOG_MILLIS("duration_ms", (int64_t)(seconds * 1e6));
    f[n++] = TR_LOG_INT("bytes", bytes_sent);
    f[n++] = TR_LOG_STR("client_ip", req->client_ip);
    tr_log_fields(level, "request", f, n);
}

/* ---- options ---------------------------------------------------------------- */

static int option_bool(const tr_config_t *cfg, const char *name, bool *out)
{
    const char *v = tr_config_get(cfg, name);
    if (v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0)) {
        *out = true;
    } else if (!v || strcmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcmp(v, "no") == 0) {
        *out = false;
    } else {
        tr_log_error("invalid --%s (true or false)", name);
        return -EINVAL;
    }
    return 0;
}

static int option_ms(const tr_config_t *cfg, const char *name, int64_t min, int64_t max,
                     uint64_t *out)
{
    int64_t v;
    if (tr_config_duration_ms(cfg, name, &v) != 0 || v < min || v > max) {
        tr_log_error("invalid --%s (a duration from %lldms to %llds)", name, (long long)min,
                     (long long)(max / 1000));
        return -EINVAL;
    }
    *out = (uint64_t)v;
    return 0;
}

static int load_options(gw_state_t *st)
{
    const tr_config_t *cfg = st->svc->config;
    char err[256];
    uint64_t max_age = 0;
    bool credentials = false;
    int64_t port_base = 8000;
    int rc;

    const char *routes = tr_config_get(cfg, "routes");
    st->routes_path = routes && *routes ? tr_xstrdup(routes) : NULL;
    st->upstream_host = tr_xstrdup(tr_config_get(cfg, "upstream-host"));
    if (!st->upstream_host[0]) {
        tr_log_error("invalid --upstream-host (empty)");
        return -EINVAL;
    }
    if (tr_config_int(cfg, "port-base", &port_base) != 0 || port_base < 1 ||
        port_base > 65535 - 64) {
        tr_log_error("invalid --port-base");
        return -EINVAL;
    }
    st->env.upstream_host = st->upstream_host;
    st->env.port_base = (int)port_base;
    if ((rc = option_bool(cfg, "trust-forwarded", &st->trust_forwarded)) != 0 ||
        (rc = option_bool(cfg, "cors-credentials", &credentials)) != 0 ||
        (rc = option_ms(cfg, "cors-max-age", 0, 86400000, &max_age)) != 0)
        return rc;
    if (gw_cors_parse(&st->cors, tr_config_get(cfg, "cors-origins"), credentials, max_age, err,
                      sizeof(err)) != 0) {
        tr_log_error("%s", err);
        return -EINVAL;
    }
    const char *web = tr_config_get(cfg, "web-root");
    char resolved[PATH_MAX];
    struct stat sb;
    if (web && *web) {
        if (realpath(web, resolved) && stat(resolved, &sb) == 0 && S_ISDIR(sb.st_mode))
            st->web_root = tr_xstrdup(resolved);
        else
            tr_log_info("no web root at %s: paths no route claims answer 404", web);
    }
    return 0;
}

static void register_metrics(gw_state_t *st)
{
    gw_metrics_t *m = &st->m;
    m->requests =
        tr_counter_register("gateway_requests_total", "Requests by route, upstream and status.",
                            "route,upstream,status");
    m->rate_limited = tr_counter_register("gateway_rate_limited_total",
                                          "Requests refused with 429, by route.", "route");
    m->reloads =
        tr_counter_register("gateway_routes_reloads_total", "Routes reloads by result.", "result");
    m->websockets = tr_gauge_register("gateway_websockets_active",
                                      "WebSocket tunnels open through the gateway.");
}

/* ---- routes loading ---------------------------------------------------------- */

static int load_table(gw_state_t *st, gw_table_t **out, char *err, size_t errlen)
{
    if (st->routes_path) return gw_table_load_file(st->routes_path, &st->env, out, err, errlen);
    return gw_table_parse(gw_default_routes_json, strlen(gw_default_routes_json), "built-in routes",
                          &st->env, out, err, errlen);
}

static void log_table(const char *msg, const gw_live_t *l)
{
    json_t *f = json_object();
    json_object_set_new(f, "source", json_string(l->table->source));
    json_object_set_new(f, "routes", json_integer((json_int_t)l->table->nroutes));
    json_object_set_new(f, "upstreams", json_integer((json_int_t)l->table->nupstreams));
    tr_log_json(TR_LOG_INFO, msg, f);
}

/* The kit's authenticator (revocation feed, API keys) asks the "auth"
 * upstream of the routes table when it has one, else --auth-url. */
static void follow_auth(gw_state_t *st, const gw_live_t *live)
{
    if (live->auth < 0) return;
    const tr_upstream_t *up = live->ups[live->auth]->up;
    tr_upstream_instance_info_t first;
    if (tr_upstream_instance_count(up) == 0) return;
    tr_upstream_instance_info(up, 0, 0, &first);
    tr_service_set_auth(st->svc, first.address);
}

static void gw_reload(tr_service_t *svc)
{
    gw_state_t *st = svc->state;
    gw_table_t *t = NULL;
    gw_live_t *live = NULL;
    char err[512] = "";
    int rc = load_table(st, &t, err, sizeof(err));
    /* Only this thread replaces st->current, so reading it here is safe. */
    if (rc == 0) rc = gw_live_build(st, t, st->current, &live, err, sizeof(err));
    if (rc != 0) {
        const char *labels[] = {"rejected"};
        tr_counter_inc(st->m.reloads, labels);
        json_t *f = json_object();
        json_object_set_new(f, "error", json_string(err));
        tr_log_json(TR_LOG_WARN, "routes reload rejected", f);
        return;
    }
    gw_publish(st, live);
    follow_auth(st, live);
    const char *labels[] = {"ok"};
    tr_counter_inc(st->m.reloads, labels);
    log_table("routes reloaded", live);
}

/* ---- init / close --------------------------------------------------------------- */

static void gw_close(tr_service_t *svc)
{
    gw_state_t *st = svc->state;
    if (!st) return;
    gw_live_unref(st->current);
    tr_ratelimit_free(st->rl);
    gw_cors_free(&st->cors);
    free(st->workers);
    free(st->routes_path);
    free(st->upstream_host);
    free(st->web_root);
    pthread_mutex_destroy(&st->lock);
    free(st);
    svc->state = NULL;
}

static int gw_init(tr_service_t *svc)
{
    gw_state_t *st = tr_xcalloc(1, sizeof(*st));
    gw_table_t *t = NULL;
    gw_live_t *live = NULL;
    char err[512] = "";
    int rc;

    st->svc = svc;
    svc->state = st;
    pthread_mutex_init(&st->lock, NULL);
    atomic_init(&st->generation, 0);
    st->workers = tr_xcalloc(MAX_WORKERS, sizeof(gw_worker_t *));
    st->nworkers = MAX_WORKERS;
    register_metrics(st);

    if ((rc = load_options(st)) != 0) goto out;
    if ((rc = tr_ratelimit_create_from_config(svc->config, &st->rl)) != 0) {
        tr_log_error("invalid rate-limit options (--redis-url, --ratelimit-*)");
        rc = -EINVAL;
        goto out;
    }
    if ((rc = load_table(st, &t, err, sizeof(err))) != 0) {
        tr_log_error("invalid routes: %s", err);
        rc = -EINVAL;
        goto out;
    }
    if ((rc = gw_live_build(st, t, NULL, &live, err, sizeof(err))) != 0) {
        tr_log_error("cannot use the routes: %s", err);
        rc = rc == -EHOSTUNREACH || rc == -EINVAL ? -EINVAL : rc;
        goto out;
    }
    gw_publish(st, live);
    follow_auth(st, live);
    log_table("routes loaded", live);
out:
    if (rc != 0) gw_close(svc);
    return rc;
}

static int gw_worker_init(tr_worker_t *w)
{
    gw_state_t *st = tr_worker_service(w)->state;
    gw_worker_t *gw = tr_xcalloc(1, sizeof(*gw));
    int rc;
    gw->w = w;
    gw->st = st;
    w->state = gw;
    if ((rc = tr_client_new(w->loop, &gw->client)) != 0) goto fail;
    if ((rc = tr_ratelimit_worker_open(st->rl, w->loop, &gw->rl)) != 0) goto fail;
    if ((rc = gw_table_worker_open(gw)) != 0) goto fail;
    return 0;
fail:
    tr_log_error("gateway worker %d: set-up failed (%d)", w->index, rc);
    gw_table_worker_close(gw);
    if (gw->rl) tr_ratelimit_worker_close(gw->rl);
    if (gw->client) tr_client_free(gw->client);
    free(gw);
    w->state = NULL;
    return rc;
}

static void gw_worker_close(tr_worker_t *w)
{
    gw_worker_t *gw = w->state;
    if (!gw) return;
    gw_tunnels_close_all(gw);
    gw_table_worker_close(gw);
    tr_ratelimit_worker_close(gw->rl);
    tr_client_free(gw->client);
    free(gw);
    w->state = NULL;
}

/* Name, port offset and workers (one per core): src/services/registry.c. */
const tr_service_def_t gateway_service = {
    .options = gateway_options,
    .option_sets = gateway_option_sets,
    .init = gw_init,
    .close = gw_close,
    .worker_init = gw_worker_init,
    .worker_close = gw_worker_close,
    .no_store = true,
    .authn = true,
    .on_headers = gw_on_headers,
    .handle_claimed = gw_dispatch,
    .on_complete = gw_on_complete,
    .ready = gw_ready,
    .healthz = gw_handle_healthz,
    .metrics_extra = gw_metrics_extra,
    .reload = gw_reload,
};

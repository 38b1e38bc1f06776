/*
 * gateway_internal.h - what the gateway's files share.
 *
 * Files, one concern each:
 *   gateway.c     service definition, options, init/close, workers, the
 *                 header-time decision (route, CORS, edge auth), access log
 *   table.c       live route tables: upstream objects and rate-limit
 *                 policies behind a parsed table, refcounting, the swap on
 *                 SIGHUP across worker threads
 *   routes.c      the routes file: parse, validate, match, rewrite (pure)
 *   proxy.c       the request pipeline after the head: API key, rate
 *                 limit, then the reverse proxy with streaming both ways
 *   tunnel.c      WebSocket pass-through: piping two TCP streams
 *   edge_auth.c   JWT verification at the edge, identity of the caller
 *   revocations.c the set of revoked sessions and the poller that fills it
 *   apikeys.c     X-API-Key checks against auth, cached per worker
 *   cors.c        CORS decisions (pure)
 *   static.c      the dashboard directory at / (path checks are pure)
 *   health.c      /healthz aggregated over upstreams, /readyz, /metrics
 *
 * THREADS. The gateway runs N worker loops (kit/server.h). Process-wide
 * state (gw_state_t) is written at init and by the main thread on SIGHUP;
 * workers read it without locks except for the table swap (table.c) and
 * the revocation set's hazard slot (revocations.c). Everything in
 * gw_worker_t belongs to one worker loop.
 *
 * A REQUEST goes: on_headers (gateway.c) decides synchronously -- static
 * file, preflight, 404/405, 401/403 from a bad or insufficient token -- and
 * claims the rest with a body mode; dispatch (proxy.c) then runs the
 * asynchronous stages (API key lookup, rate-limit decision) and proxies.
 * Its per-request state is a gw_call_t in the request's arena.
 */
#ifndef TR_GATEWAY_INTERNAL_H
#define TR_GATEWAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "gateway/cors.h"
#include "gateway/gateway.h"
#include "gateway/routes.h"
#include "kit/client.h"
#include "kit/jwt.h"
#include "kit/jwtcache.h"
#include "kit/metrics.h"
#include "kit/ratelimit.h"
#include "kit/service.h"
#include "kit/upstream.h"

typedef struct gw_state gw_state_t;
typedef struct gw_worker gw_worker_t;
typedef struct gw_revocations gw_revocations_t;
typedef struct gw_apikey_cache gw_apikey_cache_t;
typedef struct gw_apikey_lookup gw_apikey_lookup_t;
typedef struct gw_tunnel gw_tunnel_t;

/* ---- table.c: live tables ------------------------------------------------ */

/* An upstream object shared by every live table that has the same
 * definition (so a reload that does not touch it keeps its breaker, outlier
 * and health state). The last table to drop it retires it. */
typedef struct gw_upstream_ref {
    tr_upstream_t *up;
    const char *name; /* interned */
    char *fingerprint;
    bool required;
    uint64_t connect_timeout_ms;
    _Atomic size_t refs;
} gw_upstream_ref_t;

/* A parsed table with what it needs at run time. Immutable once built. */
typedef struct gw_live {
    gw_table_t *table;
    gw_upstream_ref_t **ups;                /* parallel to table->upstreams */
    const tr_ratelimit_policy_t **policies; /* parallel to table->limits */
    const char **route_names;               /* interned, parallel to table->routes */
    int auth;                               /* index of the "auth" upstream, -1 when none */
    uint64_t generation;
    _Atomic size_t refs;
} gw_live_t;

/* A worker's handle on one live table: a plain (unsynchronised) count of
 * the worker's requests using it, so the hot path takes no atomic. The
 * worker holds one reference to the live table per hold. */
typedef struct gw_hold {
    gw_live_t *live;
    size_t refs;
    bool current; /* the worker's newest hold */
} gw_hold_t;

/* Interns a string for the life of the process (route and upstream names
 * used as metric labels and in logs, which must outlive any table). */
const char *gw_intern(const char *s);
/* Builds a live table from table (owned by the result on success; freed on
 * failure), reusing matching upstream objects of previous (may be NULL).
 * Creates upstreams and sets rate-limit policies. Returns 0 or a negative
 * code with a message in err. Main thread. */
int gw_live_build(gw_state_t *st, gw_table_t *table, const gw_live_t *previous, gw_live_t **out,
                  char *err, size_t errlen);
void gw_live_unref(gw_live_t *l);
/* Makes live the current table (taking over the caller's reference) and
 * tells every worker. Main thread. */
void gw_publish(gw_state_t *st, gw_live_t *live);
/* A reference to the current table (drop it with gw_live_unref), or NULL
 * before the first publish. Any thread, including the admin listener's: for
 * code that runs outside the gateway's workers. */
gw_live_t *gw_live_current(gw_state_t *st);
/* The worker's current hold, moving to the newest table first when one was
 * published. Worker thread. */
gw_hold_t *gw_hold_current(gw_worker_t *gw);
/* Takes and releases a request's use of a hold. Worker thread. */
static inline void gw_hold_acquire(gw_hold_t *h)
{
    h->refs++;
}
void gw_hold_release(gw_worker_t *gw, gw_hold_t *h);
/* Worker set-up and tear-down of the table machinery (the wake-up handle). */
int gw_table_worker_open(gw_worker_t *gw);
void gw_table_worker_close(gw_worker_t *gw);

/* ---- process and worker state -------------------------------------------- */

typedef struct gw_metrics {
    tr_counter_t *requests;        /* {route,upstream,status} */
    tr_counter_t *rate_limited;    /* {route} */
    tr_counter_t *auth_rejections; /* {reason} */
    tr_counter_t *reloads;         /* {result} */
    tr_counter_t *api_key_lookups; /* {result} */
    tr_counter_t *revocation_poll_errors;
    tr_gauge_t *revoked_sessions;
    tr_gauge_t *revocation_feed_up;
    tr_gauge_t *websockets;
} gw_metrics_t;

struct gw_state {
    tr_service_t *svc;
    char *routes_path; /* NULL: the built-in default */
    gw_routes_env_t env;
    char *upstream_host;

    pthread_mutex_t lock; /* current, generation bumps, workers */
    gw_live_t *current;   /* the state's own reference */
    _Atomic uint64_t generation;
    gw_worker_t **workers; /* registered while running, for wake-ups */
    size_t nworkers;

    tr_ratelimit_t *rl;
    tr_jwt_keys_t *jwt;
    char *internal_token;
    gw_cors_t cors;
    char *web_root; /* resolved directory, NULL when there is none */
    bool trust_forwarded;
    uint64_t api_key_ttl_ms;
    uint64_t api_key_negative_ttl_ms;
    uint64_t revocation_poll_ms;
    gw_revocations_t *revocations;
    gw_metrics_t m;
};

struct gw_worker {
    tr_worker_t *w;
    gw_state_t *st;
    tr_client_t *client;
    tr_ratelimit_worker_t *rl;
    tr_jwt_cache_t *jwt_cache;
    gw_apikey_cache_t *api_keys;

    gw_hold_t *hold; /* current */
    uint64_t generation;
    uv_async_t *wake; /* a new table was published (freed by its close callback) */

    gw_tunnel_t *tunnels; /* open WebSocket tunnels (tunnel.c) */
    void *poller;         /* worker 0: the revocation poller (revocations.c) */
};

static inline gw_state_t *gw_state_of(const tr_req_t *req)
{
    return (gw_state_t *)tr_req_service(req)->state;
}

static inline gw_worker_t *gw_worker_of(const tr_req_t *req)
{
    return (gw_worker_t *)req->worker->state;
}

/* ---- a request ----------------------------------------------------------- */

typedef enum gw_call_kind { GW_CALL_PROXY, GW_CALL_WEBSOCKET, GW_CALL_STATIC } gw_call_kind_t;

typedef struct gw_call {
    tr_req_t *req;
    gw_worker_t *gw;
    gw_call_kind_t kind;

    /* Decided at headers time against the table of that generation; dispatch
     * decides again when the worker moved to a newer table meanwhile. */
    uint64_t generation;
    const gw_route_t *route; /* valid while hold is held, or during on_headers */
    const char *route_name;  /* interned: valid always */
    const char *upstream_name;
    gw_match_t match;
    bool need_api_key; /* credentials are an X-API-Key still to be checked */

    gw_hold_t *hold; /* taken at dispatch, released when the call ends */
    gw_upstream_ref_t *up;

    /* pending asynchronous steps (at most one at a time) */
    gw_apikey_lookup_t *api_key_lookup;
    tr_ratelimit_pending_t *rl_pending;
    tr_client_req_t *creq;

    /* relaying */
    bool streamed_body;   /* the request body goes up piecewise */
    bool req_body_paused; /* waiting for the upstream to take what we wrote */
    bool head_started;    /* tr_respond_start() done */
    bool upstream_paused; /* waiting for the client to take what we wrote */
    bool ended;           /* answered; late callbacks must not touch the call */
    unsigned fences;      /* zero-length writes whose callback is pending */
    size_t since_fence;   /* bytes written since the last fence */

    /* for the access log */
    int upstream_status;
    unsigned tries;
    const char *instance; /* arena copy */
    uint64_t upstream_start_ns;
    uint64_t upstream_head_ns;
} gw_call_t;

/* Finishes a call's use of the table after its answer was given; h and gw
 * are copies taken before answering (the call is gone by then). */
static inline void gw_call_release(gw_worker_t *gw, gw_hold_t *h)
{
    if (h) gw_hold_release(gw, h);
}

/* gateway.c: decides a request against a live table (route, auth at the
 * edge, roles). Returns 0 when the request goes on (call filled), or 1 when
 * it was answered. Worker thread. */
int gw_decide(gw_call_t *call, const gw_live_t *live);
/* Adds the headers every gateway answer carries (security, CORS). */
void gw_common_headers(tr_req_t *req);

/* ---- headers.c (pure) ----------------------------------------------------- */

typedef enum gw_header_action {
    GW_HDR_KEEP,   /* forwarded as is */
    GW_HDR_DROP,   /* never forwarded */
    GW_HDR_HOST,   /* becomes X-Forwarded-Host */
    GW_HDR_VIA,    /* extended with the gateway's hop */
    GW_HDR_XFF,    /* X-Forwarded-For: replaced, or extended with --trust-forwarded */
    GW_HDR_UPGRADE /* Upgrade, kept for a WebSocket pass-through */
} gw_header_action_t;

/* What happens to a client request header on its way to the upstream (a
 * header named in the request's Connection header is dropped too: see
 * gw_header_has_token). */
gw_header_action_t gw_request_header_action(const char *name, bool websocket);
/* True when an upstream response header is not relayed to the client. */
bool gw_response_header_dropped(const char *name, bool cors);
/* True when the comma-separated list value (e.g. a Connection header)
 * holds token, compared case-insensitively. */
bool gw_header_has_token(const char *value, const char *token);

/* ---- proxy.c ------------------------------------------------------------- */

/* handle_claimed for every request on_headers claimed. */
void gw_dispatch(tr_req_t *req);

/* ---- tunnel.c ------------------------------------------------------------ */

/* Pipes a client socket (taken over with tr_req_upgrade) and an upstream
 * stream (from the client's on_upgrade) until either side closes. head is
 * written to the client first (the upstream's 101 answer), then
 * client_extra (bytes the upstream sent after its head); client_pending
 * (bytes the client sent after its request) goes to the upstream. Takes
 * ownership of client_fd and upstream in every case (closes them on
 * failure). Returns 0 or a negative errno. */
int gw_tunnel_start(gw_worker_t *gw, int client_fd, uv_tcp_t *upstream, const char *head,
                    size_t head_len, const char *client_extra, size_t client_extra_len,
                    const char *client_pending, size_t client_pending_len);
/* Closes every tunnel of the worker (worker shutdown). */
void gw_tunnels_close_all(gw_worker_t *gw);

/* ---- edge_auth.c --------------------------------------------------------- */

typedef enum gw_cred {
    GW_CRED_NONE,    /* no credentials given (or none accepted on this route) */
    GW_CRED_OK,      /* req->identity filled from a verified token */
    GW_CRED_API_KEY, /* an X-API-Key to check asynchronously (apikeys.c) */
    GW_CRED_INVALID  /* refused: *why says why (client-safe) */
} gw_cred_t;

/* Loads the JWT keys from the gateway's options (the same options and
 * secret file as auth). Returns 0 or -EINVAL after logging why. */
int gw_edge_auth_init(gw_state_t *st);
/* Looks at the credentials of a request for route r. Worker thread. */
gw_cred_t gw_edge_authenticate(gw_worker_t *gw, tr_req_t *req, const gw_route_t *r,
                               const char **why);

/* ---- revocations.c ------------------------------------------------------- */

gw_revocations_t *gw_revocations_new(size_t nworkers);
void gw_revocations_free(gw_revocations_t *r);
/* True when the session (a UUID string) was revoked. Called by worker
 * worker_index only (its hazard slot). */
bool gw_revocations_contains(gw_revocations_t *r, int worker_index, const char *session_id);
/* Worker 0 starts and stops the poller of auth's revocation feed. */
int gw_revocations_poller_start(gw_worker_t *gw);
void gw_revocations_poller_stop(gw_worker_t *gw);

/* Pure parts, for tests: a snapshot set of session ids with expiry. */
typedef struct gw_revset gw_revset_t;
/* A new set holding the entries of old (may be NULL) that are not expired
 * at now_ms plus adds (n of them). */
gw_revset_t *gw_revset_merge(const gw_revset_t *old, const uint8_t (*ids)[16],
                             const int64_t *expires_ms, size_t n, int64_t now_ms);
bool gw_revset_contains(const gw_revset_t *s, const uint8_t id[16]);
size_t gw_revset_count(const gw_revset_t *s);
void gw_revset_free(gw_revset_t *s);
/* Parses a UUID string into 16 bytes. Returns 0 or -EINVAL. */
int gw_uuid_parse(const char *s, uint8_t out[16]);

/* ---- apikeys.c ----------------------------------------------------------- */

typedef struct gw_api_key_identity {
    char user_id[40];
    char role[24];
} gw_api_key_identity_t;

/* status 0: valid (id filled); -EACCES: refused (reason set); other
 * negative: auth could not be asked (answer 503). */
typedef void (*gw_apikey_cb)(void *arg, int status, const gw_api_key_identity_t *id,
                             const char *reason);

gw_apikey_cache_t *gw_apikey_cache_new(void);
void gw_apikey_cache_free(gw_apikey_cache_t *c);
/* Checks key: from the worker's cache (returns 0 and calls nothing, with
 * *status, *id and *reason filled) or by asking auth (returns 1; cb comes
 * later from the loop unless gw_apikey_cancel is called first; *pending is
 * the handle). live gives the auth upstream; the caller must hold it until
 * the callback or the cancel. Returns a negative code when auth cannot be
 * asked at all (-ENOENT: no auth upstream; the client's fail-fast errors). */
int gw_apikey_check(gw_worker_t *gw, const gw_live_t *live, const char *key, int *status,
                    gw_api_key_identity_t *id, const char **reason, gw_apikey_cb cb, void *arg,
                    gw_apikey_lookup_t **pending);
void gw_apikey_cancel(gw_apikey_lookup_t *l);

/* ---- static.c ------------------------------------------------------------ */

/* Maps a request path to a file below the web root: percent-decoded, with
 * "/" and paths ending in '/' meaning index.html. Writes the relative path
 * ("index.html", "assets/app.js") into out. Returns 0, or -EINVAL for a
 * path that is not allowed (a "." or ".." segment, an escaped NUL, a
 * malformed escape, a backslash, a segment starting with '.'), or
 * -ENAMETOOLONG. Pure. */
int gw_static_relpath(const char *path, size_t len, char *out, size_t outlen);
/* The Content-Type for a file name, by extension. Pure. */
const char *gw_static_content_type(const char *name);
/* True when an If-None-Match header value lists etag (or is "*"). Pure. */
bool gw_static_etag_matches(const char *if_none_match, const char *etag);
/* Answers a GET or HEAD for a path no route claims from st->web_root:
 * 200 with the file, 304, 404, or 405 for other methods. */
void gw_static_serve(tr_req_t *req);

/* ---- health.c ------------------------------------------------------------ */

void gw_handle_healthz(tr_req_t *req);
int gw_ready(tr_service_t *svc, const char **why);
int gw_metrics_extra(tr_buf_t *out, uint64_t now_ms);

#endif

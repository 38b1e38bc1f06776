/*
 * state.h - the gateway's process state (gw_state_t, set up by
 * gateway.c) and per-worker state (gw_worker_t), read by every file that
 * handles a request.
 *
 * THREADS. Process-wide state (gw_state_t) is written at init and by the
 * main thread on SIGHUP; workers read it without locks except for the table
 * swap (table.c) and the revocation set's hazard slot (revocations.c).
 * Everything in gw_worker_t belongs to one worker loop.
 */
#ifndef TR_GATEWAY_STATE_H
#define TR_GATEWAY_STATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "gateway/cors.h"
#include "gateway/routes.h"
#include "gateway/table.h"
#include "kit/client.h"
#include "kit/metrics.h"
#include "kit/ratelimit.h"
#include "kit/service.h"

typedef struct gw_tunnel gw_tunnel_t;

typedef struct gw_metrics {
    tr_counter_t *requests;     /* {route,upstream,status} */
    tr_counter_t *rate_limited; /* {route} */
    tr_counter_t *reloads;      /* {result} */
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
    gw_cors_t cors;
    char *web_root; /* resolved directory, NULL when there is none */
    bool trust_forwarded;
    gw_metrics_t m;
};

struct gw_worker {
    tr_worker_t *w;
    gw_state_t *st;
    tr_client_t *client;
    tr_ratelimit_worker_t *rl;

    gw_hold_t *hold; /* current */
    uint64_t generation;
    uv_async_t *wake; /* a new table was published (freed by its close callback) */

    gw_tunnel_t *tunnels; /* open WebSocket tunnels (tunnel.c) */
};

static inline gw_state_t *gw_state_of(const tr_req_t *req)
{
    return (gw_state_t *)tr_req_service(req)->state;
}

static inline gw_worker_t *gw_worker_of(const tr_req_t *req)
{
    return (gw_worker_t *)req->worker->state;
}

#endif

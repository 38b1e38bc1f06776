/*
 * call.h - one proxied request (gw_call_t) and the header-time
 * decision on it (gateway.c).
 *
 * A REQUEST goes: on_headers (gateway.c) decides synchronously -- static
 * file, preflight, 404/405, 401/403 from a bad or insufficient token -- and
 * claims the rest with a body mode; dispatch (proxy.c) then runs the
 * asynchronous stages (API key lookup, rate-limit decision) and proxies.
 * Its per-request state is a gw_call_t in the request's arena.
 */
#ifndef TR_GATEWAY_CALL_H
#define TR_GATEWAY_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/routes.h"
#include "gateway/state.h"
#include "gateway/table.h"
#include "kit/client.h"
#include "kit/ratelimit.h"

typedef struct tr_authn_lookup tr_authn_lookup_t;

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
    tr_authn_lookup_t *api_key_lookup;
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

#endif

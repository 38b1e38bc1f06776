/*
 * gateway.h - the API gateway (port 8000 = port-base + 0): the public entry
 * point that routes /api/... to the services, checks credentials at the
 * edge, rate-limits, and serves the dashboard. docs/gateway.md describes
 * every behaviour.
 *
 * Files, one concern each, each with the header the others include (a file
 * includes only the headers of what it uses):
 *   gateway.c     service definition, options, init/close, workers, the
 *                 header-time decision (route, CORS, edge auth), access log;
 *                 its shared types are in state.h (process and worker
 *                 state) and call.h (one request and the decision)
 *   table.c/h     live route tables: upstream objects and rate-limit
 *                 policies behind a parsed table, refcounting, the swap on
 *                 SIGHUP across worker threads
 *   routes.c/h    the routes file: parse, validate, match, rewrite (pure)
 *   proxy.c/h     the request pipeline after the head: API key, rate
 *                 limit, then the reverse proxy with streaming both ways
 *   tunnel.c/h    WebSocket pass-through: piping two TCP streams
 *   edge_auth.c/h JWT verification at the edge, identity of the caller
 *   revocations.c/h the set of revoked sessions and the poller that fills it
 *   apikeys.c/h   X-API-Key checks against auth, cached per worker
 *   headers.c/h   which headers cross, each way (pure)
 *   cors.c/h      CORS decisions (pure)
 *   static.c/h    the dashboard directory at / (path checks are pure)
 *   health.c/h    /healthz aggregated over upstreams, /readyz, /metrics
 */
#ifndef TR_GATEWAY_H
#define TR_GATEWAY_H

#include "kit/service.h"

extern const tr_service_def_t gateway_service;

#endif

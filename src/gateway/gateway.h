/*
 * gateway.h - the API gateway (port 8000 = port-base + 0): the public entry
 * point that routes /api/... to the services, checks credentials at the
 * edge, rate-limits, and serves the dashboard. docs/gateway.md describes
 * every behaviour; gateway_internal.h how the files share the work.
 */
#ifndef TR_GATEWAY_H
#define TR_GATEWAY_H

#include "kit/service.h"

extern const tr_service_def_t gateway_service;

#endif

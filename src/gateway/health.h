/*
 * health.h - /healthz aggregated over upstreams, /readyz, and the
 * gateway's part of /metrics (health.c).
 */
#ifndef TR_GATEWAY_HEALTH_H
#define TR_GATEWAY_HEALTH_H

#include <stdint.h>

#include "kit/buf.h"
#include "kit/http.h"
#include "kit/service.h"

void gw_handle_healthz(tr_req_t *req);
int gw_ready(tr_service_t *svc, const char **why);
int gw_metrics_extra(tr_buf_t *out, uint64_t now_ms);

#endif

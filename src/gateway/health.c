/*
 * health.c - the gateway's own probes and metrics.
 *
 * /healthz aggregates: each upstream of the current routes table is
 * (tr_upstream_health)
 *   "down"    when no request could be sent to it now (no instance healthy
 *             and not ejected, or its breaker open);
 *   "unknown" otherwise, while its active health checks have not reached a
 *             first verdict (just after start or a reload that added it:
 *             instances start optimistically available, which is no
 *             evidence that the service is there);
 *   "up"      otherwise.
 * The answer is 503 with "status": "degraded" while an upstream marked
 * "required" in the routes file is down, else 200 "ok" ("unknown" does not
 * degrade: a probe must not fail the gateway before a check ran). Services
 * that are simply not deployed (a `trellis up --only gateway,auth`) show as
 * "down" without making the gateway unhealthy.
 *
 * /readyz is "the routes are loaded": the gateway can answer (503s
 * included) from the moment it listens, and readiness must not wait for
 * upstreams or `trellis up` could never start services that depend on each
 * other.
 *
 * /metrics (on the admin listener, kit/admin.h) appends the per-upstream
 * state the kit's registry cannot express (breaker state, instance health
 * and ejection, latency histograms). /healthz runs there too, so it reads
 * the process-wide current table, not a worker's hold.
 */
#include "gateway/health.h"
#include "gateway/state.h"
#include "gateway/table.h"

#include <string.h>

static const char *const health_names[] = {
    [TR_UPSTREAM_UNKNOWN] = "unknown", [TR_UPSTREAM_UP] = "up", [TR_UPSTREAM_DOWN] = "down"};

void gw_handle_healthz(tr_req_t *req)
{
    /* Process-wide state only: this also runs on the admin listener. */
    gw_live_t *live = gw_live_current(gw_state_of(req));
    uint64_t now = uv_now(req->worker->loop);
    json_t *services = json_object();
    bool degraded = false;

    for (size_t i = 0; live && i < live->table->nupstreams; i++) {
        const gw_upstream_ref_t *u = live->ups[i];
        tr_upstream_health_t h = tr_upstream_health(u->up, now);
        if (h == TR_UPSTREAM_DOWN && u->required) degraded = true;
        json_object_set_new(services, u->name, json_string(health_names[h]));
    }
    gw_live_unref(live);
    json_t *body = json_object();
    json_object_set_new(body, "status", json_string(degraded ? "degraded" : "ok"));
    json_object_set_new(body, "services", services);
    tr_res_header(req, "Cache-Control", "no-store");
    tr_respond_json(req, degraded ? 503 : 200, body);
}

int gw_ready(tr_service_t *svc, const char **why)
{
    gw_state_t *st = svc->state;
    if (!st || atomic_load_explicit(&st->generation, memory_order_acquire) == 0) {
        *why = "routes not loaded";
        return -1;
    }
    return 0;
}

int gw_metrics_extra(tr_buf_t *out, uint64_t now_ms)
{
    return tr_upstream_render_metrics(out, now_ms);
}

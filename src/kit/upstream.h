/*
 * upstream.h - a named service with one or more instances (host:port), and
 * the state the HTTP client (client.h) keeps about it: instance health,
 * outlier ejection, the circuit breaker, and the metrics.
 *
 * WHAT IS SHARED AND WHAT IS PER WORKER. A tr_upstream_t is created once per
 * process (before or while the workers run) and shared by every worker
 * thread. What must mean one thing process-wide lives in it, in atomics:
 *   - the circuit breaker (breaker.h): 5 consecutive failures open it for the
 *     whole process, and there is one half-open probe, not one per worker;
 *   - outlier ejection per instance: 5 consecutive failures (5xx responses,
 *     connect errors, resets, timeouts) eject the instance;
 *   - active health per instance, written by the one loop that runs the
 *     health checks (tr_client_run_health_checks) and read by all.
 * The healthy path only loads these (a success writes a counter only when it
 * is not already 0), so no lock and no contended cache line is on the hot
 * path. What is naturally per worker stays in the worker's tr_client_t, with
 * no synchronisation: the keep-alive connection pools, the round-robin
 * cursor, the outstanding-request counts for least-request balancing, and the
 * retry budget (retry.h). A worker balances with its own outstanding counts,
 * which is what Envoy does too: each worker sees a fair share of the load.
 *
 * INSTANCE SELECTION. An instance is available when its last active health
 * verdict is healthy (instances start healthy, so traffic flows before the
 * first check) and it is not ejected. Round robin walks the available
 * instances in order; least-request picks the available instance with the
 * fewest requests outstanding from this worker, breaking ties round-robin so
 * idle upstreams still spread the load. With no available instance the
 * request fails at once with TR_CLIENT_ENO_HEALTHY (503), never hangs.
 *
 * OUTLIER EJECTION. The n-th ejection of an instance lasts
 * base_ejection_ms * n, at most max_ejection_ms; the multiplier n decays by
 * one for every base_ejection_ms the instance then stays in service, so an
 * instance that failed once long ago starts again from 30 s. At most
 * max_ejection_percent of the instances are ejected at once (rounded down),
 * and an ejection never leaves the upstream without an available instance:
 * unlike Envoy (which ejects at least one host and then "panics" into
 * sending to all of them), a single-instance upstream is never ejected; the
 * circuit breaker is what protects it. The consecutive-failure count restarts
 * at 0 on ejection, so a returning instance needs 5 new failures to go again.
 *
 * ACTIVE HEALTH CHECKS. Every health_interval_ms each instance gets
 * "GET <health_path>" on a fresh connection (so it proves the instance accepts
 * connections, independently of pooled ones), with health_timeout_ms. A 2xx
 * answer is a success, anything else a failure. unhealthy_threshold
 * consecutive failures mark it unhealthy, healthy_threshold consecutive
 * successes healthy again. An instance's health is UNKNOWN until the checks
 * reached their first verdict (healthy_threshold successes or
 * unhealthy_threshold failures in a row); see tr_upstream_health.
 *
 * A PASSING CHECK CLOSES THE BREAKER. When a check finds an instance healthy
 * (a success that leaves it marked healthy), the upstream's circuit breaker
 * closes at once (tr_breaker_close) instead of waiting out its cool-down, so
 * traffic resumes within one health interval of the upstream being ready
 * again. The breaker keeps protecting an upstream whose health endpoint
 * passes while its requests fail: it reopens after the next
 * failure_threshold failures.
 *
 * LIFETIME. tr_upstream_new returns a reference; every tr_client_t that sends
 * to the upstream takes its own. tr_upstream_release drops the creator's
 * reference and retires the upstream: it leaves the metrics and health
 * output, and each client drops its pools for it once its own requests to it
 * are finished (checked on the client's housekeeping timer, see client.h).
 * The memory goes with the last reference. This is what lets the gateway swap
 * its route table on SIGHUP while requests on the old one finish.
 *
 * ADDRESSES are resolved once, in tr_upstream_new (getaddrinfo, so a name like
 * "localhost" blocks briefly); a DNS change needs a new upstream.
 */
#ifndef TR_UPSTREAM_H
#define TR_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/breaker.h"
#include "kit/buf.h"

typedef struct tr_upstream tr_upstream_t;

typedef enum tr_lb_policy { TR_LB_ROUND_ROBIN = 0, TR_LB_LEAST_REQUEST = 1 } tr_lb_policy_t;

#define TR_UPSTREAM_MAX_INSTANCES 64

typedef struct tr_upstream_config {
    const char *name;             /* metrics label and log name, e.g. "auth" (copied) */
    const char *const *instances; /* "host:port" or "[v6]:port" (copied) */
    size_t ninstances;            /* 1 .. TR_UPSTREAM_MAX_INSTANCES */
    tr_lb_policy_t lb;            /* default round robin */

    /* keep-alive pool, per worker and instance */
    size_t max_idle_per_instance;     /* idle connections kept; default 64 */
    uint64_t idle_timeout_ms;         /* idle connection closed after; default 30000 */
    size_t max_response_header_bytes; /* status line + headers; default 64 KiB */

    /* passive outlier ejection */
    unsigned outlier_consecutive_failures; /* default 5; 0 disables ejection */
    uint64_t outlier_base_ejection_ms;     /* default 30000 */
    uint64_t outlier_max_ejection_ms;      /* default 300000 */
    unsigned outlier_max_ejection_percent; /* default 50 */

    /* active health checks (run only where tr_client_run_health_checks is called) */
    const char *health_path;      /* default "/readyz" (copied); NULL disables */
    uint64_t health_interval_ms;  /* default 5000 */
    uint64_t health_timeout_ms;   /* default 1000 */
    unsigned unhealthy_threshold; /* default 2 */
    unsigned healthy_threshold;   /* default 1 */

    tr_breaker_config_t breaker; /* default 5 failures, 5000 ms cool-down */
} tr_upstream_config_t;

/* Fills cfg with the defaults above; name and instances are left NULL. */
void tr_upstream_config_defaults(tr_upstream_config_t *cfg);

/* Creates an upstream (the caller holds one reference) and registers its
 * metrics. Returns 0, -EINVAL for a missing name, no or too many instances,
 * or an instance that is not host:port with a port in 1..65535, or
 * -EHOSTUNREACH when a host does not resolve. Nothing is
 * allocated on failure. Any thread. */
int tr_upstream_new(const tr_upstream_config_t *cfg, tr_upstream_t **out);
/* Drops the creator's reference and retires the upstream (see LIFETIME). Any
 * thread. New requests to a retired upstream still work while a client holds
 * a reference, but the gateway should have stopped routing to it. */
void tr_upstream_release(tr_upstream_t *up);

const char *tr_upstream_name(const tr_upstream_t *up);
size_t tr_upstream_instance_count(const tr_upstream_t *up);
const tr_upstream_config_t *tr_upstream_config(const tr_upstream_t *up);

typedef struct tr_upstream_instance_info {
    const char *address; /* "host:port" as configured; lives as long as the upstream */
    bool healthy;        /* last active health verdict (true before the first check) */
    bool checked;        /* the checks reached a verdict (see tr_upstream_health) */
    bool ejected;        /* ejected by outlier detection at now_ms */
    unsigned ejections;  /* times ejected so far */
    uint64_t ejected_until_ms;
} tr_upstream_instance_info_t;

/* State of instance i (< tr_upstream_instance_count) at now_ms (uv_now()). */
void tr_upstream_instance_info(const tr_upstream_t *up, size_t i, uint64_t now_ms,
                               tr_upstream_instance_info_t *out);
/* The breaker state at now_ms (see tr_breaker_state). */
tr_breaker_state_t tr_upstream_breaker_state(const tr_upstream_t *up, uint64_t now_ms);
/* True when a request could be sent now: some instance is available and the
 * breaker is not OPEN. */
bool tr_upstream_available(const tr_upstream_t *up, uint64_t now_ms);

typedef enum tr_upstream_health {
    TR_UPSTREAM_UNKNOWN = 0, /* available, but no active check has reached a verdict yet */
    TR_UPSTREAM_UP = 1,      /* available, and a verdict exists (or checks are disabled) */
    TR_UPSTREAM_DOWN = 2     /* not available (tr_upstream_available is false) */
} tr_upstream_health_t;

/* The upstream's health as the gateway's /healthz reports it, at now_ms.
 * DOWN whenever no request could be sent; otherwise UNKNOWN while health
 * checks are configured and none of the instances has a verdict yet (the
 * optimistic start of INSTANCE SELECTION is not evidence), else UP. Any
 * thread. */
tr_upstream_health_t tr_upstream_health(const tr_upstream_t *up, uint64_t now_ms);

/*
 * METRICS. Counters registered with kit/metrics.h (rendered by
 * tr_metrics_render):
 *   upstream_requests_total{upstream,status}  one per finished request; status
 *       is the final HTTP status, or the client error name ("connect_failed",
 *       "timeout", "closed", "protocol", "breaker_open", "no_healthy") when
 *       none was received. Cancelled requests are not counted.
 *   upstream_connect_errors_total{upstream}   failed connects (incl. timeouts)
 *   upstream_retries_total{upstream}          retry tries started
 *   upstream_ejections_total{upstream}        outlier ejections
 *   upstream_timeouts_total{upstream}         per-try and total timeouts
 * metrics.h has no labelled gauges or custom histograms, so the per-upstream
 * state is rendered here instead; the /metrics handler appends this after
 * tr_metrics_render():
 *   upstream_breaker_state{upstream}          gauge 0 closed, 1 open, 2 half-open
 *   upstream_instance_healthy{upstream,instance}  gauge 1/0 (active checks)
 *   upstream_instance_ejected{upstream,instance}  gauge 1/0
 *   upstream_request_duration_seconds{upstream}   histogram, start of the
 *       request to its end (response complete or error), retries included
 */
/* Appends the exposition text for every live (not retired) upstream at
 * now_ms. Returns 0 or TR_ETOOBIG. Any thread. */
int tr_upstream_render_metrics(tr_buf_t *out, uint64_t now_ms);

#endif

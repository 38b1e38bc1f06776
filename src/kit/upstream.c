/*
 * upstream.c - the process-wide state of an upstream (upstream.h): its
 * resolved instances, their health and outlier-ejection state, its breaker,
 * its metrics, and the instance choice of the load balancer.
 *
 * DESIGN NOTES
 *
 * 1. Everything a worker changes on the request path is an atomic written
 *    only on a change of state: a success stores 0 into an instance's failure
 *    count only when it is not 0 already, so a healthy upstream costs the
 *    workers loads, not contended stores.
 *
 * 2. Ejection is decided with a compare-and-swap on ejected_until_ms, so two
 *    workers reaching the threshold together eject once. The max-percent and
 *    "keep one available" checks read the other instances without a lock;
 *    racing ejections of different instances could in theory both pass the
 *    check, which at worst ejects one instance more than the percentage for
 *    one ejection period. Never the last available one in practice: the
 *    check runs just before the CAS, and with one failing instance among
 *    several, the others are not reaching their thresholds at the same time.
 *
 * 3. Live upstreams are kept on a list under a mutex only for
 *    tr_upstream_render_metrics (a /metrics scrape), never on a request path.
 */
#include "kit/upstream.h"
#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/metrics.h"
#include "kit/upstream_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same buckets as http_request_duration_seconds (metrics.c). */
static const double duration_bounds[] = {.0005, .001, .0025, .005, .01, .025, .05,
                                         .1,    .25,  .5,    1,    2.5, 5,    10};
static const char *const duration_le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                          "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                          "1",      "2.5",   "5",      "10",    "+Inf"};
#define DURATION_SLOTS (sizeof duration_le / sizeof duration_le[0])

typedef struct instance {
    char *address;   /* as configured */
    char *host_line; /* "Host: <address>\r\n" */
    size_t host_line_len;
    struct sockaddr_storage addr;
    _Atomic bool healthy;
    _Atomic unsigned failures; /* consecutive, for ejection */
    _Atomic uint64_t ejected_until_ms;
    _Atomic unsigned multiplier; /* of the last ejection */
    _Atomic unsigned ejections;
    /* Health-check streaks; only the checking loop writes them. */
    _Atomic unsigned health_ok, health_fail;
    _Atomic bool checked; /* a verdict was reached (upstream.h) */
} instance_t;

struct tr_upstream {
    tr_upstream_config_t cfg; /* name and health_path point to our copies */
    char *name;
    char *health_path;
    tr_breaker_t breaker;
    _Atomic int refs;
    _Atomic bool retired;
    _Atomic uint64_t duration[DURATION_SLOTS + 1]; /* bucket counts, then sum in ns */
    struct tr_upstream *next;                      /* registry, under registry_lock */
    size_t n;
    instance_t inst[];
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tr_upstream_t *registry;

static tr_counter_t *m_requests, *m_connect_errors, *m_retries, *m_ejections, *m_timeouts;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_register(void)
{
    m_requests = tr_counter_register(
        "upstream_requests_total", "Requests sent to upstreams by final status", "upstream,status");
    m_connect_errors = tr_counter_register("upstream_connect_errors_total",
                                           "Failed connects to upstream instances", "upstream");
    m_retries = tr_counter_register("upstream_retries_total", "Retry tries started", "upstream");
    m_ejections = tr_counter_register(
        "upstream_ejections_total", "Upstream instances ejected by outlier detection", "upstream");
    m_timeouts = tr_counter_register(
        "upstream_timeouts_total",
        "Upstream requests that ran out of time before the response head", "upstream");
}

void tr_upstream_config_defaults(tr_upstream_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->lb = TR_LB_ROUND_ROBIN;
    cfg->max_idle_per_instance = 64;
    cfg->idle_timeout_ms = 30000;
    cfg->max_response_header_bytes = 64 * 1024;
    cfg->outlier_consecutive_failures = 5;
    cfg->outlier_base_ejection_ms = 30000;
    cfg->outlier_max_ejection_ms = 300000;
    cfg->outlier_max_ejection_percent = 50;
    cfg->health_path = "/readyz";
    cfg->health_interval_ms = 5000;
    cfg->health_timeout_ms = 1000;
    cfg->unhealthy_threshold = 2;
    cfg->healthy_threshold = 1;
    cfg->breaker.failure_threshold = TR_BREAKER_DEFAULT_THRESHOLD;
    cfg->breaker.cooldown_ms = TR_BREAKER_DEFAULT_COOLDOWN_MS;
}

/* Splits "host:port" or "[v6]:port" and resolves it, preferring IPv4: kit
 * servers listen on 127.0.0.1 by default while "localhost" often resolves to
 * ::1 first. */
static int resolve(const char *address, struct sockaddr_storage *out)
{
    char host[256];
    const char *port;
    size_t host_len;
    if (address[0] == '[') {
        const char *end = strchr(address, ']');
        if (!end || end[1] != ':') return -EINVAL;
        host_len = (size_t)(end - address - 1);
        port = end + 2;
        address++;
    } else {
        const char *colon = strrchr(address, ':');
        if (!colon) return -EINVAL;
        host_len = (size_t)(colon - address);
        port = colon + 1;
    }
    if (host_len == 0 || host_len >= sizeof host) return -EINVAL;
    memcpy(host, address, host_len);
    host[host_len] = '\0';
    char *end;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 1 || p > 65535) return -EINVAL;

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res) return -EHOSTUNREACH;
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    memset(out, 0, sizeof *out);
    memcpy(out, pick->ai_addr, pick->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void upstream_free(tr_upstream_t *up)
{
    for (size_t i = 0; i < up->n; i++) {
        free(up->inst[i].address);
        free(up->inst[i].host_line);
    }
    free(up->name);
    free(up->health_path);
    free(up);
}

int tr_upstream_new(const tr_upstream_config_t *cfg, tr_upstream_t **out)
{
    int rc = 0;
    tr_upstream_t *up = NULL;
    if (!cfg->name || !cfg->name[0] || !cfg->instances || cfg->ninstances == 0 ||
        cfg->ninstances > TR_UPSTREAM_MAX_INSTANCES)
        return -EINVAL;
    pthread_once(&metrics_once, metrics_register);

    up = tr_xcalloc(1, sizeof *up + cfg->ninstances * sizeof(instance_t));
    up->cfg = *cfg;
    up->name = tr_xstrdup(cfg->name);
    up->health_path = tr_xstrdup(cfg->health_path);
    up->cfg.name = up->name;
    up->cfg.health_path = up->health_path;
    up->cfg.instances = NULL; /* the caller's array is not kept */
    if (up->cfg.max_response_header_bytes == 0) up->cfg.max_response_header_bytes = 64 * 1024;
    up->n = cfg->ninstances;
    tr_breaker_init(&up->breaker, &cfg->breaker);
    atomic_init(&up->refs, 1);
    for (size_t i = 0; i < up->n; i++) {
        instance_t *in = &up->inst[i];
        const char *a = cfg->instances[i];
        if (!a) {
            rc = -EINVAL;
            goto out;
        }
        if ((rc = resolve(a, &in->addr)) != 0) goto out;
        in->address = tr_xstrdup(a);
        in->host_line = tr_xasprintf("Host: %s\r\n", a);
        in->host_line_len = strlen(in->host_line);
        atomic_init(&in->healthy, true);
    }
    pthread_mutex_lock(&registry_lock);
    up->next = registry;
    registry = up;
    pthread_mutex_unlock(&registry_lock);
    *out = up;
out:
    if (rc != 0) upstream_free(up);
    return rc;
}

void tr__upstream_ref(tr_upstream_t *up)
{
    atomic_fetch_add_explicit(&up->refs, 1, memory_order_relaxed);
}

void tr__upstream_unref(tr_upstream_t *up)
{
    if (atomic_fetch_sub_explicit(&up->refs, 1, memory_order_acq_rel) == 1) upstream_free(up);
}

void tr_upstream_release(tr_upstream_t *up)
{
    if (!up) return;
    pthread_mutex_lock(&registry_lock);
    for (tr_upstream_t **p = &registry; *p; p = &(*p)->next)
        if (*p == up) {
            *p = up->next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    atomic_store_explicit(&up->retired, true, memory_order_release);
    tr__upstream_unref(up);
}

bool tr__upstream_retired(const tr_upstream_t *up)
{
    return atomic_load_explicit(&up->retired, memory_order_acquire);
}

const char *tr_upstream_name(const tr_upstream_t *up)
{
    return up->name;
}

size_t tr_upstream_instance_count(const tr_upstream_t *up)
{
    return up->n;
}

const tr_upstream_config_t *tr_upstream_config(const tr_upstream_t *up)
{
    return &up->cfg;
}

const struct sockaddr *tr__upstream_addr(const tr_upstream_t *up, size_t i)
{
    return (const struct sockaddr *)&up->inst[i].addr;
}

const char *tr__upstream_address(const tr_upstream_t *up, size_t i)
{
    return up->inst[i].address;
}

const char *tr__upstream_host_line(const tr_upstream_t *up, size_t i, size_t *len)
{
    *len = up->inst[i].host_line_len;
    return up->inst[i].host_line;
}

tr_breaker_t *tr__upstream_breaker(tr_upstream_t *up)
{
    return &up->breaker;
}

static bool is_ejected(const instance_t *in, uint64_t now_ms)
{
    return atomic_load_explicit(&in->ejected_until_ms, memory_order_relaxed) > now_ms;
}

static bool is_available(const instance_t *in, uint64_t now_ms)
{
    return atomic_load_explicit(&in->healthy, memory_order_relaxed) && !is_ejected(in, now_ms);
}

int tr__upstream_pick(tr_upstream_t *up, uint64_t now_ms, size_t *cursor,
                      const uint32_t *outstanding, size_t *out)
{
    size_t n = up->n;
    size_t start = (*cursor)++ % n;
    if (n == 1) {
        if (!is_available(&up->inst[0], now_ms)) return -ENOENT;
        *out = 0;
        return 0;
    }
    size_t best = n;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (!is_available(&up->inst[i], now_ms)) continue;
        if (up->cfg.lb == TR_LB_ROUND_ROBIN) {
            best = i;
            break;
        }
        if (best == n || outstanding[i] < outstanding[best]) best = i;
    }
    if (best == n) return -ENOENT;
    *out = best;
    return 0;
}

/* Whether ejecting instance `which` keeps within the limits (note 2). */
static bool may_eject(const tr_upstream_t *up, size_t which, uint64_t now_ms)
{
    size_t ejected = 0, available_others = 0;
    for (size_t i = 0; i < up->n; i++) {
        if (is_ejected(&up->inst[i], now_ms))
            ejected++;
        else if (i != which && is_available(&up->inst[i], now_ms))
            available_others++;
    }
    size_t max_ejected = up->n * up->cfg.outlier_max_ejection_percent / 100;
    return available_others > 0 && ejected + 1 <= max_ejected;
}

void tr__upstream_record(tr_upstream_t *up, size_t i, bool failure, uint64_t now_ms)
{
    instance_t *in = &up->inst[i];
    if (!failure) {
        if (atomic_load_explicit(&in->failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&in->failures, 0, memory_order_relaxed);
        return;
    }
    unsigned threshold = up->cfg.outlier_consecutive_failures;
    if (threshold == 0) return;
    uint64_t until = atomic_load_explicit(&in->ejected_until_ms, memory_order_relaxed);
    if (until > now_ms) return; /* late failures of tries started before the ejection */
    unsigned n = atomic_fetch_add_explicit(&in->failures, 1, memory_order_relaxed) + 1;
    if (n < threshold || !may_eject(up, i, now_ms)) return;

    /* The multiplier decays by one per base period served since the last
     * ejection ended. */
    uint64_t base = up->cfg.outlier_base_ejection_ms ? up->cfg.outlier_base_ejection_ms : 1;
    unsigned mult = atomic_load_explicit(&in->multiplier, memory_order_relaxed);
    if (until != 0 && mult > 0) {
        uint64_t decay = (now_ms - until) / base;
        mult = decay >= mult ? 0 : mult - (unsigned)decay;
    }
    mult++;
    uint64_t duration = base * mult;
    if (up->cfg.outlier_max_ejection_ms && duration > up->cfg.outlier_max_ejection_ms)
        duration = up->cfg.outlier_max_ejection_ms;
    if (!atomic_compare_exchange_strong_explicit(&in->ejected_until_ms, &until, now_ms + duration,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return; /* another worker ejected it just now */
    atomic_store_explicit(&in->multiplier, mult, memory_order_relaxed);
    atomic_store_explicit(&in->failures, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&in->ejections, 1, memory_order_relaxed);
    const char *labels[] = {up->name};
    tr_counter_inc(m_ejections, labels);
    tr_log_fields(TR_LOG_WARN, "upstream instance ejected",
                  (tr_log_field_t[]){TR_LOG_STR("upstream", up->name),
                                     TR_LOG_STR("instance", in->address), TR_LOG_INT("failures", n),
                                     TR_LOG_INT("ejection_ms", duration)},
                  4);
}

void tr__upstream_health_report(tr_upstream_t *up, size_t i, bool ok)
{
    instance_t *in = &up->inst[i];
    bool healthy = atomic_load_explicit(&in->healthy, memory_order_relaxed);
    if (ok) {
        atomic_store_explicit(&in->health_fail, 0, memory_order_relaxed);
        unsigned streak = atomic_fetch_add_explicit(&in->health_ok, 1, memory_order_relaxed) + 1;
        if (streak >= up->cfg.healthy_threshold)
            atomic_store_explicit(&in->checked, true, memory_order_relaxed);
        if (!healthy && streak >= up->cfg.healthy_threshold) {
            atomic_store_explicit(&in->healthy, true, memory_order_relaxed);
            healthy = true;
            tr_log_fields(TR_LOG_INFO, "upstream instance healthy",
                          (tr_log_field_t[]){TR_LOG_STR("upstream", up->name),
                                             TR_LOG_STR("instance", in->address)},
                          2);
        }
        /* The instance serves its readiness endpoint: stop failing requests
         * fast for the rest of the cool-down (upstream.h). */
        if (healthy && tr_breaker_close(&up->breaker))
            tr_log_fields(TR_LOG_INFO, "upstream breaker closed by a passing health check",
                          (tr_log_field_t[]){TR_LOG_STR("upstream", up->name),
                                             TR_LOG_STR("instance", in->address)},
                          2);
    } else {
        atomic_store_explicit(&in->health_ok, 0, memory_order_relaxed);
        unsigned streak = atomic_fetch_add_explicit(&in->health_fail, 1, memory_order_relaxed) + 1;
        if (streak >= up->cfg.unhealthy_threshold)
            atomic_store_explicit(&in->checked, true, memory_order_relaxed);
        if (healthy && streak >= up->cfg.unhealthy_threshold) {
            atomic_store_explicit(&in->healthy, false, memory_order_relaxed);
            tr_log_fields(TR_LOG_WARN, "upstream instance unhealthy",
                          (tr_log_field_t[]){TR_LOG_STR("upstream", up->name),
                                             TR_LOG_STR("instance", in->address)},
                          2);
        }
    }
}

void tr_upstream_instance_info(const tr_upstream_t *up, size_t i, uint64_t now_ms,
                               tr_upstream_instance_info_t *out)
{
    const instance_t *in = &up->inst[i];
    out->address = in->address;
    out->healthy = atomic_load_explicit(&in->healthy, memory_order_relaxed);
    out->checked = atomic_load_explicit(&in->checked, memory_order_relaxed);
    out->ejected_until_ms = atomic_load_explicit(&in->ejected_until_ms, memory_order_relaxed);
    out->ejected = out->ejected_until_ms > now_ms;
    out->ejections = atomic_load_explicit(&in->ejections, memory_order_relaxed);
}

tr_breaker_state_t tr_upstream_breaker_state(const tr_upstream_t *up, uint64_t now_ms)
{
    return tr_breaker_state(&up->breaker, now_ms);
}

bool tr_upstream_available(const tr_upstream_t *up, uint64_t now_ms)
{
    if (tr_breaker_state(&up->breaker, now_ms) == TR_BREAKER_OPEN) return false;
    for (size_t i = 0; i < up->n; i++)
        if (is_available(&up->inst[i], now_ms)) return true;
    return false;
}

tr_upstream_health_t tr_upstream_health(const tr_upstream_t *up, uint64_t now_ms)
{
    if (!tr_upstream_available(up, now_ms)) return TR_UPSTREAM_DOWN;
    bool checks = up->cfg.health_path && up->cfg.health_path[0] && up->cfg.health_interval_ms;
    if (!checks) return TR_UPSTREAM_UP;
    for (size_t i = 0; i < up->n; i++)
        if (atomic_load_explicit(&up->inst[i].checked, memory_order_relaxed)) return TR_UPSTREAM_UP;
    return TR_UPSTREAM_UNKNOWN;
}

/* ---- metrics ------------------------------------------------------------ */

/* "100".."599" without a snprintf per request. */
static const char *status_label(int status, char buf[4])
{
    if (status < 100 || status > 599) return "other";
    buf[0] = (char)('0' + status / 100);
    buf[1] = (char)('0' + status / 10 % 10);
    buf[2] = (char)('0' + status % 10);
    buf[3] = '\0';
    return buf;
}

void tr__upstream_observe(tr_upstream_t *up, int status, const char *error_name, double seconds)
{
    char buf[4];
    const char *labels[] = {up->name, status ? status_label(status, buf) : error_name};
    tr_counter_inc(m_requests, labels);
    if (!(seconds >= 0)) seconds = 0;
    if (seconds > 1e6) seconds = 1e6;
    size_t slot = 0;
    while (slot < DURATION_SLOTS - 1 && seconds > duration_bounds[slot])
        slot++;
    atomic_fetch_add_explicit(&up->duration[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&up->duration[DURATION_SLOTS], (uint64_t)(seconds * 1e9 + 0.5),
                              memory_order_relaxed);
}

void tr__upstream_count_connect_error(tr_upstream_t *up)
{
    const char *labels[] = {up->name};
    tr_counter_inc(m_connect_errors, labels);
}

void tr__upstream_count_retry(tr_upstream_t *up)
{
    const char *labels[] = {up->name};
    tr_counter_inc(m_retries, labels);
}

void tr__upstream_count_timeout(tr_upstream_t *up)
{
    const char *labels[] = {up->name};
    tr_counter_inc(m_timeouts, labels);
}

/* A label value with \, " and newline escaped as the text format asks. */
static int append_label(tr_buf_t *out, const char *value)
{
    int rc = 0;
    for (const char *p = value; *p && rc == 0; p++) {
        if (*p == '\\')
            rc = tr_buf_append(out, "\\\\", 2);
        else if (*p == '"')
            rc = tr_buf_append(out, "\\\"", 2);
        else if (*p == '\n')
            rc = tr_buf_append(out, "\\n", 2);
        else
            rc = tr_buf_append(out, p, 1);
    }
    return rc;
}

static int render_instance_gauge(tr_buf_t *out, const char *name, const char *help, bool ejected,
                                 uint64_t now_ms)
{
    int rc = tr_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (tr_upstream_t *up = registry; up && rc == 0; up = up->next)
        for (size_t i = 0; i < up->n && rc == 0; i++) {
            tr_upstream_instance_info_t info;
            tr_upstream_instance_info(up, i, now_ms, &info);
            int v = ejected ? info.ejected : info.healthy;
            if ((rc = tr_buf_printf(out, "%s{upstream=\"", name)) != 0) break;
            if ((rc = append_label(out, up->name)) != 0) break;
            if ((rc = tr_buf_append_str(out, "\",instance=\"")) != 0) break;
            if ((rc = append_label(out, info.address)) != 0) break;
            rc = tr_buf_printf(out, "\"} %d\n", v);
        }
    return rc;
}

int tr_upstream_render_metrics(tr_buf_t *out, uint64_t now_ms)
{
    int rc = 0;
    pthread_mutex_lock(&registry_lock);
    if (!registry) goto out;

    rc = tr_buf_append_str(out, "# HELP upstream_breaker_state Circuit breaker state (0 closed, "
                                "1 open, 2 half-open)\n# TYPE upstream_breaker_state gauge\n");
    for (tr_upstream_t *up = registry; up && rc == 0; up = up->next) {
        if ((rc = tr_buf_append_str(out, "upstream_breaker_state{upstream=\"")) != 0) break;
        if ((rc = append_label(out, up->name)) != 0) break;
        rc = tr_buf_printf(out, "\"} %d\n", (int)tr_breaker_state(&up->breaker, now_ms));
    }
    if (rc == 0)
        rc = render_instance_gauge(out, "upstream_instance_healthy",
                                   "Upstream instance passes active health checks", false, now_ms);
    if (rc == 0)
        rc = render_instance_gauge(out, "upstream_instance_ejected",
                                   "Upstream instance ejected by outlier detection", true, now_ms);
    if (rc == 0)
        rc = tr_buf_append_str(out, "# HELP upstream_request_duration_seconds Upstream request "
                                    "duration, retries included\n# TYPE "
                                    "upstream_request_duration_seconds histogram\n");
    for (tr_upstream_t *up = registry; up && rc == 0; up = up->next) {
        uint64_t counts[DURATION_SLOTS], total = 0;
        for (size_t s = 0; s < DURATION_SLOTS; s++)
            counts[s] = atomic_load_explicit(&up->duration[s], memory_order_relaxed);
        uint64_t sum_ns = atomic_load_explicit(&up->duration[DURATION_SLOTS], memory_order_relaxed);
        for (size_t s = 0; s < DURATION_SLOTS && rc == 0; s++) {
            total += counts[s];
            if ((rc = tr_buf_append_str(
                     out, "upstream_request_duration_seconds_bucket{upstream=\"")) != 0)
                break;
            if ((rc = append_label(out, up->name)) != 0) break;
            rc = tr_buf_printf(out, "\",le=\"%s\"} %llu\n", duration_le[s],
                               (unsigned long long)total);
        }
        if (rc == 0)
            rc = tr_buf_append_str(out, "upstream_request_duration_seconds_sum{upstream=\"");
        if (rc == 0) rc = append_label(out, up->name);
        if (rc == 0) rc = tr_buf_printf(out, "\"} %.9f\n", (double)sum_ns / 1e9);
        if (rc == 0)
            rc = tr_buf_append_str(out, "upstream_request_duration_seconds_count{upstream=\"");
        if (rc == 0) rc = append_label(out, up->name);
        if (rc == 0) rc = tr_buf_printf(out, "\"} %llu\n", (unsigned long long)total);
    }
out:
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

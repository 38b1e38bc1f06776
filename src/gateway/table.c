/*
 * table.c - live route tables and how workers move from one to the next.
 *
 * A parsed table (routes.c) becomes live once its upstreams exist and its
 * rate-limit policies are set. Live tables are immutable and refcounted;
 * the state holds one reference to the current table, and each worker one
 * reference per hold (gateway_internal.h). SIGHUP builds a new live table
 * on the main thread, publishes it under the state's mutex with a new
 * generation, and wakes every worker (uv_async_t).
 *
 * THE HOT PATH takes no lock and no atomic read-modify-write: a request
 * reads the generation with one relaxed load and, while it is the worker's,
 * counts itself in the worker's hold with a plain increment. Only when the
 * generation moved does the worker take the mutex to pick up the new table.
 * An old hold lives on, no longer current, until its last request ends; then
 * its reference to the old table is dropped, and the last reference frees
 * the table and drops its upstream objects.
 *
 * UPSTREAM OBJECTS are shared between tables by definition: a new table
 * reuses the object of an old one when name, instances and every setting
 * are equal (the fingerprint), so a reload that does not touch an upstream
 * keeps its connections, breaker and health state. An object no table uses
 * any more is retired (tr_upstream_release): requests already sent to it
 * finish, the clients then drop their pools for it.
 */
#include "gateway/state.h"
#include "gateway/table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/log.h"

/* ---- interned strings ----------------------------------------------------- */

static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static char **interned;
static size_t ninterned;

/* Grows only with distinct route and upstream names, which reloads bring
 * in small numbers; a bound keeps a reload loop from growing it forever. */
#define MAX_INTERNED 65536

const char *gw_intern(const char *s)
{
    const char *found = NULL;
    pthread_mutex_lock(&intern_lock);
    for (size_t i = 0; i < ninterned && !found; i++)
        if (strcmp(interned[i], s) == 0) found = interned[i];
    if (!found && ninterned < MAX_INTERNED) {
        interned = tr_xrealloc(interned, (ninterned + 1) * sizeof(char *));
        interned[ninterned] = tr_xstrdup(s);
        found = interned[ninterned++];
    }
    pthread_mutex_unlock(&intern_lock);
    return found ? found : "other";
}

/* ---- upstream objects ----------------------------------------------------- */

static char *fingerprint(const gw_upstream_spec_t *u)
{
    const tr_upstream_config_t *c = &u->config;
    tr_buf_t b;
    tr_buf_init(&b, 0);
    tr_buf_printf(&b, "%s|%d|%zu|%llu|%zu|%u|%llu|%llu|%u|%s|%llu|%llu|%u|%u|%u|%llu|%d|%llu",
                  u->name, (int)c->lb, c->max_idle_per_instance,
                  (unsigned long long)c->idle_timeout_ms, c->max_response_header_bytes,
                  c->outlier_consecutive_failures, (unsigned long long)c->outlier_base_ejection_ms,
                  (unsigned long long)c->outlier_max_ejection_ms, c->outlier_max_ejection_percent,
                  c->health_path ? c->health_path : "-", (unsigned long long)c->health_interval_ms,
                  (unsigned long long)c->health_timeout_ms, c->unhealthy_threshold,
                  c->healthy_threshold, c->breaker.failure_threshold,
                  (unsigned long long)c->breaker.cooldown_ms, (int)u->required,
                  (unsigned long long)u->connect_timeout_ms);
    for (size_t i = 0; i < u->ninstances; i++)
        tr_buf_printf(&b, "|%s", u->instances[i]);
    return tr_buf_detach(&b, NULL);
}

static void upstream_ref_drop(gw_upstream_ref_t *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    tr_upstream_release(r->up);
    free(r->fingerprint);
    free(r);
}

/* ---- live tables ---------------------------------------------------------- */

static void live_free(gw_live_t *l)
{
    if (!l) return;
    for (size_t i = 0; l->ups && i < l->table->nupstreams; i++)
        if (l->ups[i]) upstream_ref_drop(l->ups[i]);
    free(l->ups);
    free(l->policies);
    free(l->route_names);
    gw_table_free(l->table);
    free(l);
}

void gw_live_unref(gw_live_t *l)
{
    if (l && atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) live_free(l);
}

int gw_live_build(gw_state_t *st, gw_table_t *table, const gw_live_t *previous, gw_live_t **out,
                  char *err, size_t errlen)
{
    gw_live_t *l = tr_xcalloc(1, sizeof(*l));
    int rc = 0;
    l->table = table;
    l->ups = tr_xcalloc(table->nupstreams ? table->nupstreams : 1, sizeof(*l->ups));
    l->policies = tr_xcalloc(table->nlimits ? table->nlimits : 1, sizeof(*l->policies));
    l->route_names = tr_xcalloc(table->nroutes ? table->nroutes : 1, sizeof(*l->route_names));
    l->auth = gw_table_upstream_index(table, "auth");
    atomic_init(&l->refs, 1);
    *out = NULL;

    for (size_t i = 0; i < table->nupstreams; i++) {
        const gw_upstream_spec_t *spec = &table->upstreams[i];
        char *fp = fingerprint(spec);
        for (size_t k = 0; previous && k < previous->table->nupstreams; k++) {
            gw_upstream_ref_t *old = previous->ups[k];
            if (strcmp(old->fingerprint, fp) == 0) {
                atomic_fetch_add_explicit(&old->refs, 1, memory_order_relaxed);
                l->ups[i] = old;
                break;
            }
        }
        if (l->ups[i]) {
            free(fp);
            continue;
        }
        gw_upstream_ref_t *r = tr_xcalloc(1, sizeof(*r));
        r->name = gw_intern(spec->name);
        r->fingerprint = fp;
        r->required = spec->required;
        r->connect_timeout_ms = spec->connect_timeout_ms;
        atomic_init(&r->refs, 1);
        if ((rc = tr_upstream_new(&spec->config, &r->up)) != 0) {
            snprintf(err, errlen, "%s: upstream %s: %s", table->source, spec->name,
                     rc == -EHOSTUNREACH ? "a host does not resolve" : "invalid definition");
            free(r->fingerprint);
            free(r);
            goto out;
        }
        l->ups[i] = r;
    }
    for (size_t i = 0; i < table->nlimits; i++) {
        const gw_limit_spec_t *ls = &table->limits[i];
        tr_ratelimit_policy_config_t pc = {ls->name, ls->rate, ls->burst, ls->key};
        if ((rc = tr_ratelimit_policy_set(st->rl, &pc, &l->policies[i])) != 0) {
            snprintf(err, errlen, "%s: rate limit %s: %s", table->source, ls->name,
                     rc == -ENOSPC ? "too many policies in this process" : "invalid policy");
            goto out;
        }
    }
    for (size_t i = 0; i < table->nroutes; i++)
        l->route_names[i] = gw_intern(table->routes[i].name);
out:
    if (rc != 0) {
        live_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* ---- publication and holds ------------------------------------------------ */

void gw_publish(gw_state_t *st, gw_live_t *live)
{
    pthread_mutex_lock(&st->lock);
    gw_live_t *old = st->current;
    live->generation = atomic_load_explicit(&st->generation, memory_order_relaxed) + 1;
    st->current = live;
    atomic_store_explicit(&st->generation, live->generation, memory_order_release);
    for (size_t i = 0; i < st->nworkers; i++)
        if (st->workers[i]) uv_async_send(st->workers[i]->wake);
    pthread_mutex_unlock(&st->lock);
    gw_live_unref(old);
}

gw_live_t *gw_live_current(gw_state_t *st)
{
    pthread_mutex_lock(&st->lock);
    gw_live_t *l = st->current;
    if (l) atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&st->lock);
    return l;
}

static void hold_drop(gw_hold_t *h)
{
    gw_live_unref(h->live);
    free(h);
}

void gw_hold_release(gw_worker_t *gw, gw_hold_t *h)
{
    (void)gw;
    if (--h->refs == 0 && !h->current) hold_drop(h);
}

/* Worker 0 runs the active health checks of every upstream of the tables
 * it uses (the client ignores upstreams it already checks). */
static void start_health_checks(gw_worker_t *gw, const gw_live_t *l)
{
    if (gw->w->index != 0) return;
    for (size_t i = 0; i < l->table->nupstreams; i++) {
        if (!l->table->upstreams[i].config.health_path) continue;
        int rc = tr_client_run_health_checks(gw->client, l->ups[i]->up);
        if (rc != 0 && rc != -EALREADY)
            tr_log_warn("health checks for %s not started (%d)", l->ups[i]->name, rc);
    }
}

gw_hold_t *gw_hold_current(gw_worker_t *gw)
{
    gw_state_t *st = gw->st;
    if (atomic_load_explicit(&st->generation, memory_order_acquire) == gw->generation)
        return gw->hold;
    pthread_mutex_lock(&st->lock);
    gw_live_t *live = st->current;
    atomic_fetch_add_explicit(&live->refs, 1, memory_order_relaxed);
    gw->generation = live->generation;
    pthread_mutex_unlock(&st->lock);

    gw_hold_t *h = tr_xcalloc(1, sizeof(*h));
    h->live = live;
    h->current = true;
    gw_hold_t *old = gw->hold;
    gw->hold = h;
    if (old) {
        old->current = false;
        if (old->refs == 0) hold_drop(old);
    }
    start_health_checks(gw, live);
    return h;
}

static void on_wake(uv_async_t *a)
{
    gw_hold_current(a->data);
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

int gw_table_worker_open(gw_worker_t *gw)
{
    gw_state_t *st = gw->st;
    uv_async_t *wake = tr_xcalloc(1, sizeof(*wake));
    int rc = uv_async_init(gw->w->loop, wake, on_wake);
    if (rc != 0) {
        free(wake);
        return rc;
    }
    wake->data = gw;
    /* The wake-up handle must not keep the loop alive at shutdown. */
    uv_unref((uv_handle_t *)wake);
    gw->wake = wake;
    pthread_mutex_lock(&st->lock);
    st->workers[gw->w->index] = gw;
    pthread_mutex_unlock(&st->lock);
    gw_hold_current(gw);
    return 0;
}

void gw_table_worker_close(gw_worker_t *gw)
{
    gw_state_t *st = gw->st;
    pthread_mutex_lock(&st->lock);
    if (st->workers[gw->w->index] == gw) st->workers[gw->w->index] = NULL;
    pthread_mutex_unlock(&st->lock);
    if (gw->wake) uv_close((uv_handle_t *)gw->wake, free_handle);
    gw->wake = NULL;
    /* Requests still holding the current table were freed by the server
     * before this hook (server.h, SHUTDOWN): nothing else counts on it. */
    if (gw->hold) {
        gw->hold->current = false;
        if (gw->hold->refs == 0) hold_drop(gw->hold);
        gw->hold = NULL;
    }
}

/*
 * table.h - the live route tables (table.c): the upstream objects and
 * rate-limit policies behind a parsed table, their reference counts, and
 * the swap on SIGHUP across worker threads (a worker's hold).
 */
#ifndef TR_GATEWAY_TABLE_H
#define TR_GATEWAY_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/routes.h"
#include "kit/ratelimit.h"
#include "kit/upstream.h"

typedef struct gw_state gw_state_t;
typedef struct gw_worker gw_worker_t;

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

#endif

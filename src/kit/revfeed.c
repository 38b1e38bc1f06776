/*
 * revfeed.c - the revocation feed: how a service learns, within a second,
 * that a session was revoked, without asking auth per request and without
 * costing anything while nothing happens.
 *
 * LONG POLL. Worker 0 asks auth
 *     GET /internal/revocations?since=S&known=K&wait=W
 * (services/auth/auth_edge.c). Auth answers at once when it holds more than
 * K revocations at or after S, else holds the request until one comes or W
 * ms pass, and answers the revocations at or after S either way. So an idle
 * platform costs one request per service every WAIT_MS, and a revocation
 * reaches every service within auth's re-check interval plus a round trip.
 *
 * WINDOWS. Auth stamps revoked_at inside the revoking transaction, so on a
 * networked database a revocation may commit a moment after one stamped
 * later. The next S is therefore auth's clock minus OVERLAP_MS, and K the
 * number of entries of the last answer in [S, now): everything at or after
 * S that this feed has already seen. Entries seen twice merge. The first
 * request asks for the last INITIAL_WINDOW_MS (auth clamps that to its
 * access-token lifetime) with W = 0, so it answers at once.
 *
 * OUTAGES. A failed request is retried after RETRY_MIN_MS, doubling up to
 * RETRY_MAX_MS -- never through a circuit breaker -- so after auth restarts
 * the feed is back within half a second of auth listening. The set keeps
 * its entries meanwhile. One warning per outage, one line when restored.
 */
#include "kit/revfeed.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/ids.h"
#include "kit/log.h"
#include "kit/metrics.h"

#define WAIT_MS           25000
#define OVERLAP_MS        2000
#define SKEW_MS           60000
#define INITIAL_WINDOW_MS (15 * 60 * 1000)
#define REBUILD_EVERY_MS  10000
#define RETRY_MIN_MS      50
#define RETRY_MAX_MS      500
/* Under `trellis up` auth may start after this service: failures this
 * early are expected and not worth a warning. */
#define STARTUP_GRACE_MS 5000

struct tr__revfeed {
    const tr__auth_link_t *link;
    uv_loop_t *loop;
    tr_revocations_t *set;
    void (*loaded)(void *arg);
    void *arg;
    uv_timer_t timer; /* retry after a failure */
    tr__auth_call_t *call;
    int64_t since; /* next ?since=, auth's clock; -1 before the first answer */
    int64_t known; /* next ?known= */
    bool first;    /* no answer applied yet */
    bool up;       /* the last request succeeded */
    bool warned;   /* the current outage was logged */
    uint64_t retry_ms;
    uint64_t started_ms;
    int64_t last_rebuild; /* local ms */
    bool stopping;
    tr_gauge_t *feed_up;
    tr_gauge_t *revoked;
    tr_counter_t *errors;
};

static void request(tr__revfeed_t *f);

/* Applies one answer. Returns 0 or -EPROTO for a malformed one. */
static int apply(tr__revfeed_t *f, json_t *doc)
{
    json_t *list = json_object_get(doc, "revocations");
    json_t *now = json_object_get(doc, "now"), *ttl = json_object_get(doc, "access_ttl_s");
    json_t *since = json_object_get(doc, "since");
    if (!json_is_integer(now) || !json_is_integer(ttl) || !json_is_integer(since) ||
        !json_is_array(list))
        return -EPROTO;
    int64_t auth_now = json_integer_value(now), local_now = tr_now_ms();
    /* Expiry in this host's clock: auth's revoked_at, moved by the offset
     * between the two clocks as seen in this answer. */
    int64_t offset = local_now - auth_now;
    int64_t keep_ms = json_integer_value(ttl) * 1000 + SKEW_MS;
    size_t n = json_array_size(list);
    uint8_t(*ids)[16] = tr_xcalloc(n ? n : 1, 16);
    int64_t *exp = tr_xcalloc(n ? n : 1, sizeof(int64_t));
    int64_t *at = tr_xcalloc(n ? n : 1, sizeof(int64_t));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        json_t *revoked_at = json_object_get(e, "revoked_at");
        const char *sid = json_string_value(json_object_get(e, "session_id"));
        if (!json_is_integer(revoked_at) || tr_uuid_parse(sid, ids[k]) != 0) continue;
        at[k] = json_integer_value(revoked_at);
        exp[k] = at[k] + keep_ms + offset;
        k++;
    }
    bool rebuild = local_now - f->last_rebuild >= REBUILD_EVERY_MS;
    if (k > 0 || rebuild || f->first) {
        tr_revocations_merge(f->set, (const uint8_t(*)[16])ids, exp, k, local_now);
        f->last_rebuild = local_now;
        tr_gauge_set(f->revoked, (int64_t)tr_revocations_count(f->set));
    }
    /* A full page ("more"): continue from its last entry at once. */
    int64_t next =
        json_is_true(json_object_get(doc, "more")) && k > 0 ? at[k - 1] : auth_now - OVERLAP_MS;
    if (next < json_integer_value(since)) next = json_integer_value(since);
    f->known = 0;
    for (size_t i = 0; i < k; i++)
        if (at[i] >= next) f->known++;
    f->since = next;
    free(ids);
    free(exp);
    free(at);
    return 0;
}

static void set_up(tr__revfeed_t *f, bool up, const char *error)
{
    if (!up) tr_counter_inc(f->errors, NULL);
    tr_gauge_set(f->feed_up, up ? 1 : 0);
    f->up = up;
    if (up) {
        if (f->warned) tr_log_info("revocation feed restored");
        f->warned = false;
        return;
    }
    if (f->warned || uv_now(f->loop) - f->started_ms < STARTUP_GRACE_MS) return;
    f->warned = true;
    json_t *fields = json_object();
    json_object_set_new(fields, "error", json_string(error));
    tr_log_json(TR_LOG_WARN, "revocation feed unavailable", fields);
}

static void on_retry(uv_timer_t *t)
{
    request(t->data);
}

static void retry_later(tr__revfeed_t *f)
{
    if (f->stopping) return;
    uv_timer_start(&f->timer, on_retry, f->retry_ms, 0);
    f->retry_ms = f->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : f->retry_ms * 2;
}

static void answered(void *arg, int err, int status, json_t *doc)
{
    tr__revfeed_t *f = arg;
    char why[64];
    f->call = NULL;
    if (err != 0) {
        set_up(f, false, tr_client_strerror(err));
    } else if (status != 200) {
        snprintf(why, sizeof(why), "auth answered %d", status);
        set_up(f, false, why);
    } else if (apply(f, doc) != 0) {
        set_up(f, false, "malformed answer from auth");
    } else {
        set_up(f, true, NULL);
        f->retry_ms = RETRY_MIN_MS;
        if (f->first) {
            f->first = false;
            json_t *fields = json_object();
            json_object_set_new(fields, "revoked_sessions",
                                json_integer((json_int_t)tr_revocations_count(f->set)));
            tr_log_json(TR_LOG_INFO, "revocation feed loaded", fields);
            f->loaded(f->arg);
        }
        if (!f->stopping) request(f);
        return;
    }
    retry_later(f);
}

static void request(tr__revfeed_t *f)
{
    char target[128];
    if (f->stopping || f->call) return;
    if (f->since < 0) f->since = tr_now_ms() - INITIAL_WINDOW_MS;
    /* The first request, and the first after an outage, answer at once:
     * they load (or catch up on) what happened meanwhile. */
    int wait = f->first || !f->up ? 0 : WAIT_MS;
    snprintf(target, sizeof(target),
             "/internal/revocations?since=%" PRId64 "&known=%" PRId64 "&wait=%d", f->since,
             f->known, wait);
    int rc =
        tr__auth_call(f->link, "GET", target, NULL, (uint64_t)wait + 5000, answered, f, &f->call);
    if (rc != 0) {
        f->call = NULL;
        set_up(f, false, tr_client_strerror(rc));
        retry_later(f);
    }
}

tr__revfeed_t *tr__revfeed_start(const tr__auth_link_t *link, uv_loop_t *loop,
                                 tr_revocations_t *set, void (*loaded)(void *arg), void *arg)
{
    tr__revfeed_t *f = tr_xcalloc(1, sizeof(*f));
    f->link = link;
    f->loop = loop;
    f->set = set;
    f->loaded = loaded;
    f->arg = arg;
    f->since = -1;
    f->first = true;
    f->retry_ms = RETRY_MIN_MS;
    f->started_ms = uv_now(loop);
    f->feed_up = tr_gauge_register("auth_revocation_feed_up",
                                   "1 while the revocation feed from auth answers.");
    f->revoked = tr_gauge_register("auth_revoked_sessions", "Revoked sessions known here.");
    f->errors = tr_counter_register("auth_revocation_feed_errors_total",
                                    "Failed requests to auth's revocation feed.", NULL);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    /* The feed alone must not keep a stopping worker's loop alive. */
    uv_unref((uv_handle_t *)&f->timer);
    request(f);
    return f;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void tr__revfeed_stop(tr__revfeed_t *f)
{
    if (!f) return;
    f->stopping = true;
    tr__auth_call_cancel(f->call);
    f->call = NULL;
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}

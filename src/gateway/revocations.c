/*
 * revocations.c - how the gateway learns, within a second, that a session
 * was revoked (logout, "revoke this session", password change, ban, stolen
 * refresh token), without asking auth on every request.
 *
 * THE FEED. Auth lists recently revoked sessions at GET
 * /internal/revocations?since=<ms> (services/auth/auth_edge.c). Worker 0
 * polls it every --revocation-poll (250 ms) with the internal token, through
 * the "auth" upstream of the current routes table. The first poll asks for
 * the last 15 minutes (auth clamps that to its access-token lifetime: older
 * revocations can have no live token left). Each later poll asks again from
 * auth's own clock minus OVERLAP_MS, because auth stamps revoked_at just
 * before its transaction commits: a revocation committed a moment after a
 * poll may carry a time before that poll. Entries seen twice are merged.
 * Latency bound: poll interval + one round trip + the commit window, i.e.
 * well under 1 s with the defaults.
 *
 * THE SET is an immutable hash set of 16-byte session ids, each with the
 * time after which no token of that session can be alive (revoked_at +
 * access TTL + SKEW_MS), after which it is dropped at the next rebuild. The
 * poller builds a new set and publishes it with one atomic exchange; the
 * workers read the current set on every authenticated request.
 *
 * READ SIDE (the only synchronisation on the hot path). A reader announces
 * the set it is about to read in its own hazard slot (one cache line per
 * worker, so readers never share a written line), re-checks that it is
 * still current, reads, and clears the slot; the poller frees a replaced
 * set only when no slot names it (Michael's hazard pointers). An empty set
 * is recognised from one relaxed load and costs nothing more.
 *
 * WHEN AUTH IS UNREACHABLE the last known set stays in force and keeps
 * expiring entries; the gauge gateway_revocation_feed_up drops to 0,
 * gateway_revocation_poll_errors_total counts the failures, and one warning
 * is logged per outage ("revocation feed unavailable"; "revocation feed
 * restored" when it is back). Tokens keep verifying meanwhile: the edge does
 * not fail closed on auth's outage, which auth's own per-request session
 * check still covers for auth's routes.
 */
#include "gateway/revocations.h"
#include "gateway/state.h"
#include "gateway/table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/ids.h"
#include "kit/log.h"

#define OVERLAP_MS        2000
#define SKEW_MS           60000
#define INITIAL_WINDOW_MS (15 * 60 * 1000)
#define REBUILD_EVERY_MS  10000
#define MAX_FEED_BYTES    (8u << 20)
#define POLL_TIMEOUT_MS   2000
/* Under `trellis up` auth starts beside the gateway: failures this early
 * are expected and not worth a warning. */
#define STARTUP_GRACE_MS 5000

/* ---- the set (pure) --------------------------------------------------------- */

typedef struct entry {
    uint8_t id[16];
    int64_t expires_ms;
    bool used;
} entry_t;

struct gw_revset {
    entry_t *slots;
    size_t mask;
    size_t count;
};

int gw_uuid_parse(const char *s, uint8_t out[16])
{
    static const int dash[] = {8, 13, 18, 23};
    size_t n = 0;
    if (!s || strlen(s) != 36) return -EINVAL;
    for (int i = 0; i < 4; i++)
        if (s[dash[i]] != '-') return -EINVAL;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) continue;
        char ch = s[i];
        int v = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (v < 0) return -EINVAL;
        if (n % 2 == 0)
            out[n / 2] = (uint8_t)(v << 4);
        else
            out[n / 2] |= (uint8_t)v;
        n++;
    }
    return 0;
}

/* UUIDv7 begins with a timestamp; the random half hashes well. */
static size_t slot_of(const uint8_t id[16], size_t mask)
{
    uint64_t h;
    memcpy(&h, id + 8, sizeof(h));
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 20) & mask;
}

static void set_put(gw_revset_t *s, const uint8_t id[16], int64_t expires_ms)
{
    size_t i = slot_of(id, s->mask);
    while (s->slots[i].used) {
        if (memcmp(s->slots[i].id, id, 16) == 0) {
            if (expires_ms > s->slots[i].expires_ms) s->slots[i].expires_ms = expires_ms;
            return;
        }
        i = (i + 1) & s->mask;
    }
    memcpy(s->slots[i].id, id, 16);
    s->slots[i].expires_ms = expires_ms;
    s->slots[i].used = true;
    s->count++;
}

gw_revset_t *gw_revset_merge(const gw_revset_t *old, const uint8_t (*ids)[16],
                             const int64_t *expires_ms, size_t n, int64_t now_ms)
{
    size_t want = (old ? old->count : 0) + n, cap = 16;
    while (cap < want * 2)
        cap <<= 1;
    gw_revset_t *s = tr_xcalloc(1, sizeof(*s));
    s->slots = tr_xcalloc(cap, sizeof(entry_t));
    s->mask = cap - 1;
    for (size_t i = 0; old && i <= old->mask; i++)
        if (old->slots[i].used && old->slots[i].expires_ms > now_ms)
            set_put(s, old->slots[i].id, old->slots[i].expires_ms);
    for (size_t i = 0; i < n; i++)
        if (expires_ms[i] > now_ms) set_put(s, ids[i], expires_ms[i]);
    return s;
}

bool gw_revset_contains(const gw_revset_t *s, const uint8_t id[16])
{
    if (!s || s->count == 0) return false;
    for (size_t i = slot_of(id, s->mask); s->slots[i].used; i = (i + 1) & s->mask)
        if (memcmp(s->slots[i].id, id, 16) == 0) return true;
    return false;
}

size_t gw_revset_count(const gw_revset_t *s)
{
    return s ? s->count : 0;
}

void gw_revset_free(gw_revset_t *s)
{
    if (!s) return;
    free(s->slots);
    free(s);
}

/* ---- publication with hazard slots ---------------------------------------- */

typedef struct hazard {
    _Atomic(gw_revset_t *) p;
    char pad[64 - sizeof(void *)];
} hazard_t;

struct gw_revocations {
    _Atomic(gw_revset_t *) current;
    _Atomic size_t count;
    hazard_t *hazards;
    size_t nhazards;
    gw_revset_t **retired; /* replaced sets not yet freed (publisher only) */
    size_t nretired;
};

gw_revocations_t *gw_revocations_new(size_t nworkers)
{
    gw_revocations_t *r = tr_xcalloc(1, sizeof(*r));
    r->nhazards = nworkers ? nworkers : 1;
    r->hazards = aligned_alloc(64, r->nhazards * sizeof(hazard_t));
    if (!r->hazards) abort();
    for (size_t i = 0; i < r->nhazards; i++)
        atomic_init(&r->hazards[i].p, NULL);
    atomic_init(&r->current, NULL);
    atomic_init(&r->count, 0);
    return r;
}

void gw_revocations_free(gw_revocations_t *r)
{
    if (!r) return;
    gw_revset_free(atomic_load(&r->current));
    for (size_t i = 0; i < r->nretired; i++)
        gw_revset_free(r->retired[i]);
    free(r->retired);
    free(r->hazards);
    free(r);
}

bool gw_revocations_contains(gw_revocations_t *r, int worker_index, const char *session_id)
{
    uint8_t id[16];
    if (atomic_load_explicit(&r->count, memory_order_relaxed) == 0) return false;
    if (worker_index < 0 || (size_t)worker_index >= r->nhazards) return false;
    if (gw_uuid_parse(session_id, id) != 0) return false;
    _Atomic(gw_revset_t *) *hp = &r->hazards[worker_index].p;
    gw_revset_t *s = atomic_load(&r->current);
    for (;;) {
        atomic_store(hp, s);
        gw_revset_t *again = atomic_load(&r->current);
        if (again == s) break;
        s = again;
    }
    bool hit = gw_revset_contains(s, id);
    atomic_store_explicit(hp, NULL, memory_order_release);
    return hit;
}

static void reclaim(gw_revocations_t *r)
{
    size_t kept = 0;
    for (size_t i = 0; i < r->nretired; i++) {
        gw_revset_t *s = r->retired[i];
        bool in_use = false;
        for (size_t k = 0; k < r->nhazards && !in_use; k++)
            in_use = atomic_load(&r->hazards[k].p) == s;
        if (in_use)
            r->retired[kept++] = s;
        else
            gw_revset_free(s);
    }
    r->nretired = kept;
}

static void publish(gw_revocations_t *r, gw_revset_t *s)
{
    gw_revset_t *old = atomic_exchange(&r->current, s);
    atomic_store(&r->count, gw_revset_count(s));
    if (old) {
        r->retired = tr_xrealloc(r->retired, (r->nretired + 1) * sizeof(*r->retired));
        r->retired[r->nretired++] = old;
    }
    reclaim(r);
}

/* ---- the poller (worker 0) ------------------------------------------------- */

typedef struct poller {
    gw_worker_t *gw;
    uv_timer_t timer;
    tr_client_req_t *creq;
    gw_hold_t *hold;
    tr_buf_t body;
    int status;
    int64_t since;        /* next ?since=, auth's clock; -1 before the first answer */
    int64_t last_rebuild; /* local ms */
    bool up;              /* the last poll succeeded */
    bool reported;        /* up was logged at least once */
    uint64_t started_ms;  /* loop time of the start */
    bool warned_no_auth;  /* logged that the table has no auth upstream */
    bool again;           /* the feed said "more": poll again at once */
    bool stopping;
} poller_t;

static void poll_once(poller_t *p);

static void set_up(poller_t *p, bool up, const char *error)
{
    gw_metrics_t *m = &p->gw->st->m;
    if (!up) tr_counter_inc(m->revocation_poll_errors, NULL);
    if (p->reported && up == p->up) return;
    if (!up && !p->reported && uv_now(p->gw->w->loop) - p->started_ms < STARTUP_GRACE_MS) return;
    bool first = !p->reported;
    p->reported = true;
    p->up = up;
    tr_gauge_set(m->revocation_feed_up, up ? 1 : 0);
    json_t *f = json_object();
    if (up) {
        json_object_set_new(f, "revoked_sessions",
                            json_integer((json_int_t)atomic_load(&p->gw->st->revocations->count)));
        tr_log_json(TR_LOG_INFO, first ? "revocation feed loaded" : "revocation feed restored", f);
    } else {
        json_object_set_new(f, "error", json_string(error));
        tr_log_json(TR_LOG_WARN, "revocation feed unavailable", f);
    }
}

/* Applies one answer of the feed. Returns 0 or -EPROTO for a malformed one. */
static int apply_feed(poller_t *p, const char *text, size_t len)
{
    gw_revocations_t *r = p->gw->st->revocations;
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    json_t *list = json_object_get(doc, "revocations");
    json_t *now = json_object_get(doc, "now"), *ttl = json_object_get(doc, "access_ttl_s");
    int rc = 0;
    if (!json_is_integer(now) || !json_is_integer(ttl) || !json_is_array(list)) {
        rc = -EPROTO;
        goto out;
    }
    int64_t auth_now = json_integer_value(now), local_now = tr_now_ms();
    /* Expiry in this host's clock: auth's revoked_at, moved by the offset
     * between the two clocks as seen in this answer. */
    int64_t offset = local_now - auth_now;
    int64_t keep_ms = json_integer_value(ttl) * 1000 + SKEW_MS;
    size_t n = json_array_size(list);
    uint8_t(*ids)[16] = tr_xcalloc(n ? n : 1, 16);
    int64_t *exp = tr_xcalloc(n ? n : 1, sizeof(int64_t));
    int64_t last = -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i);
        json_t *at = json_object_get(e, "revoked_at");
        const char *sid = json_string_value(json_object_get(e, "session_id"));
        if (!json_is_integer(at) || gw_uuid_parse(sid, ids[k]) != 0) continue;
        last = json_integer_value(at);
        exp[k++] = last + keep_ms + offset;
    }
    gw_revset_t *cur = atomic_load(&r->current);
    bool rebuild = local_now - p->last_rebuild >= REBUILD_EVERY_MS && gw_revset_count(cur) > 0;
    if (k > 0 || rebuild || !cur) {
        publish(r, gw_revset_merge(cur, (const uint8_t(*)[16])ids, exp, k, local_now));
        p->last_rebuild = local_now;
        tr_gauge_set(p->gw->st->m.revoked_sessions, (int64_t)atomic_load(&r->count));
    }
    free(ids);
    free(exp);
    p->again = json_is_true(json_object_get(doc, "more")) && last >= 0;
    p->since = p->again ? last : auth_now - OVERLAP_MS;
out:
    json_decref(doc);
    return rc;
}

static void poll_finished(poller_t *p)
{
    gw_hold_t *h = p->hold;
    p->creq = NULL;
    p->hold = NULL;
    tr_buf_reset(&p->body);
    if (h) gw_hold_release(p->gw, h);
    if (p->again && !p->stopping) {
        p->again = false;
        poll_once(p);
    }
}

static void on_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n, void *data)
{
    (void)r;
    (void)h;
    (void)n;
    ((poller_t *)data)->status = status;
}

static void on_body(tr_client_req_t *r, const char *chunk, size_t len, void *data)
{
    poller_t *p = data;
    if (tr_buf_append(&p->body, chunk, len) != 0) {
        /* Larger than any page the feed sends: treat as a failure. */
        tr_client_cancel(r);
        set_up(p, false, "feed answer too large");
        poll_finished(p);
    }
}

static void on_done(tr_client_req_t *r, void *data)
{
    poller_t *p = data;
    (void)r;
    if (p->status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "auth answered %d", p->status);
        set_up(p, false, why);
    } else if (apply_feed(p, p->body.data ? p->body.data : "", p->body.len) != 0) {
        set_up(p, false, "malformed answer from auth");
    } else {
        set_up(p, true, NULL);
    }
    poll_finished(p);
}

static void on_error(tr_client_req_t *r, int err, void *data)
{
    poller_t *p = data;
    (void)r;
    set_up(p, false, tr_client_strerror(err));
    poll_finished(p);
}

static const tr_client_callbacks_t poll_callbacks = {
    .on_head = on_head, .on_body = on_body, .on_done = on_done, .on_error = on_error};

static void poll_once(poller_t *p)
{
    gw_worker_t *gw = p->gw;
    if (p->creq || p->stopping) return;
    gw_hold_t *h = gw_hold_current(gw);
    const gw_live_t *live = h->live;
    if (live->auth < 0) {
        if (!p->warned_no_auth)
            tr_log_warn("the routes table has no \"auth\" upstream: revoked sessions are not "
                        "known at the edge");
        p->warned_no_auth = true;
        return;
    }
    p->warned_no_auth = false;
    if (p->since < 0) p->since = tr_now_ms() - INITIAL_WINDOW_MS;
    char target[64];
    snprintf(target, sizeof(target), "/internal/revocations?since=%" PRId64, p->since);
    tr_header_t headers[] = {{TR_INTERNAL_TOKEN_HEADER, gw->st->internal_token}};
    tr_client_opts_t o;
    tr_client_opts_init(&o);
    o.method = "GET";
    o.target = target;
    o.headers = headers;
    o.nheaders = 1;
    o.connect_timeout_ms = live->ups[live->auth]->connect_timeout_ms;
    o.total_timeout_ms = POLL_TIMEOUT_MS;
    o.retry.max_retries = 0; /* the next poll is the retry */
    o.cb = &poll_callbacks;
    o.data = p;
    p->status = 0;
    gw_hold_acquire(h);
    p->hold = h;
    int rc = tr_client_request(gw->client, live->ups[live->auth]->up, &o, &p->creq);
    if (rc != 0) {
        set_up(p, false, tr_client_strerror(rc));
        p->creq = NULL;
        p->hold = NULL;
        gw_hold_release(gw, h);
    }
}

static void on_timer(uv_timer_t *t)
{
    poll_once(t->data);
}

int gw_revocations_poller_start(gw_worker_t *gw)
{
    poller_t *p = tr_xcalloc(1, sizeof(*p));
    p->gw = gw;
    p->since = -1;
    p->started_ms = uv_now(gw->w->loop);
    tr_buf_init(&p->body, MAX_FEED_BYTES);
    uv_timer_init(gw->w->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timer, 0, gw->st->revocation_poll_ms);
    /* Polling alone must not keep a stopping worker's loop alive. */
    uv_unref((uv_handle_t *)&p->timer);
    gw->poller = p;
    tr_gauge_set(gw->st->m.revocation_feed_up, 0);
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    poller_t *p = h->data;
    tr_buf_free(&p->body);
    free(p);
}

void gw_revocations_poller_stop(gw_worker_t *gw)
{
    poller_t *p = gw->poller;
    if (!p) return;
    p->stopping = true;
    if (p->creq) {
        tr_client_cancel(p->creq);
        p->creq = NULL;
    }
    if (p->hold) gw_hold_release(gw, p->hold);
    p->hold = NULL;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
    gw->poller = NULL;
}

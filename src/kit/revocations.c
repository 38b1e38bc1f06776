/*
 * revocations.c - the set of revoked sessions (see revocations.h).
 *
 * THE SET is an immutable open-addressing hash set of 16-byte session ids.
 * A publisher builds a new set (old entries still alive plus the new ones)
 * and publishes it with one atomic exchange; the workers read the current
 * set on every authenticated request.
 *
 * READ SIDE (the only synchronisation on the hot path). A reader announces
 * the set it is about to read in its own hazard slot (one cache line per
 * worker, so readers never share a written line), re-checks that it is
 * still current, reads, and clears the slot; the publisher frees a replaced
 * set only when no slot names it (Michael's hazard pointers). An empty set
 * is recognised from one relaxed load and costs nothing more.
 */
#include "kit/revocations.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/ids.h"

/* ---- the set (pure) --------------------------------------------------------- */

typedef struct entry {
    uint8_t id[16];
    int64_t expires_ms;
    bool used;
} entry_t;

struct tr_revset {
    entry_t *slots;
    size_t mask;
    size_t count;
};

/* UUIDv7 begins with a timestamp; the random half hashes well. */
static size_t slot_of(const uint8_t id[16], size_t mask)
{
    uint64_t h;
    memcpy(&h, id + 8, sizeof(h));
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 20) & mask;
}

static void set_put(tr_revset_t *s, const uint8_t id[16], int64_t expires_ms)
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

tr_revset_t *tr_revset_merge(const tr_revset_t *old, const uint8_t (*ids)[16],
                             const int64_t *expires_ms, size_t n, int64_t now_ms)
{
    size_t want = (old ? old->count : 0) + n, cap = 16;
    while (cap < want * 2)
        cap <<= 1;
    tr_revset_t *s = tr_xcalloc(1, sizeof(*s));
    s->slots = tr_xcalloc(cap, sizeof(entry_t));
    s->mask = cap - 1;
    for (size_t i = 0; old && i <= old->mask; i++)
        if (old->slots[i].used && old->slots[i].expires_ms > now_ms)
            set_put(s, old->slots[i].id, old->slots[i].expires_ms);
    for (size_t i = 0; i < n; i++)
        if (expires_ms[i] > now_ms) set_put(s, ids[i], expires_ms[i]);
    return s;
}

bool tr_revset_contains(const tr_revset_t *s, const uint8_t id[16])
{
    if (!s || s->count == 0) return false;
    for (size_t i = slot_of(id, s->mask); s->slots[i].used; i = (i + 1) & s->mask)
        if (memcmp(s->slots[i].id, id, 16) == 0) return true;
    return false;
}

size_t tr_revset_count(const tr_revset_t *s)
{
    return s ? s->count : 0;
}

void tr_revset_free(tr_revset_t *s)
{
    if (!s) return;
    free(s->slots);
    free(s);
}

/* ---- publication with hazard slots ---------------------------------------- */

typedef struct hazard {
    _Atomic(tr_revset_t *) p;
    char pad[64 - sizeof(void *)];
} hazard_t;

struct tr_revocations {
    pthread_mutex_t publish_lock; /* one publisher at a time */
    _Atomic(tr_revset_t *) current;
    _Atomic size_t count;
    hazard_t *hazards;
    size_t nhazards;
    tr_revset_t **retired; /* replaced sets not yet freed (publisher only) */
    size_t nretired;
};

tr_revocations_t *tr_revocations_new(size_t nworkers)
{
    tr_revocations_t *r = tr_xcalloc(1, sizeof(*r));
    r->nhazards = nworkers ? nworkers : 1;
    r->hazards = aligned_alloc(64, r->nhazards * sizeof(hazard_t));
    if (!r->hazards) abort();
    for (size_t i = 0; i < r->nhazards; i++)
        atomic_init(&r->hazards[i].p, NULL);
    pthread_mutex_init(&r->publish_lock, NULL);
    atomic_init(&r->current, NULL);
    atomic_init(&r->count, 0);
    return r;
}

void tr_revocations_free(tr_revocations_t *r)
{
    if (!r) return;
    tr_revset_free(atomic_load(&r->current));
    for (size_t i = 0; i < r->nretired; i++)
        tr_revset_free(r->retired[i]);
    free(r->retired);
    free(r->hazards);
    pthread_mutex_destroy(&r->publish_lock);
    free(r);
}

bool tr_revocations_contains(tr_revocations_t *r, int worker_index, const char *session_id)
{
    uint8_t id[16];
    if (atomic_load_explicit(&r->count, memory_order_relaxed) == 0) return false;
    if (worker_index < 0 || (size_t)worker_index >= r->nhazards) return false;
    if (tr_uuid_parse(session_id, id) != 0) return false;
    _Atomic(tr_revset_t *) *hp = &r->hazards[worker_index].p;
    tr_revset_t *s = atomic_load(&r->current);
    for (;;) {
        atomic_store(hp, s);
        tr_revset_t *again = atomic_load(&r->current);
        if (again == s) break;
        s = again;
    }
    bool hit = tr_revset_contains(s, id);
    atomic_store_explicit(hp, NULL, memory_order_release);
    return hit;
}

static void reclaim(tr_revocations_t *r)
{
    size_t kept = 0;
    for (size_t i = 0; i < r->nretired; i++) {
        tr_revset_t *s = r->retired[i];
        bool in_use = false;
        for (size_t k = 0; k < r->nhazards && !in_use; k++)
            in_use = atomic_load(&r->hazards[k].p) == s;
        if (in_use)
            r->retired[kept++] = s;
        else
            tr_revset_free(s);
    }
    r->nretired = kept;
}

static void publish(tr_revocations_t *r, tr_revset_t *s)
{
    tr_revset_t *old = atomic_exchange(&r->current, s);
    atomic_store(&r->count, tr_revset_count(s));
    if (old) {
        r->retired = tr_xrealloc(r->retired, (r->nretired + 1) * sizeof(*r->retired));
        r->retired[r->nretired++] = old;
    }
    reclaim(r);
}

void tr_revocations_merge(tr_revocations_t *r, const uint8_t (*ids)[16], const int64_t *expires_ms,
                          size_t n, int64_t now_ms)
{
    pthread_mutex_lock(&r->publish_lock);
    publish(r, tr_revset_merge(atomic_load(&r->current), ids, expires_ms, n, now_ms));
    pthread_mutex_unlock(&r->publish_lock);
}

size_t tr_revocations_count(tr_revocations_t *r)
{
    return atomic_load(&r->count);
}

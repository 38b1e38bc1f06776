/*
 * ratelimit.c - policies, the process-wide local GCRA table, and the
 * per-loop workers that ask the shared engine (ratelimit_engine.h: Redis)
 * when one is configured and decide locally whenever it has no answer.
 *
 * NOTES ON THE DESIGN OF THE LOCAL TABLE
 *
 * 1. One table per process, split into 64 shards by the top bits of a keyed
 *    SipHash of (policy id, key). Each shard is an open-addressing table with
 *    linear probing and backward-shift deletion (no tombstones), guarded by
 *    its own mutex. The critical section is a probe and a few arithmetic
 *    operations, so worker threads rarely meet on a lock; SipHash with a
 *    random key keeps an attacker from aiming keys at one probe chain.
 *
 * 2. An entry is 64 bytes: hash, TAT and the key inline (keys over 45 bytes
 *    and all API keys are stored as a 16-byte BLAKE2b digest, so no entry
 *    owns a separate allocation and no secret sits in memory).
 *
 * 3. Memory is bounded: shard i holds at most its share of max_keys, and its
 *    slot array grows by doubling only up to the power of two that keeps the
 *    load factor at or under 3/4 at that maximum. A full shard evicts before
 *    inserting: it samples a run of slots at a random position and drops the
 *    entry with the smallest TAT. An entry whose TAT is in the past is exactly
 *    a fresh key, so dropping it changes no decision; otherwise the smallest
 *    TAT is the key closest to being fresh again, which under a flood of
 *    one-request keys is a flood key, not a busy client's.
 *
 * 4. Times are int64 nanoseconds of a monotonic clock (uv_hrtime unless a
 *    test injects one). A policy's interval and burst are atomics, read once
 *    per decision, so tr_ratelimit_policy_set never blocks deciders.
 */
#include "kit/ratelimit.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/ratelimit_internal.h"

#define NSHARDS       64
#define SHARD_BITS    6
#define INITIAL_SLOTS 64
#define EVICT_SAMPLE  16
#define OCCUPIED_BIT  (1ULL << 56) /* never used for shard or slot selection */
#define DEFAULT_KEYS  262144
#define NS_PER_SEC    1000000000LL
#define NS_PER_MS     1000000LL
#define RATE_MIN      0.001
#define RATE_MAX      1e6
#define BURST_MAX     1000000u

typedef struct entry {
    uint64_t hash; /* 0 = empty slot; occupied ones have OCCUPIED_BIT */
    int64_t tat;
    uint16_t policy;
    tr__rl_key_t key;
} entry_t;

_Static_assert(sizeof(entry_t) == 64, "a table entry is one cache line");

struct tr__rl_shard {
    pthread_mutex_t lock;
    entry_t *slots;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t count;
    size_t max;          /* entries this shard may hold */
    size_t max_capacity; /* slots it may grow to */
    uint64_t rng;        /* xorshift state for eviction sampling */
    char pad[64 - (sizeof(pthread_mutex_t) + 6 * sizeof(size_t)) % 64];
};

const tr_option_t tr_ratelimit_config_options[] = {
    {"redis-url", NULL,
     "redis://[[user]:password@]host[:port][/db] for limits shared by replicas (default: local)"},
    {"ratelimit-max-keys", "262144", "keys the local rate limiter tracks at most"},
    {"ratelimit-redis-timeout", "50ms", "time to wait for Redis before deciding a request locally"},
    {NULL, NULL, NULL},
};

static int64_t default_clock(void *arg)
{
    (void)arg;
    return (int64_t)uv_hrtime();
}

static int64_t rl_now(tr_ratelimit_t *rl)
{
    return rl->clock_ns(rl->clock_arg);
}

/* ---- keys ---------------------------------------------------------------- */

void tr__ratelimit_key(const tr_ratelimit_policy_t *p, const char *key, tr__rl_key_t *out)
{
    size_t len = strlen(key);
    int kind = atomic_load_explicit(&p->key_kind, memory_order_relaxed);
    memset(out, 0, sizeof *out);
    if (kind == TR_RATELIMIT_KEY_API_KEY || len > TR__RL_KEY_INLINE) {
        crypto_generichash((unsigned char *)out->bytes, 16, (const unsigned char *)key, len, NULL,
                           0);
        out->len = 16 | TR__RL_KEY_DIGEST;
    } else {
        memcpy(out->bytes, key, len);
        out->len = (uint8_t)len;
    }
}

static size_t key_bytes(const tr__rl_key_t *k)
{
    return k->len & ~TR__RL_KEY_DIGEST;
}

static uint64_t key_hash(const tr_ratelimit_t *rl, uint16_t policy, const tr__rl_key_t *k)
{
    unsigned char in[3 + TR__RL_KEY_INLINE];
    in[0] = (unsigned char)(policy >> 8);
    in[1] = (unsigned char)policy;
    in[2] = k->len;
    size_t n = key_bytes(k);
    memcpy(in + 3, k->bytes, n);
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, in, 3 + n, rl->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h | OCCUPIED_BIT;
}

static bool entry_matches(const entry_t *e, uint64_t hash, uint16_t policy, const tr__rl_key_t *k)
{
    return e->hash == hash && e->policy == policy && e->key.len == k->len &&
           memcmp(e->key.bytes, k->bytes, key_bytes(k)) == 0;
}

/* ---- shard table --------------------------------------------------------- */

static size_t pow2_at_least(size_t n)
{
    size_t c = 1;
    while (c < n)
        c <<= 1;
    return c;
}

static entry_t *shard_find(tr__rl_shard_t *s, uint64_t hash, uint16_t policy, const tr__rl_key_t *k)
{
    for (size_t i = hash & s->mask;; i = (i + 1) & s->mask) {
        entry_t *e = &s->slots[i];
        if (e->hash == 0) return NULL;
        if (entry_matches(e, hash, policy, k)) return e;
    }
}

/* Places an entry known to be absent; the shard has a free slot. */
static void shard_place(tr__rl_shard_t *s, const entry_t *src)
{
    size_t i = src->hash & s->mask;
    while (s->slots[i].hash != 0)
        i = (i + 1) & s->mask;
    s->slots[i] = *src;
    s->count++;
}

static void shard_grow(tr__rl_shard_t *s)
{
    size_t old_cap = s->mask + 1;
    entry_t *old = s->slots;
    s->slots = tr_xcalloc(old_cap * 2, sizeof(entry_t));
    s->mask = old_cap * 2 - 1;
    s->count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].hash != 0) shard_place(s, &old[i]);
    free(old);
}

/* Backward-shift deletion: pulls later members of the probe run into the
 * hole so every remaining key stays reachable from its home slot. */
static void shard_delete_at(tr__rl_shard_t *s, size_t hole)
{
    size_t j = hole;
    for (;;) {
        j = (j + 1) & s->mask;
        if (s->slots[j].hash == 0) break;
        size_t home = s->slots[j].hash & s->mask;
        /* The entry at j may move to hole only if its home is not in the
         * cyclic range (hole, j]. */
        bool home_in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!home_in_range) {
            s->slots[hole] = s->slots[j];
            hole = j;
        }
    }
    memset(&s->slots[hole], 0, sizeof(entry_t));
    s->count--;
}

static uint64_t shard_random(tr__rl_shard_t *s)
{
    uint64_t x = s->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->rng = x;
    return x;
}

static void shard_evict_one(tr__rl_shard_t *s, int64_t now)
{
    size_t i = shard_random(s) & s->mask;
    size_t victim = SIZE_MAX;
    size_t seen = 0;
    /* count > 0 here, so the scan ends; it samples EVICT_SAMPLE occupied slots
     * unless an already-fresh entry turns up first. */
    for (size_t n = 0; n <= s->mask && seen < EVICT_SAMPLE; n++, i = (i + 1) & s->mask) {
        entry_t *e = &s->slots[i];
        if (e->hash == 0) continue;
        seen++;
        if (victim == SIZE_MAX || e->tat < s->slots[victim].tat) victim = i;
        if (e->tat <= now) break;
    }
    shard_delete_at(s, victim);
}

/* ---- GCRA ---------------------------------------------------------------- */

static uint64_t ceil_div(int64_t n, int64_t d)
{
    if (n <= 0) return 0;
    return (uint64_t)((n + d - 1) / d);
}

void tr__ratelimit_fill(tr_ratelimit_decision_t *d, tr_ratelimit_result_t result, uint32_t limit,
                        uint32_t remaining, int64_t reset_ns, int64_t retry_ns)
{
    d->result = result;
    d->limit = limit;
    d->remaining = result == TR_RATELIMIT_ALLOWED ? remaining : 0;
    d->reset_ms = ceil_div(reset_ns, NS_PER_MS);
    uint64_t reset_s = ceil_div(reset_ns, NS_PER_SEC);
    d->reset_s = reset_s > UINT32_MAX ? UINT32_MAX : (uint32_t)reset_s;
    if (result == TR_RATELIMIT_ALLOWED) {
        d->retry_after_ms = 0;
        d->retry_after_s = 0;
    } else {
        uint64_t ms = ceil_div(retry_ns, NS_PER_MS);
        uint64_t s = ceil_div(retry_ns, NS_PER_SEC);
        d->retry_after_ms = ms ? ms : 1;
        d->retry_after_s = s == 0 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
    }
}

void tr__ratelimit_count(tr_ratelimit_t *rl, const tr_ratelimit_policy_t *p,
                         const tr_ratelimit_decision_t *d)
{
    const char *labels[] = {p->name, d->result == TR_RATELIMIT_ALLOWED ? "allowed" : "limited"};
    tr_counter_inc(rl->decisions, labels);
}

void tr__ratelimit_decide_local(tr_ratelimit_t *rl, const tr_ratelimit_policy_t *p,
                                const tr__rl_key_t *key, tr_ratelimit_source_t source,
                                tr_ratelimit_decision_t *d)
{
    int64_t interval = atomic_load_explicit(&p->interval_ns, memory_order_relaxed);
    uint32_t burst = atomic_load_explicit(&p->burst, memory_order_relaxed);
    int64_t window = interval * (int64_t)burst;
    uint64_t hash = key_hash(rl, p->id, key);
    tr__rl_shard_t *s = &rl->shards[hash >> (64 - SHARD_BITS)];

    pthread_mutex_lock(&s->lock);
    int64_t now = rl_now(rl);
    entry_t *e = shard_find(s, hash, p->id, key);
    int64_t tat = e && e->tat > now ? e->tat : now;
    int64_t new_tat = tat + interval;
    int64_t allow_at = new_tat - window;
    if (allow_at > now) {
        tr__ratelimit_fill(d, TR_RATELIMIT_LIMITED, burst, 0, tat - now, allow_at - now);
    } else {
        if (e) {
            e->tat = new_tat;
        } else {
            if (s->count + 1 > (s->mask + 1) / 4 * 3 && s->mask + 1 < s->max_capacity)
                shard_grow(s);
            if (s->count >= s->max) shard_evict_one(s, now);
            entry_t fresh = {.hash = hash, .tat = new_tat, .policy = p->id, .key = *key};
            shard_place(s, &fresh);
        }
        uint32_t remaining = (uint32_t)((now - allow_at) / interval);
        tr__ratelimit_fill(d, TR_RATELIMIT_ALLOWED, burst, remaining, new_tat - now, 0);
    }
    pthread_mutex_unlock(&s->lock);

    d->source = source;
    tr__ratelimit_count(rl, p, d);
}

int tr_ratelimit_check_local(tr_ratelimit_t *rl, const tr_ratelimit_policy_t *p, const char *key,
                             tr_ratelimit_decision_t *out)
{
    if (!rl || !p || !key || !out) return -EINVAL;
    tr__rl_key_t k;
    tr__ratelimit_key(p, key, &k);
    tr__ratelimit_decide_local(rl, p, &k, TR_RATELIMIT_SOURCE_LOCAL, out);
    return 0;
}

/* ---- policies ------------------------------------------------------------ */

static bool valid_policy_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > TR__RL_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

static tr_ratelimit_policy_t *policy_find_locked(const tr_ratelimit_t *rl, const char *name)
{
    size_t n = atomic_load_explicit(&rl->npolicies, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (strcmp(rl->policies[i]->name, name) == 0) return rl->policies[i];
    return NULL;
}

int tr_ratelimit_policy_set(tr_ratelimit_t *rl, const tr_ratelimit_policy_config_t *cfg,
                            const tr_ratelimit_policy_t **out)
{
    int rc = 0;
    if (!rl || !cfg || !valid_policy_name(cfg->name) || !(cfg->rate >= RATE_MIN) ||
        !(cfg->rate <= RATE_MAX) || cfg->burst < 1 || cfg->burst > BURST_MAX ||
        (cfg->key != TR_RATELIMIT_KEY_IP && cfg->key != TR_RATELIMIT_KEY_USER &&
         cfg->key != TR_RATELIMIT_KEY_API_KEY))
        return -EINVAL;

    pthread_mutex_lock(&rl->policy_lock);
    tr_ratelimit_policy_t *p = policy_find_locked(rl, cfg->name);
    if (!p) {
        size_t n = atomic_load_explicit(&rl->npolicies, memory_order_relaxed);
        if (n >= TR__RL_MAX_POLICIES) {
            rc = -ENOSPC;
            goto out;
        }
        p = tr_xcalloc(1, sizeof *p);
        strcpy(p->name, cfg->name);
        p->id = (uint16_t)n;
        rl->policies[n] = p;
        /* Published after the fields below are set. */
    }
    int64_t interval = (int64_t)llround(1e9 / cfg->rate);
    atomic_store(&p->interval_ns, interval > 0 ? interval : 1);
    atomic_store(&p->burst, cfg->burst);
    atomic_store(&p->key_kind, (int)cfg->key);
    atomic_store(&p->rate, cfg->rate);
    if (p->id == atomic_load_explicit(&rl->npolicies, memory_order_relaxed))
        atomic_store_explicit(&rl->npolicies, (size_t)p->id + 1, memory_order_release);
    if (out) *out = p;
out:
    pthread_mutex_unlock(&rl->policy_lock);
    return rc;
}

const tr_ratelimit_policy_t *tr_ratelimit_policy_find(const tr_ratelimit_t *rl, const char *name)
{
    if (!rl || !name) return NULL;
    return policy_find_locked(rl, name);
}

const char *tr_ratelimit_policy_name(const tr_ratelimit_policy_t *p)
{
    return p->name;
}

tr_ratelimit_key_kind_t tr_ratelimit_policy_key_kind(const tr_ratelimit_policy_t *p)
{
    return (tr_ratelimit_key_kind_t)atomic_load(&p->key_kind);
}

double tr_ratelimit_policy_rate(const tr_ratelimit_policy_t *p)
{
    return atomic_load(&p->rate);
}

uint32_t tr_ratelimit_policy_burst(const tr_ratelimit_policy_t *p)
{
    return atomic_load(&p->burst);
}

int tr_ratelimit_key_kind_parse(const char *text, tr_ratelimit_key_kind_t *out)
{
    if (!text || !out) return -EINVAL;
    if (strcmp(text, "ip") == 0)
        *out = TR_RATELIMIT_KEY_IP;
    else if (strcmp(text, "user") == 0)
        *out = TR_RATELIMIT_KEY_USER;
    else if (strcmp(text, "api_key") == 0)
        *out = TR_RATELIMIT_KEY_API_KEY;
    else
        return -EINVAL;
    return 0;
}

const char *tr_ratelimit_key_kind_name(tr_ratelimit_key_kind_t kind)
{
    switch (kind) {
    case TR_RATELIMIT_KEY_IP:
        return "ip";
    case TR_RATELIMIT_KEY_USER:
        return "user";
    case TR_RATELIMIT_KEY_API_KEY:
        return "api_key";
    }
    return "unknown";
}

/* ---- lifetime ------------------------------------------------------------ */

int tr_ratelimit_create(const tr_ratelimit_options_t *opts, tr_ratelimit_t **out)
{
    static const tr_ratelimit_options_t defaults;
    int rc = 0;
    tr_ratelimit_t *rl = NULL;
    if (!out) return -EINVAL;
    *out = NULL;
    if (!opts) opts = &defaults;
    if (sodium_init() < 0) abort();

    rl = tr_xcalloc(1, sizeof *rl);
    pthread_mutex_init(&rl->policy_lock, NULL);
    rl->max_keys = opts->max_keys ? opts->max_keys : DEFAULT_KEYS;
    rl->clock_ns = opts->clock_ns ? opts->clock_ns : default_clock;
    rl->clock_arg = opts->clock_arg;
    randombytes_buf(rl->hash_key, sizeof rl->hash_key);
    rl->shards = tr_xcalloc(NSHARDS, sizeof(tr__rl_shard_t));
    for (size_t i = 0; i < NSHARDS; i++) {
        tr__rl_shard_t *s = &rl->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->max = rl->max_keys / NSHARDS + (i < rl->max_keys % NSHARDS ? 1 : 0);
        if (s->max == 0) s->max = 1;
        s->max_capacity = pow2_at_least(s->max * 4 / 3 + 1);
        size_t cap = INITIAL_SLOTS < s->max_capacity ? INITIAL_SLOTS : s->max_capacity;
        s->slots = tr_xcalloc(cap, sizeof(entry_t));
        s->mask = cap - 1;
        randombytes_buf(&s->rng, sizeof s->rng);
        s->rng |= 1; /* xorshift must not start at 0 */
    }
    rl->decisions = tr_counter_register(
        "ratelimit_decisions_total", "Rate-limit decisions by policy and result.", "policy,result");

    rl->redis_timeout_ms = opts->redis_timeout_ms ? opts->redis_timeout_ms : 50;
    rl->redis_connect_timeout_ms =
        opts->redis_connect_timeout_ms ? opts->redis_connect_timeout_ms : 1000;
    const char *prefix = opts->redis_prefix ? opts->redis_prefix : "trellis:rl:";
    if (strlen(prefix) > TR__RL_PREFIX_MAX) {
        rc = -EINVAL;
        goto out;
    }
    if (opts->redis_url && opts->redis_url[0] &&
        (rc = tr__rl_redis_new(opts->redis_url, prefix, rl->redis_timeout_ms,
                               rl->redis_connect_timeout_ms, &rl->redis)) != 0)
        goto out;
out:
    if (rc != 0) {
        tr_ratelimit_free(rl);
        rl = NULL;
    }
    *out = rl;
    return rc;
}

int tr_ratelimit_create_from_config(const tr_config_t *cfg, tr_ratelimit_t **out)
{
    tr_ratelimit_options_t opts = {0};
    int64_t max_keys = 0, timeout_ms = 0;
    int rc = tr_config_int(cfg, "ratelimit-max-keys", &max_keys);
    if (rc == 0 && (max_keys < 1 || max_keys > ((int64_t)1 << 32))) rc = -EINVAL;
    if (rc != 0 && rc != -ENOENT) goto out;
    rc = tr_config_duration_ms(cfg, "ratelimit-redis-timeout", &timeout_ms);
    if (rc == 0 && (timeout_ms < 1 || timeout_ms > 60000)) rc = -EINVAL;
    if (rc != 0 && rc != -ENOENT) goto out;
    opts.max_keys = (size_t)max_keys;
    opts.redis_timeout_ms = (uint32_t)timeout_ms;
    opts.redis_url = tr_config_get(cfg, "redis-url");
    rc = tr_ratelimit_create(&opts, out);
out:
    if (rc != 0) *out = NULL;
    return rc;
}

void tr_ratelimit_free(tr_ratelimit_t *rl)
{
    if (!rl) return;
    for (size_t i = 0; i < NSHARDS; i++) {
        pthread_mutex_destroy(&rl->shards[i].lock);
        free(rl->shards[i].slots);
    }
    free(rl->shards);
    size_t n = atomic_load(&rl->npolicies);
    for (size_t i = 0; i < n; i++)
        free(rl->policies[i]);
    pthread_mutex_destroy(&rl->policy_lock);
    tr__rl_redis_free(rl->redis);
    free(rl);
}

int tr_ratelimit_uses_redis(const tr_ratelimit_t *rl)
{
    return rl && rl->redis;
}

/* ---- per event loop ------------------------------------------------------ */

struct tr_ratelimit_worker {
    tr_ratelimit_t *rl;
    tr__rl_redis_worker_t *redis; /* NULL: local decisions only */
    bool closing;
};

/* A check the engine has: freed in its callback, which comes exactly once
 * (ratelimit_engine.h), also after a cancel. */
struct tr_ratelimit_pending {
    tr_ratelimit_t *rl;
    const tr_ratelimit_policy_t *policy;
    tr__rl_key_t key;
    uint32_t burst;
    tr_ratelimit_cb cb;
    void *data;
    bool done; /* answered or cancelled: cb must not run */
    tr__rl_redis_check_t *check;
};

int tr_ratelimit_worker_open(tr_ratelimit_t *rl, uv_loop_t *loop, tr_ratelimit_worker_t **out)
{
    if (!rl || !loop || !out) return -EINVAL;
    tr_ratelimit_worker_t *w = tr_xcalloc(1, sizeof *w);
    w->rl = rl;
    int rc = rl->redis ? tr__rl_redis_worker_open(rl->redis, loop, &w->redis) : 0;
    if (rc != 0) {
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void tr_ratelimit_worker_close(tr_ratelimit_worker_t *w)
{
    if (!w || w->closing) return;
    w->closing = true; /* checks from the callbacks below get -ECANCELED */
    tr__rl_redis_worker_close(w->redis);
    free(w);
}

int tr_ratelimit_worker_redis_up(const tr_ratelimit_worker_t *w)
{
    return w && w->redis && tr__rl_redis_worker_up(w->redis);
}

/* The Redis key of (policy, key) after the prefix: "<policy>:<key>", or
 * "<policy>:h:<hex>" for a digest. */
static size_t key_text(const tr_ratelimit_policy_t *p, const tr__rl_key_t *k, char *out)
{
    size_t n = strlen(p->name);
    memcpy(out, p->name, n);
    out[n++] = ':';
    if (k->len & TR__RL_KEY_DIGEST) {
        static const char hex[] = "0123456789abcdef";
        out[n++] = 'h';
        out[n++] = ':';
        for (size_t i = 0; i < 16; i++) {
            out[n++] = hex[(unsigned char)k->bytes[i] >> 4];
            out[n++] = hex[(unsigned char)k->bytes[i] & 15];
        }
    } else {
        memcpy(out + n, k->bytes, k->len);
        n += k->len;
    }
    return n;
}

static void on_engine_answer(void *data, const tr__rl_gcra_reply_t *reply, const char *reason,
                             const char *detail)
{
    tr_ratelimit_pending_t *p = data;
    if (!p->done) {
        tr_ratelimit_decision_t d;
        p->done = true;
        if (reply) {
            tr__ratelimit_fill(&d, reply->allowed ? TR_RATELIMIT_ALLOWED : TR_RATELIMIT_LIMITED,
                               p->burst, (uint32_t)reply->remaining,
                               (int64_t)reply->reset_us * 1000, (int64_t)reply->retry_us * 1000);
            d.source = TR_RATELIMIT_SOURCE_REDIS;
            tr__ratelimit_count(p->rl, p->policy, &d);
        } else {
            tr__ratelimit_decide_local(p->rl, p->policy, &p->key, TR_RATELIMIT_SOURCE_FALLBACK, &d);
            tr__rl_redis_note_fallback(p->rl->redis, reason, detail);
        }
        p->cb(&d, p->data);
    }
    free(p);
}

int tr_ratelimit_check(tr_ratelimit_worker_t *w, const tr_ratelimit_policy_t *policy,
                       const char *key, tr_ratelimit_decision_t *out, tr_ratelimit_cb cb,
                       void *data, tr_ratelimit_pending_t **pending)
{
    if (pending) *pending = NULL;
    if (!w || !policy || !key || !out || !cb) return -EINVAL;
    if (w->closing) return -ECANCELED;
    tr_ratelimit_t *rl = w->rl;
    tr__rl_key_t k;
    tr__ratelimit_key(policy, key, &k);
    if (!w->redis) {
        tr__ratelimit_decide_local(rl, policy, &k, TR_RATELIMIT_SOURCE_LOCAL, out);
        return TR_RATELIMIT_DECIDED;
    }

    char text[TR__RL_REDIS_KEY_MAX];
    size_t text_len = key_text(policy, &k, text);
    int64_t interval_ns = atomic_load_explicit(&policy->interval_ns, memory_order_relaxed);
    tr_ratelimit_pending_t *p = tr_xcalloc(1, sizeof *p);
    p->rl = rl;
    p->policy = policy;
    p->key = k;
    p->burst = atomic_load_explicit(&policy->burst, memory_order_relaxed);
    p->cb = cb;
    p->data = data;
    const char *reason = NULL;
    int rc = tr__rl_redis_check(w->redis, text, text_len,
                                interval_ns >= 1000 ? (uint64_t)(interval_ns / 1000) : 1, p->burst,
                                on_engine_answer, p, &p->check, &reason);
    if (rc != 0) {
        free(p);
        tr__ratelimit_decide_local(rl, policy, &k, TR_RATELIMIT_SOURCE_FALLBACK, out);
        tr__rl_redis_note_fallback(rl->redis, reason ? reason : "error",
                                   rc == -EIO ? "cannot send command" : NULL);
        return TR_RATELIMIT_DECIDED;
    }
    if (pending) *pending = p;
    return TR_RATELIMIT_PENDING;
}

void tr_ratelimit_cancel(tr_ratelimit_pending_t *pending)
{
    if (!pending) return;
    pending->done = true;
    tr__rl_redis_cancel(pending->check);
}

/* ---- test hooks ---------------------------------------------------------- */

size_t tr__ratelimit_local_keys(tr_ratelimit_t *rl)
{
    size_t n = 0;
    for (size_t i = 0; i < NSHARDS; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += rl->shards[i].count;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}

size_t tr__ratelimit_local_bytes(tr_ratelimit_t *rl)
{
    size_t n = 0;
    for (size_t i = 0; i < NSHARDS; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += (rl->shards[i].mask + 1) * sizeof(entry_t);
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}

size_t tr__ratelimit_local_max_bytes(const tr_ratelimit_t *rl)
{
    size_t n = 0;
    for (size_t i = 0; i < NSHARDS; i++)
        n += rl->shards[i].max_capacity * sizeof(entry_t);
    return n;
}

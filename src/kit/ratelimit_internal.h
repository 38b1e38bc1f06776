/*
 * ratelimit_internal.h - the limiter's state (ratelimit.c: policies, the
 * local table, the engine it asks when Redis is configured), and the hooks
 * the unit tests use to look inside the local table. The Redis engine
 * (ratelimit_redis.c) does not include it: it sees only ratelimit_engine.h.
 */
#ifndef TR_RATELIMIT_INTERNAL_H
#define TR_RATELIMIT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "kit/metrics.h"
#include "kit/ratelimit.h"
#include "kit/ratelimit_engine.h"

#define TR__RL_MAX_POLICIES 1024
#define TR__RL_NAME_MAX     64
/* Keys up to this many bytes are stored as they are; longer ones, and every
 * API key, as a 16-byte digest. 45 makes a table entry exactly 64 bytes and
 * fits any IPv6 address text and any UUID. */
#define TR__RL_KEY_INLINE 45
#define TR__RL_KEY_DIGEST 0x80 /* flag in tr__rl_key_t.len */

_Static_assert(TR__RL_REDIS_KEY_MAX >
                   TR__RL_PREFIX_MAX + TR__RL_NAME_MAX + 1 + 2 + 2 * TR__RL_KEY_INLINE,
               "every Redis key fits");

struct tr_ratelimit_policy {
    char name[TR__RL_NAME_MAX + 1];
    uint16_t id;
    _Atomic int64_t interval_ns; /* 1e9 / rate, >= 1 */
    _Atomic uint32_t burst;
    _Atomic int key_kind;
    _Atomic double rate;
};

typedef struct tr__rl_key {
    uint8_t len; /* byte count, | TR__RL_KEY_DIGEST when bytes is a digest */
    char bytes[TR__RL_KEY_INLINE];
} tr__rl_key_t;

typedef struct tr__rl_shard tr__rl_shard_t;

struct tr_ratelimit {
    tr__rl_shard_t *shards;
    size_t max_keys;
    int64_t (*clock_ns)(void *arg);
    void *clock_arg;
    unsigned char hash_key[16];

    pthread_mutex_t policy_lock;
    tr_ratelimit_policy_t *policies[TR__RL_MAX_POLICIES];
    _Atomic size_t npolicies;

    tr_counter_t *decisions;

    tr__rl_redis_t *redis; /* NULL: local decisions only */
    uint32_t redis_timeout_ms;
    uint32_t redis_connect_timeout_ms;
};

/* Normalises a caller's key for policy p (digest for API keys and long keys). */
void tr__ratelimit_key(const tr_ratelimit_policy_t *p, const char *key, tr__rl_key_t *out);
/* Fills a decision from GCRA durations in nanoseconds. */
void tr__ratelimit_fill(tr_ratelimit_decision_t *d, tr_ratelimit_result_t result, uint32_t limit,
                        uint32_t remaining, int64_t reset_ns, int64_t retry_ns);
/* Counts a decision in ratelimit_decisions_total. */
void tr__ratelimit_count(tr_ratelimit_t *rl, const tr_ratelimit_policy_t *p,
                         const tr_ratelimit_decision_t *d);
/* Decides from the local table, records source in d and counts it. */
void tr__ratelimit_decide_local(tr_ratelimit_t *rl, const tr_ratelimit_policy_t *p,
                                const tr__rl_key_t *key, tr_ratelimit_source_t source,
                                tr_ratelimit_decision_t *d);

/* For tests: keys currently held in the local table, and the bytes of its
 * slot arrays. Both lock every shard in turn. */
size_t tr__ratelimit_local_keys(tr_ratelimit_t *rl);
size_t tr__ratelimit_local_bytes(tr_ratelimit_t *rl);
/* For tests: the slot capacity the local table can grow to, in bytes. */
size_t tr__ratelimit_local_max_bytes(const tr_ratelimit_t *rl);

#endif

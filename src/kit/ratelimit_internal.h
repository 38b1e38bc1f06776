/*
 * ratelimit_internal.h - what ratelimit.c (policies, local table) and
 * ratelimit_redis.c (per-loop Redis connections) share, and the hooks the
 * unit tests use to look inside the local table.
 */
#ifndef TR_RATELIMIT_INTERNAL_H
#define TR_RATELIMIT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "kit/metrics.h"
#include "kit/ratelimit.h"

#define TR__RL_MAX_POLICIES 1024
#define TR__RL_NAME_MAX     64
/* Keys up to this many bytes are stored as they are; longer ones, and every
 * API key, as a 16-byte digest. 45 makes a table entry exactly 64 bytes and
 * fits any IPv6 address text and any UUID. */
#define TR__RL_KEY_INLINE 45
#define TR__RL_KEY_DIGEST 0x80 /* flag in tr__rl_key_t.len */
#define TR__RL_PREFIX_MAX 128  /* Redis key prefix */

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

typedef struct tr__rl_redis_conf {
    char *host;
    int port;
    int db;
    char *user;     /* NULL unless given */
    char *password; /* NULL unless given */
} tr__rl_redis_conf_t;

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

    bool use_redis;
    tr__rl_redis_conf_t redis;
    char *redis_prefix;
    uint32_t redis_timeout_ms;
    uint32_t redis_connect_timeout_ms;
    tr_counter_t *redis_fallbacks;
    tr_gauge_t *redis_up;
    _Atomic int workers_open; /* Redis-using workers open */
    _Atomic int workers_up;   /* of those, connected with the script loaded */
    _Atomic int64_t last_warn_ns;
    _Atomic uint64_t unlogged_fallbacks;
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

/* ratelimit_redis.c: parses a redis:// URL into conf (strings malloc'ed).
 * Returns 0 or -EINVAL. */
int tr__ratelimit_redis_parse_url(const char *url, tr__rl_redis_conf_t *conf);
void tr__ratelimit_redis_conf_free(tr__rl_redis_conf_t *conf);

/* For tests: keys currently held in the local table, and the bytes of its
 * slot arrays. Both lock every shard in turn. */
size_t tr__ratelimit_local_keys(tr_ratelimit_t *rl);
size_t tr__ratelimit_local_bytes(tr_ratelimit_t *rl);
/* For tests: the slot capacity the local table can grow to, in bytes. */
size_t tr__ratelimit_local_max_bytes(const tr_ratelimit_t *rl);

#endif

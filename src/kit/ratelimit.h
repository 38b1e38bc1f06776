/*
 * ratelimit.h - request rate limits: named policies (rate + burst) keyed by
 * client IP, user id or API key, decided locally or in a shared Redis.
 *
 * ALGORITHM. GCRA (the generic cell rate algorithm), which is a token bucket
 * stored as one timestamp per key: the "theoretical arrival time" (TAT). With
 * an emission interval T = 1 / rate and a burst of B, a request at time now is
 * admitted when max(TAT, now) + T - B*T <= now, and then TAT becomes
 * max(TAT, now) + T. So a fresh key admits B requests at once and then one
 * every T; an idle key refills at `rate` up to B. A key whose TAT is in the
 * past is indistinguishable from a fresh key, which is what lets the local
 * table drop idle keys without changing any decision.
 *
 * LOCAL. One tr_ratelimit_t per process holds one table shared by all worker
 * threads (a limit is per process, not per worker). The table has a hard
 * maximum of keys: a flood of unique keys evicts the keys closest to being
 * fresh again (idle ones first), so memory stays bounded.
 *
 * REDIS. With a redis:// URL, each worker loop opens its own asynchronous
 * connection (tr_ratelimit_worker_open) and decisions run as one atomic Lua
 * script on Redis' own clock, so several gateway replicas enforce one limit.
 * When Redis is unreachable, erroring or slower than the timeout, that
 * decision is taken by the local limiter instead (source FALLBACK), counted in
 * ratelimit_redis_fallbacks_total and logged at most every few seconds; the
 * worker reconnects in the background with exponential backoff. Traffic is
 * never admitted without a limit and never refused for lack of Redis.
 *
 * METRICS. ratelimit_decisions_total{policy,result} (result "allowed" or
 * "limited"), and with Redis configured ratelimit_redis_fallbacks_total and
 * the gauge ratelimit_redis_up (1 while every open worker's connection is up).
 *
 * HEADERS. A decision carries what the gateway writes as RateLimit-Limit
 * (limit), RateLimit-Remaining (remaining), RateLimit-Reset (reset_s) and,
 * when limited, Retry-After (retry_after_s); see tr_ratelimit_decision_t.
 */
#ifndef TR_RATELIMIT_H
#define TR_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kit/config.h"

typedef struct tr_ratelimit tr_ratelimit_t;
typedef struct tr_ratelimit_policy tr_ratelimit_policy_t;
typedef struct tr_ratelimit_worker tr_ratelimit_worker_t;
typedef struct tr_ratelimit_pending tr_ratelimit_pending_t;

/* What a policy's key is. The caller computes the key string; the kind tells
 * it which one to compute and lets the limiter treat secrets with care. */
typedef enum tr_ratelimit_key_kind {
    TR_RATELIMIT_KEY_IP,      /* client IP address as text ("203.0.113.7", "2001:db8::1") */
    TR_RATELIMIT_KEY_USER,    /* authenticated user id */
    TR_RATELIMIT_KEY_API_KEY, /* the API key itself: only a digest of it is ever stored */
} tr_ratelimit_key_kind_t;

typedef struct tr_ratelimit_policy_config {
    const char *name;            /* 1..64 chars of [A-Za-z0-9_.-]; copied */
    double rate;                 /* admitted requests per second, 0.001 .. 1e6 */
    uint32_t burst;              /* requests admitted at once by an idle key, 1 .. 1000000 */
    tr_ratelimit_key_kind_t key; /* what the caller passes as key */
} tr_ratelimit_policy_config_t;

typedef enum tr_ratelimit_result {
    TR_RATELIMIT_ALLOWED = 0,
    TR_RATELIMIT_LIMITED = 1,
} tr_ratelimit_result_t;

/* Who decided. FALLBACK means Redis is configured but this decision was taken
 * locally because Redis was unreachable, slow or answered an error. */
typedef enum tr_ratelimit_source {
    TR_RATELIMIT_SOURCE_LOCAL,
    TR_RATELIMIT_SOURCE_REDIS,
    TR_RATELIMIT_SOURCE_FALLBACK,
} tr_ratelimit_source_t;

typedef struct tr_ratelimit_decision {
    tr_ratelimit_result_t result;
    tr_ratelimit_source_t source;
    uint32_t limit;         /* RateLimit-Limit: the policy's burst */
    uint32_t remaining;     /* RateLimit-Remaining: requests admitted right now after this
                             * one (0 when limited) */
    uint32_t reset_s;       /* RateLimit-Reset: seconds, rounded up, until the key is back
                             * to its full burst; 0 when it already is */
    uint32_t retry_after_s; /* Retry-After: seconds, rounded up (>= 1), until a request
                             * would be admitted; 0 when allowed */
    uint64_t reset_ms;      /* the same two durations in milliseconds, rounded up */
    uint64_t retry_after_ms;
} tr_ratelimit_decision_t;

typedef struct tr_ratelimit_options {
    /* Maximum keys in the local table (all policies together); 0 = 262144.
     * Its slots are 64 bytes and the table is sized for at most 3/4 load:
     * 85 to 171 bytes per key at worst, 32 MiB at the default. */
    size_t max_keys;
    /* "redis://[[user]:password@]host[:port][/db]" (port 6379, db 0 by
     * default), or NULL / "" for local limits only. Copied. */
    const char *redis_url;
    uint32_t redis_timeout_ms;         /* per decision; 0 = 50 */
    uint32_t redis_connect_timeout_ms; /* 0 = 1000 */
    const char *redis_prefix; /* Redis key prefix, <= 128 bytes; NULL = "trellis:rl:"; copied */
    /* Monotonic clock in nanoseconds for the local limiter; NULL = uv_hrtime().
     * Tests inject one. Called from any thread, with a shard lock held. */
    int64_t (*clock_ns)(void *arg);
    void *clock_arg;
} tr_ratelimit_options_t;

/* Options a service that rate-limits declares: redis-url
 * (TRELLIS_REDIS_URL), ratelimit-max-keys, ratelimit-redis-timeout (a
 * duration, default 50ms). Terminated by a {NULL} entry. */
extern const tr_option_t tr_ratelimit_config_options[];

/* Creates a limiter with no policies. opts may be NULL (all defaults). Call
 * before starting worker threads; everything else below is thread-safe unless
 * said otherwise. Returns 0, or -EINVAL for a malformed redis_url or an
 * option out of range (*out is then NULL). */
int tr_ratelimit_create(const tr_ratelimit_options_t *opts, tr_ratelimit_t **out);
/* Same, with max_keys, redis_url and redis_timeout_ms read from the options
 * of tr_ratelimit_config_options (which cfg must have declared). */
int tr_ratelimit_create_from_config(const tr_config_t *cfg, tr_ratelimit_t **out);
/* Frees the limiter and its policies. Every worker must be closed and its
 * loop run until the close finished. NULL is ignored. */
void tr_ratelimit_free(tr_ratelimit_t *rl);

/* True when the limiter was created with a Redis URL. */
int tr_ratelimit_uses_redis(const tr_ratelimit_t *rl);

/* Adds a policy, or updates the rate, burst and key kind of the policy with
 * that name (counters are kept: a key's state is a time, valid under any
 * rate). Safe while other threads decide; a decision racing an update may
 * mix old and new values for that one request. The returned handle (out may be NULL)
 * lives as long as rl, so callers resolve names once (e.g. when loading
 * routes) and keep the handle across reloads. Returns 0, -EINVAL for a bad
 * config, -ENOSPC past 1024 policies. */
int tr_ratelimit_policy_set(tr_ratelimit_t *rl, const tr_ratelimit_policy_config_t *cfg,
                            const tr_ratelimit_policy_t **out);
/* The policy with that name, or NULL. */
const tr_ratelimit_policy_t *tr_ratelimit_policy_find(const tr_ratelimit_t *rl, const char *name);
const char *tr_ratelimit_policy_name(const tr_ratelimit_policy_t *p);
tr_ratelimit_key_kind_t tr_ratelimit_policy_key_kind(const tr_ratelimit_policy_t *p);
/* Current values (they may change with tr_ratelimit_policy_set). */
double tr_ratelimit_policy_rate(const tr_ratelimit_policy_t *p);
uint32_t tr_ratelimit_policy_burst(const tr_ratelimit_policy_t *p);

/* "ip", "user", "api_key" <-> kind. parse returns 0 or -EINVAL. */
int tr_ratelimit_key_kind_parse(const char *text, tr_ratelimit_key_kind_t *out);
const char *tr_ratelimit_key_kind_name(tr_ratelimit_key_kind_t kind);

/* Decides one request for key (NUL-terminated, any bytes; "" is a valid key
 * shared by everyone who has none) with the local table only, ignoring
 * Redis. Never blocks beyond a shard mutex. Counts the decision in
 * ratelimit_decisions_total. Returns 0 with *out filled, or -EINVAL for a NULL
 * argument. */
int tr_ratelimit_check_local(tr_ratelimit_t *rl, const tr_ratelimit_policy_t *p, const char *key,
                             tr_ratelimit_decision_t *out);

/* ---- per event loop ------------------------------------------------------ */

/* Attaches the limiter to a libuv loop (one per worker thread) and, with
 * Redis configured, starts connecting to it in the background. The worker's
 * handles do not keep the loop alive on their own, except while a check is
 * pending. Must be called on the loop's thread; the worker is used only on
 * that thread. Returns 0 (even when Redis is down: decisions fall back until
 * it is up) or a negative errno. The process must ignore SIGPIPE (the
 * server does), since hiredis writes to a socket Redis may have closed. */
int tr_ratelimit_worker_open(tr_ratelimit_t *rl, uv_loop_t *loop, tr_ratelimit_worker_t **out);
/* Starts closing: pending checks are answered from the local limiter (source
 * FALLBACK) before this returns, the Redis connection is dropped and the
 * handles close; the memory is freed once the loop has run the close
 * callbacks (run it with uv_run after this). May be called from a check's
 * callback; a check made from a callback that the close runs gets
 * -ECANCELED. Do not use w after that. NULL is ignored. */
void tr_ratelimit_worker_close(tr_ratelimit_worker_t *w);
/* 1 while this worker's Redis connection is up and the script is loaded. */
int tr_ratelimit_worker_redis_up(const tr_ratelimit_worker_t *w);

/* Called on the worker's loop thread with the decision (valid during the
 * call only). */
typedef void (*tr_ratelimit_cb)(const tr_ratelimit_decision_t *decision, void *data);

#define TR_RATELIMIT_DECIDED 0 /* *out is filled; cb will not be called */
#define TR_RATELIMIT_PENDING 1 /* cb will be called later, exactly once, unless cancelled */

/* Decides one request. Without Redis, or while this worker's Redis connection
 * is down, decides at once from the local table and returns
 * TR_RATELIMIT_DECIDED with *out filled (source LOCAL or FALLBACK). Otherwise
 * sends the script and returns TR_RATELIMIT_PENDING: cb(decision, data) runs
 * later on this loop, within about the Redis timeout (after which the
 * decision falls back to the local table), and *pending (may be NULL) is a
 * handle for tr_ratelimit_cancel, valid until cb runs or it is cancelled.
 * cb is never called from inside this function. Returns a negative errno
 * (-EINVAL for NULL arguments, -ECANCELED on a closing worker) without
 * calling cb. */
int tr_ratelimit_check(tr_ratelimit_worker_t *w, const tr_ratelimit_policy_t *p, const char *key,
                       tr_ratelimit_decision_t *out, tr_ratelimit_cb cb, void *data,
                       tr_ratelimit_pending_t **pending);
/* Cancels a pending check (e.g. the client went away): its cb is never
 * called. Must be called on the worker's loop thread, before cb ran. */
void tr_ratelimit_cancel(tr_ratelimit_pending_t *pending);

#endif

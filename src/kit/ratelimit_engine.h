/*
 * ratelimit_engine.h - the shared rate-limit engine behind ratelimit.c:
 * Redis (ratelimit_redis.c), as store_engine.h puts SQLite and PostgreSQL
 * behind store.c. Kit-internal.
 *
 * DIRECTION. ratelimit.c owns the public API (ratelimit.h), the local
 * table and every decision; it asks the engine for a GCRA answer and
 * decides locally whenever the engine cannot give one. The engine knows
 * nothing of policies, keys or decisions: it runs the GCRA script for a
 * key text, an interval and a burst, and reports the raw answer, or why
 * there is none. Nothing here calls back into ratelimit.c by name.
 *
 * CALLBACK RULE. A check the engine accepted (tr__rl_redis_check returned
 * 0) gets its callback exactly once, on the worker's loop: with Redis'
 * answer, or with reply NULL and a reason ("unavailable", "error",
 * "closing", ...) when there is none. Never from inside
 * tr__rl_redis_check. tr__rl_redis_worker_close calls it for every check
 * still outstanding before it returns.
 */
#ifndef TR_RATELIMIT_ENGINE_H
#define TR_RATELIMIT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TR__RL_PREFIX_MAX    128 /* Redis key prefix */
#define TR__RL_REDIS_KEY_MAX 512

typedef struct tr__rl_redis_conf {
    char *host;
    int port;
    int db;
    char *user;     /* NULL unless given */
    char *password; /* NULL unless given */
} tr__rl_redis_conf_t;

/* Parses a redis:// URL into conf (strings malloc'ed). Returns 0 or
 * -EINVAL (conf then holds nothing to free). */
int tr__ratelimit_redis_parse_url(const char *url, tr__rl_redis_conf_t *conf);
void tr__ratelimit_redis_conf_free(tr__rl_redis_conf_t *conf);

typedef struct tr__rl_redis tr__rl_redis_t;               /* process-wide */
typedef struct tr__rl_redis_worker tr__rl_redis_worker_t; /* one per loop */
typedef struct tr__rl_redis_check tr__rl_redis_check_t;   /* one outstanding check */

/* Redis' GCRA answer: times in microseconds. */
typedef struct tr__rl_gcra_reply {
    bool allowed;
    uint64_t remaining;
    uint64_t reset_us;
    uint64_t retry_us;
} tr__rl_gcra_reply_t;

typedef void (*tr__rl_redis_cb)(void *data, const tr__rl_gcra_reply_t *reply, const char *reason,
                                const char *detail);

/* The engine for url, keys under prefix (<= TR__RL_PREFIX_MAX bytes), with
 * a per-check timeout and a connect timeout. Registers
 * ratelimit_redis_fallbacks_total and ratelimit_redis_up. Returns 0 or
 * -EINVAL (bad URL or prefix); nothing is allocated on failure. */
int tr__rl_redis_new(const char *url, const char *prefix, uint32_t timeout_ms,
                     uint32_t connect_timeout_ms, tr__rl_redis_t **out);
/* After every worker closed. NULL is ignored. */
void tr__rl_redis_free(tr__rl_redis_t *e);
/* Counts one decision taken locally for want of an answer (reason as the
 * callback's) and warns at most every few seconds. Any thread. */
void tr__rl_redis_note_fallback(tr__rl_redis_t *e, const char *reason, const char *detail);

/* Opens the engine on a loop and starts connecting in the background (see
 * ratelimit.h's tr_ratelimit_worker_open). Loop thread. */
int tr__rl_redis_worker_open(tr__rl_redis_t *e, uv_loop_t *loop, tr__rl_redis_worker_t **out);
/* Answers every outstanding check ("closing"), drops the connection and
 * frees the worker once its handles closed. Loop thread. */
void tr__rl_redis_worker_close(tr__rl_redis_worker_t *w);
/* True while connected with the script loaded. */
bool tr__rl_redis_worker_up(const tr__rl_redis_worker_t *w);

/* Sends one decision for key (the text after the prefix, key_len <=
 * TR__RL_REDIS_KEY_MAX - TR__RL_PREFIX_MAX - 1). Returns 0 with *check (cb
 * later, see CALLBACK RULE), or -EAGAIN with *reason when the engine cannot
 * take it now (not connected, overloaded) or -EIO when the send failed;
 * cb is then never called. */
int tr__rl_redis_check(tr__rl_redis_worker_t *w, const char *key, size_t key_len,
                       uint64_t interval_us, uint32_t burst, tr__rl_redis_cb cb, void *data,
                       tr__rl_redis_check_t **check, const char **reason);
/* The caller no longer waits for check: it no longer holds the connection
 * to its deadline. Its callback still comes, exactly once. */
void tr__rl_redis_cancel(tr__rl_redis_check_t *check);

#endif

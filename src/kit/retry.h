/*
 * retry.h - when the HTTP client may try a request again, and how long it
 * waits first.
 *
 * ELIGIBILITY. A request is retried only when doing it twice cannot hurt: its
 * method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) or it carries
 * an Idempotency-Key header, and its body can be sent again (it was given as
 * a buffer, or it is streamed and not a byte of it has left yet). A try that
 * failed to connect sent nothing at all, so it is retried whatever the method
 * (the client applies that rule; tr_retry_method_allowed only judges methods).
 *
 * BACKOFF. Exponential with full jitter (AWS architecture blog, "Exponential
 * Backoff And Jitter"): before retry n (n = 1 for the first retry) the client
 * sleeps a uniformly random time in [0, min(cap, base * 2^(n-1))]. Full jitter
 * spreads the retries of many clients that failed together, so they do not
 * hit a recovering upstream in synchronized waves.
 *
 * BUDGET. Retries are also bounded as a share of the traffic (Envoy's retry
 * budget): a retry may start only while the retries in progress stay within
 * budget_percent of the active requests, or below min_concurrency, whichever
 * is larger. When an upstream fails everything, this caps the extra load
 * retries add at ~20% instead of multiplying it by max_retries + 1. The
 * budget is per worker thread and per upstream (plain counters, no atomics):
 * each worker sees a fair sample of the traffic, so the ratio holds overall.
 */
#ifndef TR_RETRY_H
#define TR_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a failed try must look like to be retried (bits of retry_on). */
enum {
    TR_RETRY_ON_CONNECT_FAILURE = 1u << 0, /* refused, unreachable, connect timeout */
    TR_RETRY_ON_RESET = 1u << 1,           /* connection closed/reset before the response head */
    TR_RETRY_ON_TIMEOUT = 1u << 2,         /* the per-try timeout fired before the response head */
    TR_RETRY_ON_GATEWAY_ERROR = 1u << 3,   /* response status 502, 503 or 504 */
    TR_RETRY_ON_5XX = 1u << 4              /* any response status 500-599 */
};

#define TR_RETRY_DEFAULT_ON                                                                        \
    (TR_RETRY_ON_CONNECT_FAILURE | TR_RETRY_ON_RESET | TR_RETRY_ON_TIMEOUT |                       \
     TR_RETRY_ON_GATEWAY_ERROR)

typedef struct tr_retry_policy {
    unsigned max_retries; /* tries after the first; 0 = never retry */
    unsigned retry_on;    /* TR_RETRY_ON_* bits */
    uint64_t base_ms;     /* backoff base */
    uint64_t cap_ms;      /* backoff ceiling */
} tr_retry_policy_t;

/* Fills p with the defaults: 2 retries, TR_RETRY_DEFAULT_ON, base 25 ms,
 * cap 1000 ms. */
void tr_retry_policy_defaults(tr_retry_policy_t *p);

/* True when method (case-sensitive, as on the wire) is idempotent, or when
 * has_idempotency_key is true. */
bool tr_retry_method_allowed(const char *method, bool has_idempotency_key);

/* The delay before retry number attempt (1 = first retry): uniform in
 * [0, min(cap_ms, base_ms * 2^(attempt-1))], drawn from random (any 64-bit
 * random number; the caller's generator keeps this function pure). */
uint64_t tr_retry_backoff_ms(const tr_retry_policy_t *p, unsigned attempt, uint64_t random);

/* A thread-local xorshift generator seeded from the OS once per thread: cheap
 * randomness for jitter and load-balancer tie breaks, not for secrets. */
uint64_t tr_retry_random(void);

typedef struct tr_retry_budget {
    unsigned budget_percent;  /* retries in progress <= this % of active requests */
    unsigned min_concurrency; /* ... or below this many, whichever allows more */
    size_t active_requests;   /* requests started and not yet finished */
    size_t active_retries;    /* retry tries (or their backoff waits) in progress */
} tr_retry_budget_t;

/* Defaults: 20 %, at least 3 concurrent retries. Counters start at 0. */
void tr_retry_budget_init(tr_retry_budget_t *b);
/* Takes one retry slot when the budget allows it: returns true and counts the
 * retry as in progress, or returns false and changes nothing. */
bool tr_retry_budget_acquire(tr_retry_budget_t *b);
/* Gives back a slot taken by tr_retry_budget_acquire when that retry ends. */
void tr_retry_budget_release(tr_retry_budget_t *b);

#endif

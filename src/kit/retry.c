/*
 * retry.c - retry eligibility, full-jitter backoff and the retry budget of
 * retry.h.
 */
#include "kit/retry.h"
#include "kit/ids.h"

#include <string.h>

void tr_retry_policy_defaults(tr_retry_policy_t *p)
{
    p->max_retries = 2;
    p->retry_on = TR_RETRY_DEFAULT_ON;
    p->base_ms = 25;
    p->cap_ms = 1000;
}

bool tr_retry_method_allowed(const char *method, bool has_idempotency_key)
{
    static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};
    if (has_idempotency_key) return true;
    if (!method) return false;
    for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (strcmp(method, idempotent[i]) == 0) return true;
    return false;
}

uint64_t tr_retry_backoff_ms(const tr_retry_policy_t *p, unsigned attempt, uint64_t random)
{
    if (attempt == 0) attempt = 1;
    uint64_t ceiling = p->base_ms;
    /* Doubling stops at the cap (and long before overflow). */
    for (unsigned i = 1; i < attempt && ceiling < p->cap_ms; i++)
        ceiling *= 2;
    if (ceiling > p->cap_ms) ceiling = p->cap_ms;
    return ceiling == 0 ? 0 : random % (ceiling + 1);
}

static _Thread_local uint64_t rng_state;

uint64_t tr_retry_random(void)
{
    while (rng_state == 0)
        tr_random_bytes(&rng_state, sizeof rng_state);
    /* xorshift64* (Vigna): fast, and good enough to spread retries. */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void tr_retry_budget_init(tr_retry_budget_t *b)
{
    b->budget_percent = 20;
    b->min_concurrency = 3;
    b->active_requests = 0;
    b->active_retries = 0;
}

bool tr_retry_budget_acquire(tr_retry_budget_t *b)
{
    size_t allowed = b->active_requests * b->budget_percent / 100;
    if (allowed < b->min_concurrency) allowed = b->min_concurrency;
    if (b->active_retries >= allowed) return false;
    b->active_retries++;
    return true;
}

void tr_retry_budget_release(tr_retry_budget_t *b)
{
    if (b->active_retries > 0) b->active_retries--;
}

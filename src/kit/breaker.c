/*
 * breaker.c - the circuit breaker state machine of breaker.h, lock-free.
 *
 * Transitions are compare-and-swap on the state word, so when several
 * workers race (two failures reaching the threshold at once, two requests
 * arriving as the cool-down ends) exactly one of them makes the change:
 * one opening (one cool-down start), one probe. opened_at_ms is stored before
 * the state that publishes it (release), and read after the state (acquire).
 */
#include "kit/breaker.h"

#include <stddef.h>

void tr_breaker_init(tr_breaker_t *b, const tr_breaker_config_t *cfg)
{
    if (cfg) {
        b->cfg = *cfg;
    } else {
        b->cfg.failure_threshold = TR_BREAKER_DEFAULT_THRESHOLD;
        b->cfg.cooldown_ms = TR_BREAKER_DEFAULT_COOLDOWN_MS;
    }
    atomic_init(&b->state, TR_BREAKER_CLOSED);
    atomic_init(&b->failures, 0);
    atomic_init(&b->opened_at_ms, 0);
    atomic_init(&b->probe_taken, false);
    atomic_init(&b->opens, 0);
}

static bool cooled_down(const tr_breaker_t *b, uint64_t now_ms)
{
    uint64_t opened = atomic_load_explicit(&b->opened_at_ms, memory_order_relaxed);
    return now_ms >= opened + b->cfg.cooldown_ms;
}

tr_breaker_verdict_t tr_breaker_allow(tr_breaker_t *b, uint64_t now_ms)
{
    int state = atomic_load_explicit(&b->state, memory_order_acquire);
    if (state == TR_BREAKER_CLOSED) return TR_BREAKER_PASS;
    if (state == TR_BREAKER_OPEN) {
        if (!cooled_down(b, now_ms)) return TR_BREAKER_REJECT;
        int expected = TR_BREAKER_OPEN;
        atomic_compare_exchange_strong_explicit(&b->state, &expected, TR_BREAKER_HALF_OPEN,
                                                memory_order_acq_rel, memory_order_acquire);
        /* Whoever won the CAS, the breaker is now half-open (or was closed by
         * a probe in between): compete for the probe below. */
        state = atomic_load_explicit(&b->state, memory_order_acquire);
        if (state == TR_BREAKER_CLOSED) return TR_BREAKER_PASS;
        if (state != TR_BREAKER_HALF_OPEN) return TR_BREAKER_REJECT;
    }
    bool expected = false;
    if (atomic_compare_exchange_strong_explicit(&b->probe_taken, &expected, true,
                                                memory_order_acq_rel, memory_order_relaxed))
        return TR_BREAKER_PROBE;
    return TR_BREAKER_REJECT;
}

static void open_now(tr_breaker_t *b, uint64_t now_ms, int from)
{
    atomic_store_explicit(&b->opened_at_ms, now_ms, memory_order_relaxed);
    int expected = from;
    if (atomic_compare_exchange_strong_explicit(&b->state, &expected, TR_BREAKER_OPEN,
                                                memory_order_acq_rel, memory_order_relaxed)) {
        atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->opens, 1, memory_order_relaxed);
    }
}

void tr_breaker_record_success(tr_breaker_t *b, bool probe)
{
    if (probe) {
        atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
        atomic_store_explicit(&b->state, TR_BREAKER_CLOSED, memory_order_release);
        atomic_store_explicit(&b->probe_taken, false, memory_order_release);
        return;
    }
    /* A success from a request that started before the breaker opened says
     * little about the upstream now; only a closed breaker's count resets. */
    if (atomic_load_explicit(&b->state, memory_order_relaxed) == TR_BREAKER_CLOSED &&
        atomic_load_explicit(&b->failures, memory_order_relaxed) != 0)
        atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
}

void tr_breaker_record_failure(tr_breaker_t *b, uint64_t now_ms, bool probe)
{
    if (probe) {
        open_now(b, now_ms, TR_BREAKER_HALF_OPEN);
        atomic_store_explicit(&b->probe_taken, false, memory_order_release);
        return;
    }
    if (b->cfg.failure_threshold == 0) return;
    if (atomic_load_explicit(&b->state, memory_order_relaxed) != TR_BREAKER_CLOSED) return;
    unsigned n = atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed) + 1;
    if (n >= b->cfg.failure_threshold) open_now(b, now_ms, TR_BREAKER_CLOSED);
}

bool tr_breaker_close(tr_breaker_t *b)
{
    int state = atomic_load_explicit(&b->state, memory_order_acquire);
    if (state == TR_BREAKER_CLOSED) return false;
    atomic_store_explicit(&b->failures, 0, memory_order_relaxed);
    /* A CAS loop, not a store: OPEN may turn HALF_OPEN meanwhile, and two
     * closers (or a closer and a probe's success) report the change once. */
    while (state != TR_BREAKER_CLOSED)
        if (atomic_compare_exchange_weak_explicit(&b->state, &state, TR_BREAKER_CLOSED,
                                                  memory_order_acq_rel, memory_order_acquire))
            return true;
    return false;
}

void tr_breaker_release_probe(tr_breaker_t *b)
{
    atomic_store_explicit(&b->probe_taken, false, memory_order_release);
}

tr_breaker_state_t tr_breaker_state(const tr_breaker_t *b, uint64_t now_ms)
{
    int state = atomic_load_explicit(&b->state, memory_order_acquire);
    if (state == TR_BREAKER_OPEN && cooled_down(b, now_ms)) return TR_BREAKER_HALF_OPEN;
    return (tr_breaker_state_t)state;
}

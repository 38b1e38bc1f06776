/*
 * breaker.h - a circuit breaker for one upstream.
 *
 * STATES. CLOSED lets every request through and counts consecutive failures;
 * the failure_threshold-th consecutive failure opens it. OPEN fails every
 * request fast until cooldown_ms have passed since it opened; the first
 * request after that moves it to HALF_OPEN and is the one probe: HALF_OPEN
 * lets exactly that probe through and rejects everything else. The probe's
 * success closes the breaker (failure count back to 0); its failure opens it
 * again for another cool-down. A probe that ends without a verdict (cancelled
 * by its caller) gives the probe slot back, so the next request becomes the
 * probe.
 *
 * OUTSIDE EVIDENCE. tr_breaker_close closes the breaker from any state when
 * something other than a request proves the upstream serves again (the
 * upstream's active health check passing, upstream.h): without it, traffic
 * would wait out the rest of the cool-down after the upstream came back.
 *
 * SHARING. One breaker per upstream, shared by every worker thread of the
 * process: the state lives in atomics, so "5 consecutive failures" and "one
 * probe" mean what they say however many workers there are (per-worker
 * breakers would let N workers each send 5 failing requests and N probes).
 * The healthy path costs one relaxed load in tr_breaker_allow and one load in
 * tr_breaker_record_success (the failure count is only written when it is not
 * already 0), so workers do not fight over the cache line while all is well.
 * "Consecutive" is approximate across threads: a success on one worker resets
 * the count that failures on another were building, which is the behaviour
 * wanted (the upstream is not failing everything).
 *
 * TIME. Callers pass a monotonic clock in milliseconds (uv_now() of any loop
 * is fine: every libuv loop reads the same CLOCK_MONOTONIC), which keeps the
 * breaker free of I/O and easy to test.
 */
#ifndef TR_BREAKER_H
#define TR_BREAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Values are those of the upstream_breaker_state gauge. */
typedef enum tr_breaker_state {
    TR_BREAKER_CLOSED = 0,
    TR_BREAKER_OPEN = 1,
    TR_BREAKER_HALF_OPEN = 2
} tr_breaker_state_t;

typedef struct tr_breaker_config {
    unsigned failure_threshold; /* consecutive failures that open it; 0 = never opens */
    uint64_t cooldown_ms;       /* time spent OPEN before the half-open probe */
} tr_breaker_config_t;

/* Defaults: 5 failures, 5000 ms cool-down. */
#define TR_BREAKER_DEFAULT_THRESHOLD   5u
#define TR_BREAKER_DEFAULT_COOLDOWN_MS 5000u

/* Verdict of tr_breaker_allow. */
typedef enum tr_breaker_verdict {
    TR_BREAKER_REJECT = 0, /* fail fast: open, or half-open with the probe taken */
    TR_BREAKER_PASS = 1,   /* an ordinary request (closed breaker) */
    TR_BREAKER_PROBE = 2   /* the half-open probe: report its outcome with probe=true */
} tr_breaker_verdict_t;

typedef struct tr_breaker {
    tr_breaker_config_t cfg;
    _Atomic int state;             /* tr_breaker_state_t */
    _Atomic unsigned failures;     /* consecutive failures while closed */
    _Atomic uint64_t opened_at_ms; /* when it last opened */
    _Atomic bool probe_taken;      /* half-open: the probe is in flight */
    _Atomic uint64_t opens;        /* times it opened, for logs and tests */
} tr_breaker_t;

/* Initializes a closed breaker with a copy of cfg (NULL = the defaults). */
void tr_breaker_init(tr_breaker_t *b, const tr_breaker_config_t *cfg);

/* Asks whether one request may go to the upstream at now_ms. A PROBE verdict
 * obliges the caller to report the outcome with probe=true, or to call
 * tr_breaker_release_probe when the request ends without one. */
tr_breaker_verdict_t tr_breaker_allow(tr_breaker_t *b, uint64_t now_ms);

/* Reports a request that the upstream served (any status below 500). */
void tr_breaker_record_success(tr_breaker_t *b, bool probe);
/* Reports a failure: connect error, timeout, reset, malformed response or a
 * 5xx status. Opening stamps now_ms as the start of the cool-down. */
void tr_breaker_record_failure(tr_breaker_t *b, uint64_t now_ms, bool probe);
/* Gives back the probe slot of a request that was cancelled. */
void tr_breaker_release_probe(tr_breaker_t *b);
/* Closes the breaker at once (failure count back to 0) on evidence from
 * outside the request path, such as a passing active health check. Returns
 * true when it was not closed before (the caller may log the change). A
 * probe in flight keeps its slot until it reports; its verdict then no
 * longer changes a closed breaker. Any thread. */
bool tr_breaker_close(tr_breaker_t *b);

/* The state at now_ms, for metrics and health: an OPEN breaker whose
 * cool-down is over reads as HALF_OPEN (the next request will be the probe).
 * Changes nothing. */
tr_breaker_state_t tr_breaker_state(const tr_breaker_t *b, uint64_t now_ms);

#endif

/*
 * test_breaker.c - the circuit breaker state machine, driven with an explicit
 * clock (no I/O): opening after the threshold, fast-fail while open, exactly
 * one half-open probe, and what each probe outcome leads to.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "kit/breaker.h"

static const tr_breaker_config_t cfg = {.failure_threshold = 5, .cooldown_ms = 1000};

static void test_opens_after_threshold(void **state)
{
    (void)state;
    tr_breaker_t b;
    tr_breaker_init(&b, &cfg);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tr_breaker_allow(&b, 100), TR_BREAKER_PASS);
        tr_breaker_record_failure(&b, 100, false);
    }
    assert_int_equal(tr_breaker_state(&b, 100), TR_BREAKER_CLOSED);
    tr_breaker_record_failure(&b, 100, false);
    assert_int_equal(tr_breaker_state(&b, 100), TR_BREAKER_OPEN);
    assert_int_equal(tr_breaker_allow(&b, 500), TR_BREAKER_REJECT);
    assert_int_equal(tr_breaker_allow(&b, 1099), TR_BREAKER_REJECT);
    assert_int_equal(atomic_load(&b.opens), 1);
}

static void test_success_resets_count(void **state)
{
    (void)state;
    tr_breaker_t b;
    tr_breaker_init(&b, &cfg);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++)
            tr_breaker_record_failure(&b, 0, false);
        tr_breaker_record_success(&b, false);
    }
    assert_int_equal(tr_breaker_state(&b, 0), TR_BREAKER_CLOSED);
    assert_int_equal(tr_breaker_allow(&b, 0), TR_BREAKER_PASS);
}

static tr_breaker_t *open_breaker(tr_breaker_t *b)
{
    tr_breaker_init(b, &cfg);
    for (int i = 0; i < 5; i++)
        tr_breaker_record_failure(b, 1000, false);
    assert_int_equal(tr_breaker_state(b, 1000), TR_BREAKER_OPEN);
    return b;
}

static void test_single_probe_then_close(void **state)
{
    (void)state;
    tr_breaker_t b;
    open_breaker(&b);
    assert_int_equal(tr_breaker_state(&b, 2000), TR_BREAKER_HALF_OPEN); /* display only */
    assert_int_equal(tr_breaker_allow(&b, 2000), TR_BREAKER_PROBE);
    assert_int_equal(tr_breaker_allow(&b, 2000), TR_BREAKER_REJECT);
    assert_int_equal(tr_breaker_allow(&b, 2500), TR_BREAKER_REJECT);
    tr_breaker_record_success(&b, true);
    assert_int_equal(tr_breaker_state(&b, 2500), TR_BREAKER_CLOSED);
    assert_int_equal(tr_breaker_allow(&b, 2500), TR_BREAKER_PASS);
    /* Closed again from scratch: 4 failures do not open it. */
    for (int i = 0; i < 4; i++)
        tr_breaker_record_failure(&b, 2600, false);
    assert_int_equal(tr_breaker_state(&b, 2600), TR_BREAKER_CLOSED);
}

static void test_probe_failure_reopens(void **state)
{
    (void)state;
    tr_breaker_t b;
    open_breaker(&b);
    assert_int_equal(tr_breaker_allow(&b, 2000), TR_BREAKER_PROBE);
    tr_breaker_record_failure(&b, 2100, true);
    assert_int_equal(tr_breaker_state(&b, 2100), TR_BREAKER_OPEN);
    /* The new cool-down counts from the probe's failure. */
    assert_int_equal(tr_breaker_allow(&b, 3000), TR_BREAKER_REJECT);
    assert_int_equal(tr_breaker_allow(&b, 3100), TR_BREAKER_PROBE);
    assert_int_equal(atomic_load(&b.opens), 2);
}

static void test_released_probe_is_given_again(void **state)
{
    (void)state;
    tr_breaker_t b;
    open_breaker(&b);
    assert_int_equal(tr_breaker_allow(&b, 2000), TR_BREAKER_PROBE);
    tr_breaker_release_probe(&b);
    assert_int_equal(tr_breaker_allow(&b, 2001), TR_BREAKER_PROBE);
    assert_int_equal(tr_breaker_allow(&b, 2001), TR_BREAKER_REJECT);
}

static void test_late_results_while_open_ignored(void **state)
{
    (void)state;
    tr_breaker_t b;
    open_breaker(&b);
    /* Requests that started before it opened finish now. */
    tr_breaker_record_success(&b, false);
    tr_breaker_record_failure(&b, 1500, false);
    assert_int_equal(tr_breaker_state(&b, 1500), TR_BREAKER_OPEN);
    assert_int_equal(tr_breaker_allow(&b, 2000), TR_BREAKER_PROBE); /* cool-down from 1000 */
}

/* Outside evidence (a passing health check) closes an open breaker before
 * its cool-down ends; a probe in flight then reports into a closed breaker
 * without reopening it, and gives its slot back. */
static void test_close_from_outside(void **state)
{
    (void)state;
    tr_breaker_t b;
    tr_breaker_init(&b, &cfg);
    assert_false(tr_breaker_close(&b)); /* already closed: no change to report */
    for (int i = 0; i < 5; i++)
        tr_breaker_record_failure(&b, 100, false);
    assert_int_equal(tr_breaker_allow(&b, 200), TR_BREAKER_REJECT);
    assert_true(tr_breaker_close(&b));
    assert_int_equal(tr_breaker_state(&b, 200), TR_BREAKER_CLOSED);
    assert_int_equal(tr_breaker_allow(&b, 200), TR_BREAKER_PASS);
    /* The count starts again from 0: four failures do not reopen it. */
    for (int i = 0; i < 4; i++)
        tr_breaker_record_failure(&b, 300, false);
    assert_int_equal(tr_breaker_state(&b, 300), TR_BREAKER_CLOSED);
    tr_breaker_record_failure(&b, 300, false);
    assert_int_equal(tr_breaker_state(&b, 300), TR_BREAKER_OPEN);

    /* Half-open with the probe out: closing wins, the probe's late failure
     * does not reopen, and the slot is free again for a later opening. */
    assert_int_equal(tr_breaker_allow(&b, 1300), TR_BREAKER_PROBE);
    assert_true(tr_breaker_close(&b));
    tr_breaker_record_failure(&b, 1310, true);
    assert_int_equal(tr_breaker_state(&b, 1310), TR_BREAKER_CLOSED);
    for (int i = 0; i < 5; i++)
        tr_breaker_record_failure(&b, 1400, false);
    assert_int_equal(tr_breaker_allow(&b, 2400), TR_BREAKER_PROBE);
    assert_int_equal(atomic_load(&b.opens), 3);
}

static void test_threshold_zero_never_opens(void **state)
{
    (void)state;
    tr_breaker_t b;
    tr_breaker_config_t never = {.failure_threshold = 0, .cooldown_ms = 10};
    tr_breaker_init(&b, &never);
    for (int i = 0; i < 100; i++)
        tr_breaker_record_failure(&b, 0, false);
    assert_int_equal(tr_breaker_allow(&b, 0), TR_BREAKER_PASS);
}

static void test_defaults(void **state)
{
    (void)state;
    tr_breaker_t b;
    tr_breaker_init(&b, NULL);
    assert_int_equal(b.cfg.failure_threshold, 5);
    assert_int_equal(b.cfg.cooldown_ms, 5000);
}

/* Many threads racing for the probe: exactly one wins. */
static tr_breaker_t race;
static atomic_int probes;

static void *race_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        if (tr_breaker_allow(&race, 5000) == TR_BREAKER_PROBE) atomic_fetch_add(&probes, 1);
    return NULL;
}

static void test_one_probe_across_threads(void **state)
{
    (void)state;
    open_breaker(&race);
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, race_thread, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&probes), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold),
        cmocka_unit_test(test_success_resets_count),
        cmocka_unit_test(test_single_probe_then_close),
        cmocka_unit_test(test_probe_failure_reopens),
        cmocka_unit_test(test_released_probe_is_given_again),
        cmocka_unit_test(test_late_results_while_open_ignored),
        cmocka_unit_test(test_close_from_outside),
        cmocka_unit_test(test_threshold_zero_never_opens),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_one_probe_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

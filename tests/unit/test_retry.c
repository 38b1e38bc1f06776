/*
 * test_retry.c - retry eligibility by method, the full-jitter backoff bounds
 * and spread, and the retry budget arithmetic.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kit/retry.h"

static void test_methods(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        bool key;
        bool allowed;
    } cases[] = {
        {"GET", false, true},   {"HEAD", false, true},   {"OPTIONS", false, true},
        {"PUT", false, true},   {"DELETE", false, true}, {"TRACE", false, true},
        {"POST", false, false}, {"PATCH", false, false}, {"POST", true, true},
        {"PATCH", true, true},  {"get", false, false},   {NULL, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(tr_retry_method_allowed(cases[i].method, cases[i].key), cases[i].allowed);
}

static void test_defaults(void **state)
{
    (void)state;
    tr_retry_policy_t p;
    tr_retry_policy_defaults(&p);
    assert_int_equal(p.max_retries, 2);
    assert_int_equal(p.base_ms, 25);
    assert_int_equal(p.cap_ms, 1000);
    assert_true(p.retry_on & TR_RETRY_ON_CONNECT_FAILURE);
    assert_true(p.retry_on & TR_RETRY_ON_GATEWAY_ERROR);
    assert_false(p.retry_on & TR_RETRY_ON_5XX);
}

/* The ceiling doubles per attempt from the base and stops at the cap; the
 * random draw covers [0, ceiling]. */
static void test_backoff_bounds(void **state)
{
    (void)state;
    tr_retry_policy_t p;
    tr_retry_policy_defaults(&p);
    static const uint64_t ceilings[] = {25, 50, 100, 200, 400, 800, 1000, 1000, 1000};
    for (unsigned attempt = 1; attempt <= 9; attempt++) {
        uint64_t ceiling = ceilings[attempt - 1];
        assert_int_equal(tr_retry_backoff_ms(&p, attempt, ceiling), ceiling);
        assert_int_equal(tr_retry_backoff_ms(&p, attempt, ceiling + 1), 0);
        assert_int_equal(tr_retry_backoff_ms(&p, attempt, 0), 0);
        for (int i = 0; i < 1000; i++)
            assert_true(tr_retry_backoff_ms(&p, attempt, tr_retry_random()) <= ceiling);
    }
    /* Huge attempt numbers neither overflow nor exceed the cap. */
    assert_true(tr_retry_backoff_ms(&p, 4000000000u, UINT64_MAX) <= 1000);
}

/* Full jitter: the draws spread over the whole range, not bunched at the
 * ceiling. */
static void test_backoff_spread(void **state)
{
    (void)state;
    tr_retry_policy_t p;
    tr_retry_policy_defaults(&p);
    unsigned low = 0, high = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t d = tr_retry_backoff_ms(&p, 7, tr_retry_random()); /* ceiling 1000 */
        if (d < 250) low++;
        if (d > 750) high++;
    }
    assert_in_range(low, 2000, 3000);
    assert_in_range(high, 2000, 3000);
}

static void test_budget(void **state)
{
    (void)state;
    tr_retry_budget_t b;
    tr_retry_budget_init(&b);
    assert_int_equal(b.budget_percent, 20);
    assert_int_equal(b.min_concurrency, 3);

    /* Few requests: the minimum of 3 concurrent retries applies. */
    b.active_requests = 4;
    assert_true(tr_retry_budget_acquire(&b));
    assert_true(tr_retry_budget_acquire(&b));
    assert_true(tr_retry_budget_acquire(&b));
    assert_false(tr_retry_budget_acquire(&b));
    assert_int_equal(b.active_retries, 3);
    tr_retry_budget_release(&b);
    assert_true(tr_retry_budget_acquire(&b));

    /* Many requests: 20 % of them. */
    tr_retry_budget_init(&b);
    b.active_requests = 100;
    int granted = 0;
    while (tr_retry_budget_acquire(&b))
        granted++;
    assert_int_equal(granted, 20);

    /* Releasing more than was taken does not wrap around. */
    tr_retry_budget_init(&b);
    tr_retry_budget_release(&b);
    assert_int_equal(b.active_retries, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods),        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_backoff_bounds), cmocka_unit_test(test_backoff_spread),
        cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_upstream.c - the shared state of an upstream without any I/O: config
 * validation, instance selection (round robin, least request), outlier
 * ejection timing (growth, cap, decay, limits), health verdict thresholds,
 * breaker exposure and the metrics text. Time is passed explicitly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "kit/log.h"
#include "kit/upstream.h"
#include "kit/upstream_internal.h"

static tr_upstream_t *make(const char *name, size_t n, tr_lb_policy_t lb)
{
    static const char *const addrs[] = {"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003",
                                        "127.0.0.1:9004"};
    tr_upstream_config_t cfg;
    tr_upstream_config_defaults(&cfg);
    cfg.name = name;
    cfg.instances = addrs;
    cfg.ninstances = n;
    cfg.lb = lb;
    cfg.outlier_base_ejection_ms = 1000;
    cfg.outlier_max_ejection_ms = 3500;
    tr_upstream_t *up = NULL;
    assert_int_equal(tr_upstream_new(&cfg, &up), 0);
    return up;
}

static void test_config_validation(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        int rc;
    } cases[] = {
        {"127.0.0.1:80", 0},    {"localhost:8001", 0},     {"[::1]:8080", 0},
        {"127.0.0.1", -EINVAL}, {"127.0.0.1:0", -EINVAL},  {"127.0.0.1:65536", -EINVAL},
        {":80", -EINVAL},       {"127.0.0.1:8x", -EINVAL}, {"[::1:80", -EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tr_upstream_config_t cfg;
        tr_upstream_config_defaults(&cfg);
        cfg.name = "x";
        cfg.instances = &cases[i].addr;
        cfg.ninstances = 1;
        tr_upstream_t *up = NULL;
        int rc = tr_upstream_new(&cfg, &up);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            assert_string_equal(tr_upstream_name(up), "x");
            tr_upstream_release(up);
        }
    }
    tr_upstream_config_t cfg;
    tr_upstream_config_defaults(&cfg);
    tr_upstream_t *up = NULL;
    assert_int_equal(tr_upstream_new(&cfg, &up), -EINVAL); /* no name, no instances */
    const char *a = "127.0.0.1:1";
    cfg.instances = &a;
    cfg.ninstances = 1;
    assert_int_equal(tr_upstream_new(&cfg, &up), -EINVAL); /* no name */
    assert_null(up);
}

static void test_round_robin(void **state)
{
    (void)state;
    tr_upstream_t *up = make("rr", 3, TR_LB_ROUND_ROBIN);
    uint32_t outstanding[3] = {0};
    size_t cursor = 0, hits[3] = {0};
    for (int i = 0; i < 30; i++) {
        size_t pick;
        assert_int_equal(tr__upstream_pick(up, 0, &cursor, outstanding, &pick), 0);
        hits[pick]++;
    }
    assert_int_equal(hits[0], 10);
    assert_int_equal(hits[1], 10);
    assert_int_equal(hits[2], 10);
    tr_upstream_release(up);
}

static void test_least_request(void **state)
{
    (void)state;
    tr_upstream_t *up = make("lr", 3, TR_LB_LEAST_REQUEST);
    uint32_t outstanding[3] = {5, 1, 3};
    size_t cursor = 0, pick;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(tr__upstream_pick(up, 0, &cursor, outstanding, &pick), 0);
        assert_int_equal(pick, 1);
    }
    /* Ties are broken round robin. */
    uint32_t even[3] = {2, 2, 2};
    size_t hits[3] = {0};
    for (int i = 0; i < 30; i++) {
        assert_int_equal(tr__upstream_pick(up, 0, &cursor, even, &pick), 0);
        hits[pick]++;
    }
    assert_int_equal(hits[0], 10);
    assert_int_equal(hits[1], 10);
    tr_upstream_release(up);
}

static void fail_n(tr_upstream_t *up, size_t i, int n, uint64_t now)
{
    for (int k = 0; k < n; k++)
        tr__upstream_record(up, i, true, now);
}

static void test_ejection_timing(void **state)
{
    (void)state;
    tr_upstream_t *up = make("ej", 2, TR_LB_ROUND_ROBIN);
    tr_upstream_instance_info_t info;

    fail_n(up, 0, 4, 0);
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_false(info.ejected);
    tr__upstream_record(up, 0, true, 10);
    tr_upstream_instance_info(up, 0, 10, &info);
    assert_true(info.ejected);
    assert_int_equal(info.ejections, 1);
    assert_int_equal(info.ejected_until_ms, 1010); /* base 1000 x 1 */

    /* While ejected every pick goes to the other instance. */
    uint32_t outstanding[2] = {0};
    size_t cursor = 0, pick;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(tr__upstream_pick(up, 500, &cursor, outstanding, &pick), 0);
        assert_int_equal(pick, 1);
    }
    /* Failures of requests started before the ejection are not counted. */
    fail_n(up, 0, 10, 500);
    tr_upstream_instance_info(up, 0, 1010, &info);
    assert_false(info.ejected);
    assert_int_equal(info.ejections, 1);

    /* Back in service; it needs 5 new failures, and the second ejection
     * lasts twice as long. */
    fail_n(up, 0, 4, 1100);
    tr_upstream_instance_info(up, 0, 1100, &info);
    assert_false(info.ejected);
    tr__upstream_record(up, 0, true, 1100);
    tr_upstream_instance_info(up, 0, 1100, &info);
    assert_int_equal(info.ejected_until_ms, 3100);
    /* Third: 3 x 1000. Fourth: capped at 3500. */
    fail_n(up, 0, 5, 3100);
    tr_upstream_instance_info(up, 0, 3100, &info);
    assert_int_equal(info.ejected_until_ms, 6100);
    fail_n(up, 0, 5, 6100);
    tr_upstream_instance_info(up, 0, 6100, &info);
    assert_int_equal(info.ejected_until_ms, 9600);
    /* A long healthy stretch decays the multiplier (4 periods here): the next
     * ejection is back to one base period. */
    fail_n(up, 0, 5, 9600 + 4000);
    tr_upstream_instance_info(up, 0, 13600, &info);
    assert_int_equal(info.ejected_until_ms, 14600);
    assert_int_equal(info.ejections, 5);

    /* A success in between resets the consecutive count. */
    fail_n(up, 0, 4, 20000);
    tr__upstream_record(up, 0, false, 20000);
    fail_n(up, 0, 4, 20000);
    tr_upstream_instance_info(up, 0, 20000, &info);
    assert_false(info.ejected);
    tr_upstream_release(up);
}

static void test_ejection_limits(void **state)
{
    (void)state;
    /* A single instance is never ejected. */
    tr_upstream_t *one = make("one", 1, TR_LB_ROUND_ROBIN);
    tr_upstream_instance_info_t info;
    fail_n(one, 0, 50, 0);
    tr_upstream_instance_info(one, 0, 0, &info);
    assert_false(info.ejected);
    tr_upstream_release(one);

    /* Two instances at 50 %: one may go, not both. */
    tr_upstream_t *two = make("two", 2, TR_LB_ROUND_ROBIN);
    fail_n(two, 0, 5, 0);
    fail_n(two, 1, 5, 0);
    tr_upstream_instance_info(two, 0, 0, &info);
    assert_true(info.ejected);
    tr_upstream_instance_info(two, 1, 0, &info);
    assert_false(info.ejected);
    assert_true(tr_upstream_available(two, 0));

    /* An unhealthy partner: ejecting would leave nothing available. */
    tr_upstream_t *pair = make("pair", 2, TR_LB_ROUND_ROBIN);
    tr__upstream_health_report(pair, 1, false);
    tr__upstream_health_report(pair, 1, false);
    fail_n(pair, 0, 5, 0);
    tr_upstream_instance_info(pair, 0, 0, &info);
    assert_false(info.ejected);
    tr_upstream_release(two);
    tr_upstream_release(pair);
}

static void test_health_thresholds(void **state)
{
    (void)state;
    tr_upstream_t *up = make("hc", 2, TR_LB_ROUND_ROBIN);
    tr_upstream_instance_info_t info;
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_true(info.healthy); /* optimistic start */
    tr__upstream_health_report(up, 0, false);
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_true(info.healthy); /* one failure is not enough */
    tr__upstream_health_report(up, 0, true);
    tr__upstream_health_report(up, 0, false);
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_true(info.healthy); /* the streak was broken */
    tr__upstream_health_report(up, 0, false);
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_false(info.healthy);

    uint32_t outstanding[2] = {0};
    size_t cursor = 0, pick;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tr__upstream_pick(up, 0, &cursor, outstanding, &pick), 0);
        assert_int_equal(pick, 1);
    }
    tr__upstream_health_report(up, 1, false);
    tr__upstream_health_report(up, 1, false);
    assert_int_equal(tr__upstream_pick(up, 0, &cursor, outstanding, &pick), -ENOENT);
    assert_false(tr_upstream_available(up, 0));
    tr__upstream_health_report(up, 0, true); /* healthy after 1 success */
    assert_int_equal(tr__upstream_pick(up, 0, &cursor, outstanding, &pick), 0);
    assert_int_equal(pick, 0);
    tr_upstream_release(up);
}

/* /healthz's three states: UNKNOWN until a verdict (one failure of two is
 * none), UP after one, DOWN when nothing could be sent. */
static void test_health_states(void **state)
{
    (void)state;
    tr_upstream_t *up = make("states", 1, TR_LB_ROUND_ROBIN);
    tr_upstream_instance_info_t info;
    assert_int_equal(tr_upstream_health(up, 0), TR_UPSTREAM_UNKNOWN);
    tr__upstream_health_report(up, 0, false); /* unhealthy_threshold is 2 */
    assert_int_equal(tr_upstream_health(up, 0), TR_UPSTREAM_UNKNOWN);
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_false(info.checked);
    tr__upstream_health_report(up, 0, false);
    assert_int_equal(tr_upstream_health(up, 0), TR_UPSTREAM_DOWN);
    tr__upstream_health_report(up, 0, true);
    assert_int_equal(tr_upstream_health(up, 0), TR_UPSTREAM_UP);
    tr_upstream_instance_info(up, 0, 0, &info);
    assert_true(info.checked);
    tr_upstream_release(up);

    /* A first success is a verdict at once (healthy_threshold 1). */
    up = make("states2", 1, TR_LB_ROUND_ROBIN);
    tr__upstream_health_report(up, 0, true);
    assert_int_equal(tr_upstream_health(up, 0), TR_UPSTREAM_UP);
    tr_upstream_release(up);

    /* Without health checks there is never a verdict to wait for. */
    static const char *const addr = "127.0.0.1:9001";
    tr_upstream_config_t cfg;
    tr_upstream_config_defaults(&cfg);
    cfg.name = "nochecks";
    cfg.instances = &addr;
    cfg.ninstances = 1;
    cfg.health_path = NULL;
    assert_int_equal(tr_upstream_new(&cfg, &up), 0);
    assert_int_equal(tr_upstream_health(up, 0), TR_UPSTREAM_UP);
    tr_upstream_release(up);
}

/* A passing health check closes an open breaker before its cool-down is
 * over; a failing one leaves it open. */
static void test_health_check_closes_breaker(void **state)
{
    (void)state;
    tr_upstream_t *up = make("reopen", 1, TR_LB_ROUND_ROBIN);
    tr_breaker_t *b = tr__upstream_breaker(up);
    for (int i = 0; i < 5; i++)
        tr_breaker_record_failure(b, 100, false);
    assert_int_equal(tr_upstream_breaker_state(up, 200), TR_BREAKER_OPEN);
    assert_int_equal(tr_upstream_health(up, 200), TR_UPSTREAM_DOWN);
    tr__upstream_health_report(up, 0, false);
    assert_int_equal(tr_upstream_breaker_state(up, 200), TR_BREAKER_OPEN);
    tr__upstream_health_report(up, 0, true);
    assert_int_equal(tr_upstream_breaker_state(up, 200), TR_BREAKER_CLOSED); /* not at 5100 */
    assert_true(tr_upstream_available(up, 200));
    assert_int_equal(tr_breaker_allow(b, 200), TR_BREAKER_PASS);
    tr_upstream_release(up);

    /* An instance still marked unhealthy (healthy_threshold not reached)
     * does not close it. */
    static const char *const addr = "127.0.0.1:9001";
    tr_upstream_config_t cfg;
    tr_upstream_config_defaults(&cfg);
    cfg.name = "reopen2";
    cfg.instances = &addr;
    cfg.ninstances = 1;
    cfg.healthy_threshold = 2;
    assert_int_equal(tr_upstream_new(&cfg, &up), 0);
    b = tr__upstream_breaker(up);
    tr__upstream_health_report(up, 0, false);
    tr__upstream_health_report(up, 0, false); /* unhealthy */
    for (int i = 0; i < 5; i++)
        tr_breaker_record_failure(b, 100, false);
    tr__upstream_health_report(up, 0, true);
    assert_int_equal(tr_upstream_breaker_state(up, 200), TR_BREAKER_OPEN);
    tr__upstream_health_report(up, 0, true);
    assert_int_equal(tr_upstream_breaker_state(up, 200), TR_BREAKER_CLOSED);
    tr_upstream_release(up);
}

static void test_breaker_exposed(void **state)
{
    (void)state;
    tr_upstream_t *up = make("br", 1, TR_LB_ROUND_ROBIN);
    tr_breaker_t *b = tr__upstream_breaker(up);
    for (int i = 0; i < 5; i++)
        tr_breaker_record_failure(b, 100, false);
    assert_int_equal(tr_upstream_breaker_state(up, 200), TR_BREAKER_OPEN);
    assert_false(tr_upstream_available(up, 200));
    assert_int_equal(tr_upstream_breaker_state(up, 5200), TR_BREAKER_HALF_OPEN);
    assert_true(tr_upstream_available(up, 5200));
    tr_upstream_release(up);
}

static void test_metrics_text(void **state)
{
    (void)state;
    tr_upstream_t *up = make("metrics\"q", 2, TR_LB_ROUND_ROBIN);
    tr_upstream_t *gone = make("gone", 1, TR_LB_ROUND_ROBIN);
    tr_upstream_release(gone);
    fail_n(up, 1, 5, 0);
    tr__upstream_observe(up, 200, NULL, 0.003);
    tr__upstream_observe(up, 0, "timeout", 2.0);
    tr_buf_t out;
    tr_buf_init(&out, 1 << 20);
    assert_int_equal(tr_upstream_render_metrics(&out, 10), 0);
    const char *t = out.data;
    assert_non_null(strstr(t, "# TYPE upstream_breaker_state gauge\n"));
    assert_non_null(strstr(t, "upstream_breaker_state{upstream=\"metrics\\\"q\"} 0\n"));
    assert_non_null(strstr(
        t, "upstream_instance_ejected{upstream=\"metrics\\\"q\",instance=\"127.0.0.1:9002\"} 1\n"));
    assert_non_null(strstr(
        t, "upstream_instance_healthy{upstream=\"metrics\\\"q\",instance=\"127.0.0.1:9001\"} 1\n"));
    assert_non_null(strstr(
        t, "upstream_request_duration_seconds_bucket{upstream=\"metrics\\\"q\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(
        t, "upstream_request_duration_seconds_bucket{upstream=\"metrics\\\"q\",le=\"+Inf\"} 2\n"));
    assert_non_null(
        strstr(t, "upstream_request_duration_seconds_count{upstream=\"metrics\\\"q\"} 2\n"));
    assert_null(strstr(t, "gone"));
    tr_buf_free(&out);
    tr_upstream_release(up);
}

int main(void)
{
    tr_log_init("test", TR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_least_request),
        cmocka_unit_test(test_ejection_timing),
        cmocka_unit_test(test_ejection_limits),
        cmocka_unit_test(test_health_thresholds),
        cmocka_unit_test(test_health_states),
        cmocka_unit_test(test_health_check_closes_breaker),
        cmocka_unit_test(test_breaker_exposed),
        cmocka_unit_test(test_metrics_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

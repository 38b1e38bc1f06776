/* test_metrics.c - the metrics registry and its Prometheus text exposition
 * (kit/metrics.h): exact sample lines for counters, gauges and the request
 * histogram, label and help escaping, the exposition rules promtool checks,
 * concurrent updates, the cardinality cap and the process_* metrics.
 *
 * The registry is process-wide, so every test uses its own metric names or
 * route label values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kit/metrics.h"

/* Renders the registry; the caller frees the result. */
static char *render(void)
{
    tr_buf_t b;
    tr_buf_init(&b, 0);
    assert_int_equal(tr_metrics_render(&b), 0);
    char *text = tr_buf_detach(&b, NULL);
    assert_non_null(text);
    return text;
}

/* Asserts that text contains this exact line. */
static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return;
    }
    fail_msg("line not found: %s\n--- in ---\n%s", line, text);
}

/* The value of the sample line that starts with prefix ("name " or
 * "name{...} "), or fails. */
static double sample_value(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; (p = strstr(p, prefix)) != NULL; p++) {
        if (p == text || p[-1] == '\n') return strtod(p + n, NULL);
    }
    fail_msg("no sample %s", prefix);
    return -1;
}

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
    size_t m = strlen(suffix);
    return len >= m && memcmp(s + len - m, suffix, m) == 0;
}

/* The rules of `promtool check metrics` that our output could break: HELP and
 * TYPE once per family, TYPE right after HELP and before the samples, every
 * sample belongs to the family announced last, counters end in _total and no
 * other type does, values are numbers. */
static void assert_exposition_valid(const char *text)
{
    char family[128] = "", type[16] = "";
    char seen[4096] = " ";
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char line[1024];
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof line);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;

        char name[128], what[16];
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
            char key[132];
            snprintf(key, sizeof key, " %s ", name);
            if (strstr(seen, key)) fail_msg("family %s appears twice", name);
            assert_true(strlen(seen) + strlen(key) < sizeof seen);
            strcat(seen, key + 1);
            snprintf(family, sizeof family, "%s", name);
            type[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s %15s", name, what), 2);
            assert_string_equal(name, family);
            assert_string_equal(type, "");
            snprintf(type, sizeof type, "%s", what);
            bool total = has_suffix(name, strlen(name), "_total");
            if (strcmp(type, "counter") == 0)
                assert_true(total);
            else
                assert_false(total);
            continue;
        }
        assert_true(line[0] != '#');
        assert_true(type[0] != '\0');
        size_t name_len = strcspn(line, "{ ");
        size_t fam_len = strlen(family);
        bool ok = name_len == fam_len && memcmp(line, family, fam_len) == 0;
        if (!ok && strcmp(type, "histogram") == 0 && name_len > fam_len &&
            memcmp(line, family, fam_len) == 0) {
            const char *suffix = line + fam_len;
            size_t sl = name_len - fam_len;
            ok = (sl == 7 && memcmp(suffix, "_bucket", 7) == 0) ||
                 (sl == 4 && memcmp(suffix, "_sum", 4) == 0) ||
                 (sl == 6 && memcmp(suffix, "_count", 6) == 0);
        }
        if (!ok) fail_msg("sample outside its family %s: %s", family, line);
        const char *value = strrchr(line, ' ');
        assert_non_null(value);
        char *end;
        strtod(value + 1, &end);
        if (*end != '\0' || end == value + 1) fail_msg("bad value: %s", line);
    }
}

static void test_counter_unlabelled(void **state)
{
    (void)state;
    tr_counter_t *c = tr_counter_register("test_jobs_total", "Jobs done.", NULL);
    assert_ptr_equal(tr_counter_register("test_jobs_total", "Jobs done.", NULL), c);

    char *text = render();
    assert_non_null(strstr(text, "# HELP test_jobs_total Jobs done.\n"
                                 "# TYPE test_jobs_total counter\n"
                                 "test_jobs_total 0\n"));
    free(text);

    tr_counter_inc(c, NULL);
    tr_counter_add(c, 41, NULL);
    text = render();
    assert_line(text, "test_jobs_total 42");
    assert_exposition_valid(text);
    free(text);
}

static void test_counter_labelled_and_escaping(void **state)
{
    (void)state;
    tr_counter_t *c = tr_counter_register("test_results_total",
                                          "Results by kind\\type\nsecond line.", "result, kind");
    char *text = render();
    /* A labelled family without series yet shows only its header. */
    assert_non_null(strstr(text, "# HELP test_results_total Results by kind\\\\type\\nsecond "
                                 "line.\n# TYPE test_results_total counter\n# HELP"));
    free(text);

    const char *const ok_a[] = {"ok", "a"};
    const char *const fail_b[] = {"fail", "b"};
    const char *const nasty[] = {"back\\slash \"quoted\"\nnewline", ""};
    const char *const with_null[] = {"ok", NULL};
    tr_counter_add(c, 2, ok_a);
    tr_counter_inc(c, fail_b);
    tr_counter_inc(c, ok_a);
    tr_counter_add(c, 5, nasty);
    tr_counter_inc(c, with_null);

    text = render();
    assert_line(text, "test_results_total{result=\"ok\",kind=\"a\"} 3");
    assert_line(text, "test_results_total{result=\"fail\",kind=\"b\"} 1");
    assert_line(
        text, "test_results_total{result=\"back\\\\slash \\\"quoted\\\"\\nnewline\",kind=\"\"} 5");
    assert_line(text, "test_results_total{result=\"ok\",kind=\"\"} 1");
    assert_exposition_valid(text);
    free(text);
}

static void test_gauge(void **state)
{
    (void)state;
    tr_gauge_t *g = tr_gauge_register("test_queue_depth", "Items waiting.");
    assert_ptr_equal(tr_gauge_register("test_queue_depth", "Items waiting."), g);
    tr_gauge_set(g, 5);
    tr_gauge_add(g, -2);
    char *text = render();
    assert_non_null(strstr(text, "# HELP test_queue_depth Items waiting.\n"
                                 "# TYPE test_queue_depth gauge\n"
                                 "test_queue_depth 3\n"));
    free(text);
    tr_gauge_set(g, -4);
    text = render();
    assert_line(text, "test_queue_depth -4");
    free(text);
}

static void test_request_histogram(void **state)
{
    (void)state;
    const char *route = "/api/hist/{id}";
    tr_metrics_observe_request(route, "GET", 200, 0.003);
    tr_metrics_observe_request(route, "GET", 200, 0.0005); /* le is inclusive */
    tr_metrics_observe_request(route, "GET", 404, 20.0);   /* only +Inf */
    tr_metrics_observe_request(route, "POST", 201, 0.25);
    tr_metrics_observe_request(route, "POST", 500, -1.0); /* clamped to 0 */

    char *text = render();
    assert_non_null(strstr(text, "# TYPE http_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE http_request_duration_seconds histogram\n"));
    assert_line(text,
                "http_requests_total{route=\"/api/hist/{id}\",method=\"GET\",status=\"200\"} 2");
    assert_line(text,
                "http_requests_total{route=\"/api/hist/{id}\",method=\"GET\",status=\"404\"} 1");
    assert_line(text,
                "http_requests_total{route=\"/api/hist/{id}\",method=\"POST\",status=\"201\"} 1");
    assert_line(text,
                "http_requests_total{route=\"/api/hist/{id}\",method=\"POST\",status=\"500\"} 1");

    static const struct {
        const char *le;
        int get;
        int post;
    } buckets[] = {
        {"0.0005", 1, 1}, {"0.001", 1, 1}, {"0.0025", 1, 1}, {"0.005", 2, 1}, {"0.01", 2, 1},
        {"0.025", 2, 1},  {"0.05", 2, 1},  {"0.1", 2, 1},    {"0.25", 2, 2},  {"0.5", 2, 2},
        {"1", 2, 2},      {"2.5", 2, 2},   {"5", 2, 2},      {"10", 2, 2},    {"+Inf", 3, 2},
    };
    char line[256];
    for (size_t i = 0; i < sizeof buckets / sizeof buckets[0]; i++) {
        snprintf(line, sizeof line,
                 "http_request_duration_seconds_bucket{route=\"/api/hist/{id}\",method=\"GET\","
                 "le=\"%s\"} %d",
                 buckets[i].le, buckets[i].get);
        assert_line(text, line);
        snprintf(line, sizeof line,
                 "http_request_duration_seconds_bucket{route=\"/api/hist/{id}\",method=\"POST\","
                 "le=\"%s\"} %d",
                 buckets[i].le, buckets[i].post);
        assert_line(text, line);
    }
    assert_line(text, "http_request_duration_seconds_sum{route=\"/api/hist/{id}\",method=\"GET\"} "
                      "20.003500000");
    assert_line(text,
                "http_request_duration_seconds_count{route=\"/api/hist/{id}\",method=\"GET\"} 3");
    assert_line(text, "http_request_duration_seconds_sum{route=\"/api/hist/{id}\",method=\"POST\"} "
                      "0.250000000");
    assert_line(text,
                "http_request_duration_seconds_count{route=\"/api/hist/{id}\",method=\"POST\"} 2");
    assert_exposition_valid(text);
    free(text);
}

static void test_in_flight(void **state)
{
    (void)state;
    char *text = render();
    double before = sample_value(text, "http_requests_in_flight ");
    free(text);
    tr_metrics_in_flight(1);
    tr_metrics_in_flight(1);
    tr_metrics_in_flight(-1);
    text = render();
    assert_non_null(strstr(text, "# TYPE http_requests_in_flight gauge\n"));
    assert_true(sample_value(text, "http_requests_in_flight ") == before + 1);
    free(text);
    tr_metrics_in_flight(-1);
}

enum { THREADS = 4, PER_THREAD = 100000 };

static tr_counter_t *concurrent_counter;

static void *hammer(void *arg)
{
    (void)arg;
    static const char *const values[][1] = {{"x"}, {"y"}, {"z"}};
    for (int i = 0; i < PER_THREAD; i++) {
        tr_counter_inc(concurrent_counter, values[i % 3]);
        if (i % 100 == 0) tr_metrics_observe_request("/api/concurrent", "PUT", 204, 0.002);
    }
    return NULL;
}

static void test_concurrent_increments(void **state)
{
    (void)state;
    concurrent_counter = tr_counter_register("test_concurrent_total", "Concurrent.", "shard");
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    /* Rendering while the threads run must be safe too. */
    for (int i = 0; i < 20; i++) {
        char *text = render();
        assert_exposition_valid(text);
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);

    char *text = render();
    double x = sample_value(text, "test_concurrent_total{shard=\"x\"} ");
    double y = sample_value(text, "test_concurrent_total{shard=\"y\"} ");
    double z = sample_value(text, "test_concurrent_total{shard=\"z\"} ");
    assert_true(x + y + z == (double)THREADS * PER_THREAD);
    assert_true(x == (double)THREADS * 33334);
    /* One series per label value, even though all threads created them at once. */
    assert_int_equal(strstr(strstr(text, "test_concurrent_total{shard=\"x\"}") + 1,
                            "test_concurrent_total{shard=\"x\"}"),
                     NULL);
    assert_line(text,
                "http_request_duration_seconds_count{route=\"/api/concurrent\",method=\"PUT\"} "
                "4000");
    assert_line(text, "http_request_duration_seconds_bucket{route=\"/api/concurrent\","
                      "method=\"PUT\",le=\"+Inf\"} 4000");
    assert_line(text, "http_request_duration_seconds_sum{route=\"/api/concurrent\",method=\"PUT\"} "
                      "8.000000000");
    free(text);
}

static void test_cardinality_cap(void **state)
{
    (void)state;
    tr_counter_t *c = tr_counter_register("test_cardinality_total", "Capped.", "id");
    for (int i = 0; i < 2100; i++) {
        char id[16];
        snprintf(id, sizeof id, "id%d", i);
        const char *const labels[] = {id};
        tr_counter_inc(c, labels);
    }
    char long_value[400];
    memset(long_value, 'v', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    const char *const first[] = {"id0"};
    tr_counter_inc(c, first);

    char *text = render();
    assert_line(text, "test_cardinality_total{id=\"id0\"} 2");
    assert_line(text, "test_cardinality_total{id=\"id1999\"} 1");
    assert_null(strstr(text, "test_cardinality_total{id=\"id2000\"}"));
    assert_line(text, "test_cardinality_total{id=\"other\"} 100");
    free(text);

    /* Label values are cut to a bounded length. */
    tr_counter_t *l = tr_counter_register("test_long_label_total", "Long.", "v");
    const char *const lv[] = {long_value};
    tr_counter_inc(l, lv);
    text = render();
    const char *p = strstr(text, "test_long_label_total{v=\"");
    assert_non_null(p);
    p += strlen("test_long_label_total{v=\"");
    assert_int_equal(strcspn(p, "\""), 128);
    free(text);
}

static void test_process_metrics(void **state)
{
    (void)state;
    char *text = render();
    static const char *const families[][2] = {
        {"process_cpu_seconds_total", "counter"},
        {"process_resident_memory_bytes", "gauge"},
        {"process_virtual_memory_bytes", "gauge"},
        {"process_start_time_seconds", "gauge"},
        {"process_open_fds", "gauge"},
        {"process_max_fds", "gauge"},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char type_line[128];
        snprintf(type_line, sizeof type_line, "# TYPE %s %s", families[i][0], families[i][1]);
        assert_line(text, type_line);
    }
    assert_true(sample_value(text, "process_cpu_seconds_total ") >= 0);
    double rss = sample_value(text, "process_resident_memory_bytes ");
    double vsz = sample_value(text, "process_virtual_memory_bytes ");
    assert_true(rss > 1024 * 1024);
    assert_true(vsz >= rss);
    double start = sample_value(text, "process_start_time_seconds ");
    double now = (double)time(NULL);
    assert_true(start > now - 86400 && start <= now + 2);
    assert_true(sample_value(text, "process_open_fds ") >= 3);
    assert_true(sample_value(text, "process_max_fds ") >= sample_value(text, "process_open_fds "));
    assert_exposition_valid(text);
    free(text);
}

static void test_render_too_big(void **state)
{
    (void)state;
    tr_buf_t b;
    tr_buf_init(&b, 200);
    assert_int_equal(tr_buf_append_str(&b, "keep"), 0);
    assert_int_equal(tr_metrics_render(&b), TR_ETOOBIG);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    tr_buf_free(&b);
}

/* Whatever the limit, the exposition is all or nothing: below the full
 * length every cut point is TR_ETOOBIG with the buffer as it was (no half
 * family, no half line); with room for it, it is all there. The process_*
 * values change between renders, so a small band around the length may go
 * either way. */
static void test_render_all_or_nothing_at_every_cut(void **state)
{
    (void)state;
    tr_counter_t *c = tr_counter_register("cut_requests_total", "Help with \\ and \n.", "route");
    tr_counter_inc(c, (const char *[]){"/a \"quoted\" \\ route"});
    tr_gauge_set(tr_gauge_register("cut_level", NULL), -3);
    tr_metrics_observe_request("/cut/{id}", "GET", 200, 0.0042);
    char *full = render();
    size_t len = strlen(full);
    const size_t band = 64;
    /* Cut right before every line end and label brace or comma (the
     * boundaries of the writes), and every 97 bytes between. */
    for (size_t i = 0; i < len + band; i++) {
        char ch = i < len ? full[i] : '\n';
        if (ch != '\n' && ch != '{' && ch != '}' && ch != ',' && i % 97 != 0) continue;
        size_t max = 4 + i;
        tr_buf_t b;
        tr_buf_init(&b, max);
        assert_int_equal(tr_buf_append_str(&b, "keep"), 0);
        int rc = tr_metrics_render(&b);
        if (max + band < len + 4) {
            if (rc != TR_ETOOBIG) fail_msg("limit %zu of %zu: rc %d", max, len, rc);
            assert_int_equal(b.len, 4);
            assert_string_equal(b.data, "keep");
        } else if (rc == 0) {
            assert_true(b.len > 4 && b.data[b.len - 1] == '\n');
        } else {
            assert_int_equal(rc, TR_ETOOBIG);
            assert_int_equal(b.len, 4);
        }
        tr_buf_free(&b);
    }
    free(full);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_unlabelled),
        cmocka_unit_test(test_counter_labelled_and_escaping),
        cmocka_unit_test(test_gauge),
        cmocka_unit_test(test_request_histogram),
        cmocka_unit_test(test_in_flight),
        cmocka_unit_test(test_concurrent_increments),
        cmocka_unit_test(test_cardinality_cap),
        cmocka_unit_test(test_process_metrics),
        cmocka_unit_test(test_render_too_big),
        cmocka_unit_test(test_render_all_or_nothing_at_every_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

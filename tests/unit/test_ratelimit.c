/* test_ratelimit.c - the local rate limiter (kit/ratelimit.h): GCRA math with
 * an injected clock (burst, steady rate, Retry-After and reset values), keys
 * and policies kept apart, policy validation and updates, four threads never
 * admitting more than the burst, the memory bound under a million unique
 * keys, the decision metrics, the per-loop API without Redis, and redis://
 * URL parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/config.h"
#include "kit/metrics.h"
#include "kit/ratelimit.h"
#include "kit/ratelimit_internal.h"

#define MS 1000000LL

static _Atomic int64_t fake_now;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return atomic_load(&fake_now);
}

static tr_ratelimit_t *make_limiter(size_t max_keys)
{
    tr_ratelimit_options_t opts = {.max_keys = max_keys, .clock_ns = fake_clock};
    tr_ratelimit_t *rl = NULL;
    atomic_store(&fake_now, 1000 * MS);
    assert_int_equal(tr_ratelimit_create(&opts, &rl), 0);
    assert_non_null(rl);
    return rl;
}

static const tr_ratelimit_policy_t *add_policy(tr_ratelimit_t *rl, const char *name, double rate,
                                               uint32_t burst, tr_ratelimit_key_kind_t kind)
{
    tr_ratelimit_policy_config_t cfg = {.name = name, .rate = rate, .burst = burst, .key = kind};
    const tr_ratelimit_policy_t *p = NULL;
    assert_int_equal(tr_ratelimit_policy_set(rl, &cfg, &p), 0);
    assert_non_null(p);
    return p;
}

/* ---- GCRA math ----------------------------------------------------------- */

typedef struct step {
    int64_t advance_ms; /* clock moves this much before the request */
    int repeat;         /* identical requests at that instant */
    int allowed;
    uint32_t remaining;      /* of the last repeat */
    uint64_t reset_ms;       /* of the last repeat */
    uint64_t retry_after_ms; /* of the last repeat */
    uint32_t reset_s;
    uint32_t retry_after_s;
} step_t;

typedef struct gcra_case {
    const char *name;
    double rate;
    uint32_t burst;
    step_t steps[8];
} gcra_case_t;

static const gcra_case_t gcra_cases[] = {
    {"10/s burst 20 (login default)",
     10,
     20,
     {
         {0, 1, 1, 19, 100, 0, 1, 0},     /* first request: one interval used */
         {0, 19, 1, 0, 2000, 0, 2, 0},    /* the rest of the burst at once */
         {0, 1, 0, 0, 2000, 100, 2, 1},   /* over: wait one interval */
         {50, 1, 0, 0, 1950, 50, 2, 1},   /* half an interval later */
         {50, 1, 1, 0, 2000, 0, 2, 0},    /* a token has dripped in */
         {0, 1, 0, 0, 2000, 100, 2, 1},   /* and is gone */
         {10000, 1, 1, 19, 100, 0, 1, 0}, /* idle: full burst again */
         {-1, 0, 0, 0, 0, 0, 0, 0},
     }},
    {"1/s burst 1",
     1,
     1,
     {
         {0, 1, 1, 0, 1000, 0, 1, 0},
         {0, 1, 0, 0, 1000, 1000, 1, 1},
         {999, 1, 0, 0, 1, 1, 1, 1},
         {1, 1, 1, 0, 1000, 0, 1, 0},
         {-1, 0, 0, 0, 0, 0, 0, 0},
     }},
    {"0.5/s burst 2: Retry-After in whole seconds",
     0.5,
     2,
     {
         {0, 1, 1, 1, 2000, 0, 2, 0},
         {0, 1, 1, 0, 4000, 0, 4, 0},
         {0, 1, 0, 0, 4000, 2000, 4, 2},
         {500, 1, 0, 0, 3500, 1500, 4, 2},
         {1500, 1, 1, 0, 4000, 0, 4, 0},
         {-1, 0, 0, 0, 0, 0, 0, 0},
     }},
    {"3/s burst 1: durations round up",
     3,
     1,
     {
         {0, 1, 1, 0, 334, 0, 1, 0},
         {0, 1, 0, 0, 334, 334, 1, 1},
         {333, 1, 0, 0, 1, 1, 1, 1},
         {1, 1, 1, 0, 334, 0, 1, 0},
         {-1, 0, 0, 0, 0, 0, 0, 0},
     }},
};

static void test_gcra_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof gcra_cases / sizeof gcra_cases[0]; c++) {
        const gcra_case_t *tc = &gcra_cases[c];
        tr_ratelimit_t *rl = make_limiter(0);
        const tr_ratelimit_policy_t *p =
            add_policy(rl, "gcra", tc->rate, tc->burst, TR_RATELIMIT_KEY_IP);
        for (size_t s = 0; tc->steps[s].advance_ms >= 0; s++) {
            const step_t *st = &tc->steps[s];
            atomic_fetch_add(&fake_now, st->advance_ms * MS);
            tr_ratelimit_decision_t d;
            for (int r = 0; r < st->repeat; r++) {
                assert_int_equal(tr_ratelimit_check_local(rl, p, "198.51.100.4", &d), 0);
                if ((d.result == TR_RATELIMIT_ALLOWED) != st->allowed)
                    fail_msg("%s step %zu repeat %d: result %d", tc->name, s, r, d.result);
            }
            if (d.remaining != st->remaining || d.reset_ms != st->reset_ms ||
                d.retry_after_ms != st->retry_after_ms || d.reset_s != st->reset_s ||
                d.retry_after_s != st->retry_after_s || d.limit != tc->burst ||
                d.source != TR_RATELIMIT_SOURCE_LOCAL)
                fail_msg("%s step %zu: remaining %u reset %llums/%us retry %llums/%us limit %u",
                         tc->name, s, d.remaining, (unsigned long long)d.reset_ms, d.reset_s,
                         (unsigned long long)d.retry_after_ms, d.retry_after_s, d.limit);
        }
        tr_ratelimit_free(rl);
    }
}

/* A client sending one request every millisecond for 10 s against 10/s with a
 * burst of 20 gets the burst, then exactly one request per 100 ms. */
static void test_burst_then_steady_rate(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_limiter(0);
    const tr_ratelimit_policy_t *p = add_policy(rl, "steady", 10, 20, TR_RATELIMIT_KEY_USER);
    int admitted = 0, admitted_first_second = 0;
    int64_t last_admit_ms = -1;
    for (int64_t t = 0; t < 10000; t++) {
        tr_ratelimit_decision_t d;
        assert_int_equal(tr_ratelimit_check_local(rl, p, "user-1", &d), 0);
        if (d.result == TR_RATELIMIT_ALLOWED) {
            admitted++;
            if (t < 1000) admitted_first_second++;
            /* After the burst, admissions are exactly one interval apart. */
            if (admitted > 21) assert_int_equal(t - last_admit_ms, 100);
            last_admit_ms = t;
        } else {
            /* Retry-After never promises more than the actual wait. */
            assert_true(d.retry_after_ms >= 1 && d.retry_after_ms <= 100);
        }
        atomic_fetch_add(&fake_now, MS);
    }
    assert_int_equal(admitted, 20 + 99);
    assert_int_equal(admitted_first_second, 20 + 9);
    tr_ratelimit_free(rl);
}

static void test_keys_and_policies_are_separate(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_limiter(0);
    const tr_ratelimit_policy_t *a = add_policy(rl, "a", 1, 2, TR_RATELIMIT_KEY_IP);
    const tr_ratelimit_policy_t *b = add_policy(rl, "b", 1, 2, TR_RATELIMIT_KEY_IP);
    const tr_ratelimit_policy_t *k = add_policy(rl, "keys", 1, 1, TR_RATELIMIT_KEY_API_KEY);
    tr_ratelimit_decision_t d;

    for (int i = 0; i < 2; i++) {
        assert_int_equal(tr_ratelimit_check_local(rl, a, "10.0.0.1", &d), 0);
        assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    }
    assert_int_equal(tr_ratelimit_check_local(rl, a, "10.0.0.1", &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_LIMITED);
    /* Same key, other policy; same policy, other key; the empty key. */
    assert_int_equal(tr_ratelimit_check_local(rl, b, "10.0.0.1", &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(tr_ratelimit_check_local(rl, a, "10.0.0.2", &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(tr_ratelimit_check_local(rl, a, "", &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);

    /* Long keys are digested: two that share their first 45+ bytes differ. */
    char long1[200], long2[200];
    memset(long1, 'x', sizeof long1 - 1);
    long1[sizeof long1 - 1] = '\0';
    memcpy(long2, long1, sizeof long2);
    long2[150] = 'y';
    assert_int_equal(tr_ratelimit_check_local(rl, k, long1, &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(tr_ratelimit_check_local(rl, k, long1, &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_LIMITED);
    assert_int_equal(tr_ratelimit_check_local(rl, k, long2, &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);

    /* An API key is never stored as it is. */
    tr__rl_key_t nk;
    tr__ratelimit_key(k, "tk_live_secret", &nk);
    assert_true(nk.len & TR__RL_KEY_DIGEST);
    assert_null(memmem(nk.bytes, sizeof nk.bytes, "secret", 6));
    tr__ratelimit_key(a, "10.0.0.1", &nk);
    assert_int_equal(nk.len, 8);
    assert_memory_equal(nk.bytes, "10.0.0.1", 8);

    assert_int_equal(tr_ratelimit_check_local(rl, NULL, "x", &d), -EINVAL);
    assert_int_equal(tr_ratelimit_check_local(rl, a, NULL, &d), -EINVAL);
    tr_ratelimit_free(rl);
}

static void test_policy_validation_and_update(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_limiter(0);
    static const tr_ratelimit_policy_config_t bad[] = {
        {NULL, 1, 1, TR_RATELIMIT_KEY_IP},
        {"", 1, 1, TR_RATELIMIT_KEY_IP},
        {"has space", 1, 1, TR_RATELIMIT_KEY_IP},
        {"x", 0, 1, TR_RATELIMIT_KEY_IP},
        {"x", -1, 1, TR_RATELIMIT_KEY_IP},
        {"x", 1e7, 1, TR_RATELIMIT_KEY_IP},
        {"x", 1, 0, TR_RATELIMIT_KEY_IP},
        {"x", 1, 2000000, TR_RATELIMIT_KEY_IP},
        {"x", 1, 1, (tr_ratelimit_key_kind_t)7},
        {"x12345678901234567890123456789012345678901234567890123456789012345", 1, 1,
         TR_RATELIMIT_KEY_IP},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tr_ratelimit_policy_set(rl, &bad[i], NULL), -EINVAL);
    assert_null(tr_ratelimit_policy_find(rl, "x"));

    const tr_ratelimit_policy_t *p = add_policy(rl, "auth.login-v1", 10, 20, TR_RATELIMIT_KEY_IP);
    assert_ptr_equal(tr_ratelimit_policy_find(rl, "auth.login-v1"), p);
    assert_string_equal(tr_ratelimit_policy_name(p), "auth.login-v1");
    assert_int_equal(tr_ratelimit_policy_key_kind(p), TR_RATELIMIT_KEY_IP);
    assert_true(tr_ratelimit_policy_rate(p) == 10);
    assert_int_equal(tr_ratelimit_policy_burst(p), 20);

    tr_ratelimit_decision_t d;
    for (int i = 0; i < 20; i++)
        assert_int_equal(tr_ratelimit_check_local(rl, p, "ip", &d), 0);
    assert_int_equal(d.remaining, 0);
    /* Update in place: same handle, new burst, counters kept. */
    const tr_ratelimit_policy_t *q = add_policy(rl, "auth.login-v1", 10, 40, TR_RATELIMIT_KEY_USER);
    assert_ptr_equal(p, q);
    assert_int_equal(tr_ratelimit_policy_burst(p), 40);
    assert_int_equal(tr_ratelimit_policy_key_kind(p), TR_RATELIMIT_KEY_USER);
    assert_int_equal(tr_ratelimit_check_local(rl, p, "ip", &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(d.limit, 40);
    assert_int_equal(d.remaining, 19);

    tr_ratelimit_key_kind_t kind;
    static const char *const names[] = {"ip", "user", "api_key"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tr_ratelimit_key_kind_parse(names[i], &kind), 0);
        assert_int_equal(kind, i);
        assert_string_equal(tr_ratelimit_key_kind_name(kind), names[i]);
    }
    assert_int_equal(tr_ratelimit_key_kind_parse("IP", &kind), -EINVAL);
    assert_int_equal(tr_ratelimit_key_kind_parse("", &kind), -EINVAL);

    char name[16];
    for (int i = 1; i < TR__RL_MAX_POLICIES; i++) {
        snprintf(name, sizeof name, "p%d", i);
        add_policy(rl, name, 1, 1, TR_RATELIMIT_KEY_IP);
    }
    tr_ratelimit_policy_config_t extra = {"one-too-many", 1, 1, TR_RATELIMIT_KEY_IP};
    assert_int_equal(tr_ratelimit_policy_set(rl, &extra, NULL), -ENOSPC);
    assert_non_null(tr_ratelimit_policy_find(rl, "p1023"));
    tr_ratelimit_free(rl);
}

/* ---- concurrency --------------------------------------------------------- */

typedef struct hammer {
    tr_ratelimit_t *rl;
    const tr_ratelimit_policy_t *p;
    int allowed[4];
} hammer_t;

static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    static const char *const keys[] = {"k0", "k1", "k2", "k3"};
    int *allowed = tr_xcalloc(4, sizeof(int));
    for (int i = 0; i < 40000; i++) {
        tr_ratelimit_decision_t d;
        int k = i % 4;
        if (tr_ratelimit_check_local(h->rl, h->p, keys[k], &d) != 0) abort();
        if (d.result == TR_RATELIMIT_ALLOWED) allowed[k]++;
    }
    return allowed;
}

/* With the clock frozen nothing refills, so across 4 threads each key must
 * admit exactly its burst: one more would be an over-admission race. */
static void test_four_threads_never_over_admit(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_limiter(0);
    hammer_t h = {.rl = rl, .p = add_policy(rl, "hammer", 0.001, 1000, TR_RATELIMIT_KEY_IP)};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h), 0);
    int total[4] = {0};
    for (int i = 0; i < 4; i++) {
        int *allowed = NULL;
        assert_int_equal(pthread_join(th[i], (void **)&allowed), 0);
        for (int k = 0; k < 4; k++)
            total[k] += allowed[k];
        free(allowed);
    }
    for (int k = 0; k < 4; k++)
        assert_int_equal(total[k], 1000);
    tr_ratelimit_free(rl);
}

/* ---- memory bound -------------------------------------------------------- */

static void test_unique_key_flood_is_bounded(void **state)
{
    (void)state;
    const size_t max_keys = 10000;
    tr_ratelimit_t *rl = make_limiter(max_keys);
    const tr_ratelimit_policy_t *p = add_policy(rl, "flood", 0.01, 5, TR_RATELIMIT_KEY_IP);
    tr_ratelimit_decision_t d;

    /* A busy client spends its whole burst first. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(tr_ratelimit_check_local(rl, p, "busy", &d), 0);
    assert_int_equal(d.remaining, 0);

    char key[32];
    size_t peak = 0;
    for (int i = 0; i < 1000000; i++) {
        snprintf(key, sizeof key, "198.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        snprintf(key + strlen(key), sizeof key - strlen(key), "/%d", i);
        assert_int_equal(tr_ratelimit_check_local(rl, p, key, &d), 0);
        assert_int_equal(d.result, TR_RATELIMIT_ALLOWED); /* every flood key is fresh */
        if (i % 100000 == 0) {
            size_t n = tr__ratelimit_local_keys(rl);
            if (n > peak) peak = n;
        }
        if (i % 1000 == 0) atomic_fetch_add(&fake_now, MS); /* 1 s over the flood */
    }
    size_t keys = tr__ratelimit_local_keys(rl);
    assert_true(keys <= max_keys);
    assert_true(peak <= max_keys);
    assert_true(keys > max_keys / 2); /* the table was used, not emptied */
    size_t bytes = tr__ratelimit_local_bytes(rl);
    assert_true(bytes <= tr__ratelimit_local_max_bytes(rl));
    assert_true(bytes <= max_keys * 64 * 4); /* at most 4 slots of 64 bytes per key */

    /* The flood evicted keys closest to fresh, not the busy client's. */
    assert_int_equal(tr_ratelimit_check_local(rl, p, "busy", &d), 0);
    assert_int_equal(d.result, TR_RATELIMIT_LIMITED);

    /* Once every key is idle, new keys reuse the same memory. */
    atomic_fetch_add(&fake_now, 3600 * 1000 * MS);
    for (int i = 0; i < 50000; i++) {
        snprintf(key, sizeof key, "later-%d", i);
        assert_int_equal(tr_ratelimit_check_local(rl, p, key, &d), 0);
        assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    }
    assert_true(tr__ratelimit_local_keys(rl) <= max_keys);
    assert_int_equal(tr__ratelimit_local_bytes(rl), bytes);
    tr_ratelimit_free(rl);
}

/* ---- metrics ------------------------------------------------------------- */

static char *render(void)
{
    tr_buf_t b;
    tr_buf_init(&b, 0);
    assert_int_equal(tr_metrics_render(&b), 0);
    char *text = tr_buf_detach(&b, NULL);
    assert_non_null(text);
    return text;
}

static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return;
    fail_msg("line not found: %s\n--- in ---\n%s", line, text);
}

static void test_decision_metrics(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_limiter(0);
    const tr_ratelimit_policy_t *p = add_policy(rl, "metered", 1, 3, TR_RATELIMIT_KEY_IP);
    tr_ratelimit_decision_t d;
    for (int i = 0; i < 5; i++)
        assert_int_equal(tr_ratelimit_check_local(rl, p, "m", &d), 0);
    char *text = render();
    assert_line(text, "ratelimit_decisions_total{policy=\"metered\",result=\"allowed\"} 3");
    assert_line(text, "ratelimit_decisions_total{policy=\"metered\",result=\"limited\"} 2");
    /* Without Redis there are no Redis series to mislead a dashboard. */
    assert_null(strstr(text, "ratelimit_redis_up"));
    free(text);
    tr_ratelimit_free(rl);
}

/* ---- per-loop API without Redis ------------------------------------------ */

static void never_called(const tr_ratelimit_decision_t *d, void *data)
{
    (void)d;
    (void)data;
    fail_msg("callback called for a local decision");
}

static void test_worker_without_redis(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_limiter(0);
    const tr_ratelimit_policy_t *p = add_policy(rl, "w", 1, 1, TR_RATELIMIT_KEY_IP);
    assert_false(tr_ratelimit_uses_redis(rl));
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tr_ratelimit_worker_t *w = NULL;
    assert_int_equal(tr_ratelimit_worker_open(rl, &loop, &w), 0);
    assert_false(tr_ratelimit_worker_redis_up(w));

    tr_ratelimit_decision_t d;
    tr_ratelimit_pending_t *pending = (tr_ratelimit_pending_t *)&d;
    assert_int_equal(tr_ratelimit_check(w, p, "a", &d, never_called, NULL, &pending),
                     TR_RATELIMIT_DECIDED);
    assert_null(pending);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(d.source, TR_RATELIMIT_SOURCE_LOCAL);
    assert_int_equal(tr_ratelimit_check(w, p, "a", &d, never_called, NULL, NULL),
                     TR_RATELIMIT_DECIDED);
    assert_int_equal(d.result, TR_RATELIMIT_LIMITED);
    assert_int_equal(tr_ratelimit_check(w, p, "a", &d, NULL, NULL, NULL), -EINVAL);

    tr_ratelimit_worker_close(w);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    tr_ratelimit_free(rl);
}

/* ---- configuration ------------------------------------------------------- */

typedef struct url_case {
    const char *url;
    int ok;
    const char *host;
    int port, db;
    const char *user, *password;
} url_case_t;

static const url_case_t url_cases[] = {
    {"redis://127.0.0.1:6380/2", 1, "127.0.0.1", 6380, 2, NULL, NULL},
    {"redis://cache", 1, "cache", 6379, 0, NULL, NULL},
    {"redis://cache/", 1, "cache", 6379, 0, NULL, NULL},
    {"redis://:s3cret@cache:7000", 1, "cache", 7000, 0, NULL, "s3cret"},
    {"redis://gw:pw@cache/1", 1, "cache", 6379, 1, "gw", "pw"},
    {"redis://[::1]:6390/3", 1, "::1", 6390, 3, NULL, NULL},
    {"redis://[::1]", 1, "::1", 6379, 0, NULL, NULL},
    {"http://cache:6379", 0, NULL, 0, 0, NULL, NULL},
    {"redis://", 0, NULL, 0, 0, NULL, NULL},
    {"redis://:6379", 0, NULL, 0, 0, NULL, NULL},
    {"redis://cache:", 0, NULL, 0, 0, NULL, NULL},
    {"redis://cache:0", 0, NULL, 0, 0, NULL, NULL},
    {"redis://cache:70000", 0, NULL, 0, 0, NULL, NULL},
    {"redis://cache:63x9", 0, NULL, 0, 0, NULL, NULL},
    {"redis://cache/db", 0, NULL, 0, 0, NULL, NULL},
    {"redis://cache?x=1", 0, NULL, 0, 0, NULL, NULL},
    {"redis://user@cache", 0, NULL, 0, 0, NULL, NULL},
    {"redis://[::1", 0, NULL, 0, 0, NULL, NULL},
    {"redis://[::1]x", 0, NULL, 0, 0, NULL, NULL},
};

static void test_redis_url_parsing(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof url_cases / sizeof url_cases[0]; i++) {
        const url_case_t *c = &url_cases[i];
        tr__rl_redis_conf_t conf;
        int rc = tr__ratelimit_redis_parse_url(c->url, &conf);
        if ((rc == 0) != c->ok) fail_msg("%s: rc %d", c->url, rc);
        if (!c->ok) continue;
        assert_string_equal(conf.host, c->host);
        assert_int_equal(conf.port, c->port);
        assert_int_equal(conf.db, c->db);
        if (c->user)
            assert_string_equal(conf.user, c->user);
        else
            assert_null(conf.user);
        if (c->password)
            assert_string_equal(conf.password, c->password);
        else
            assert_null(conf.password);
        tr__ratelimit_redis_conf_free(&conf);
    }
    tr_ratelimit_options_t opts = {.redis_url = "redis://cache:bad"};
    tr_ratelimit_t *rl = (tr_ratelimit_t *)&opts;
    assert_int_equal(tr_ratelimit_create(&opts, &rl), -EINVAL);
    assert_null(rl);
    char prefix[200];
    memset(prefix, 'p', sizeof prefix - 1);
    prefix[sizeof prefix - 1] = '\0';
    tr_ratelimit_options_t long_prefix = {.redis_url = "redis://cache", .redis_prefix = prefix};
    assert_int_equal(tr_ratelimit_create(&long_prefix, &rl), -EINVAL);
    assert_null(rl);
}

static void test_create_from_config(void **state)
{
    (void)state;
    const tr_option_t *const sets[] = {tr_ratelimit_config_options, NULL};
    char err[200];
    tr_config_t *cfg = NULL;
    char *argv[] = {"--ratelimit-max-keys", "128", "--ratelimit-redis-timeout", "20ms"};
    assert_int_equal(tr_config_load(&cfg, sets, 4, argv, err, sizeof err), 0);
    tr_ratelimit_t *rl = NULL;
    assert_int_equal(tr_ratelimit_create_from_config(cfg, &rl), 0);
    assert_false(tr_ratelimit_uses_redis(rl));
    assert_int_equal(rl->max_keys, 128);
    assert_int_equal(rl->redis_timeout_ms, 20);
    tr_ratelimit_free(rl);

    tr_config_set(cfg, "redis-url", "redis://127.0.0.1:6399/1");
    assert_int_equal(tr_ratelimit_create_from_config(cfg, &rl), 0);
    assert_true(tr_ratelimit_uses_redis(rl));
    tr_ratelimit_free(rl);

    tr_config_set(cfg, "ratelimit-max-keys", "0");
    assert_int_equal(tr_ratelimit_create_from_config(cfg, &rl), -EINVAL);
    assert_null(rl);
    tr_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_table),
        cmocka_unit_test(test_burst_then_steady_rate),
        cmocka_unit_test(test_keys_and_policies_are_separate),
        cmocka_unit_test(test_policy_validation_and_update),
        cmocka_unit_test(test_four_threads_never_over_admit),
        cmocka_unit_test(test_unique_key_flood_is_bounded),
        cmocka_unit_test(test_decision_metrics),
        cmocka_unit_test(test_worker_without_redis),
        cmocka_unit_test(test_redis_url_parsing),
        cmocka_unit_test(test_create_from_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

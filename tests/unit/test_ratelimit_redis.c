/* test_ratelimit_redis.c - the Redis-backed rate limiter against a real
 * redis-server started on a random loopback port in a temporary directory:
 * two limiters (two gateway replicas) share one limit, API keys reach Redis
 * only as digests, a flushed script cache is survived, a stalled Redis times
 * out to local limits, a killed Redis falls back to local limits (decisions
 * go on, still limited, and are counted) and the limiter recovers when Redis
 * comes back.
 *
 * redis-server is installed by scripts/deps.sh; when it is missing this test
 * fails rather than skips, so a machine without it cannot pass quietly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kit/metrics.h"
#include "kit/ratelimit.h"
#include "testutil.h"

typedef struct redis_proc {
    char bin[512];
    char dir[128];
    char url[64];
    int port;
    pid_t pid;
} redis_proc_t;

static redis_proc_t redis;

static int find_redis_server(char *out, size_t size)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/bin:/usr/sbin:/usr/local/bin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, size, "%s/redis-server", d);
        if (access(out, X_OK) == 0) return 0;
    }
    return -1;
}

static int free_loopback_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        fail_msg("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* A synchronous connection for inspecting and poking the server. */
static redisContext *redis_sync(void)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c) freeReplyObject(redisCommand(c, "SELECT 1")); /* the limiters' database */
    return c;
}

static void redis_start(void)
{
    char port[16], log[200];
    snprintf(port, sizeof port, "%d", redis.port);
    snprintf(log, sizeof log, "%s/redis.log", redis.dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        execl(redis.bin, redis.bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", redis.dir, "--logfile", log, "--daemonize", "no",
              (char *)NULL);
        _exit(127);
    }
    redis.pid = pid;
    for (int i = 0; i < 100; i++) {
        redisContext *c = redis_sync();
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
            freeReplyObject(r);
            redisFree(c);
            if (ok) return;
        }
        usleep(50000);
    }
    fail_msg("redis-server did not start on port %d (see %s)", redis.port, log);
}

static void redis_kill(void)
{
    if (redis.pid <= 0) return;
    kill(redis.pid, SIGCONT);
    kill(redis.pid, SIGKILL);
    waitpid(redis.pid, NULL, 0);
    redis.pid = 0;
}

static int group_setup(void **state)
{
    (void)state;
    if (find_redis_server(redis.bin, sizeof redis.bin) != 0) {
        fprintf(stderr, "redis-server not found: scripts/deps.sh installs it\n");
        return -1;
    }
    signal(SIGPIPE, SIG_IGN); /* as the server does: Redis may close mid-write */
    if (testutil_tmpdir(redis.dir, sizeof redis.dir, "redis") != 0) return -1;
    redis.port = free_loopback_port();
    snprintf(redis.url, sizeof redis.url, "redis://127.0.0.1:%d/1", redis.port); /* SELECT path */
    redis_start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    redis_kill();
    if (redis.dir[0]) testutil_remove_tree(redis.dir);
    return 0;
}

/* ---- loop helpers -------------------------------------------------------- */

typedef struct waiter {
    int calls;
    tr_ratelimit_decision_t d;
} waiter_t;

static void on_decision(const tr_ratelimit_decision_t *d, void *data)
{
    waiter_t *w = data;
    w->d = *d;
    w->calls++;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until cond(arg) holds or timeout_ms passes; a ref'd ticking
 * timer keeps uv_run from returning early, since the limiter's own handles
 * do not keep the loop alive. */
static bool spin_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, uint64_t timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 2, 2);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + timeout_ms;
    bool ok;
    while (!(ok = cond(arg)) && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool worker_up(void *arg)
{
    return tr_ratelimit_worker_redis_up(arg);
}

static bool worker_down(void *arg)
{
    return !tr_ratelimit_worker_redis_up(arg);
}

static bool waiter_done(void *arg)
{
    return ((waiter_t *)arg)->calls > 0;
}

/* One decision, waiting for it if it is pending. Returns what check
 * returned. */
static int decide(uv_loop_t *loop, tr_ratelimit_worker_t *w, const tr_ratelimit_policy_t *p,
                  const char *key, tr_ratelimit_decision_t *out)
{
    waiter_t wt = {0};
    int rc = tr_ratelimit_check(w, p, key, out, on_decision, &wt, NULL);
    assert_true(rc == TR_RATELIMIT_DECIDED || rc == TR_RATELIMIT_PENDING);
    if (rc == TR_RATELIMIT_PENDING) {
        assert_true(spin_until(loop, waiter_done, &wt, 2000));
        assert_int_equal(wt.calls, 1);
        *out = wt.d;
    }
    return rc;
}

static double metric(const char *line_prefix)
{
    tr_buf_t b;
    tr_buf_init(&b, 0);
    assert_int_equal(tr_metrics_render(&b), 0);
    double v = -1;
    size_t n = strlen(line_prefix);
    for (const char *p = b.data; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, line_prefix, n) == 0) {
            v = strtod(p + n, NULL);
            break;
        }
    tr_buf_free(&b);
    return v;
}

static tr_ratelimit_t *make_replica(void)
{
    tr_ratelimit_options_t opts = {.redis_url = redis.url, .redis_connect_timeout_ms = 300};
    tr_ratelimit_t *rl = NULL;
    assert_int_equal(tr_ratelimit_create(&opts, &rl), 0);
    assert_true(tr_ratelimit_uses_redis(rl));
    return rl;
}

static const tr_ratelimit_policy_t *add_policy(tr_ratelimit_t *rl, const char *name, double rate,
                                               uint32_t burst, tr_ratelimit_key_kind_t kind)
{
    tr_ratelimit_policy_config_t cfg = {.name = name, .rate = rate, .burst = burst, .key = kind};
    const tr_ratelimit_policy_t *p = NULL;
    assert_int_equal(tr_ratelimit_policy_set(rl, &cfg, &p), 0);
    return p;
}

static void close_all(uv_loop_t *loop, tr_ratelimit_worker_t **ws, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tr_ratelimit_worker_close(ws[i]);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- tests --------------------------------------------------------------- */

static void test_two_replicas_share_one_limit(void **state)
{
    (void)state;
    tr_ratelimit_t *rl[2] = {make_replica(), make_replica()};
    const tr_ratelimit_policy_t *p[2], *k[2];
    for (int i = 0; i < 2; i++) {
        p[i] = add_policy(rl[i], "shared", 0.01, 5, TR_RATELIMIT_KEY_IP);
        k[i] = add_policy(rl[i], "apikeys", 0.01, 1, TR_RATELIMIT_KEY_API_KEY);
    }
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tr_ratelimit_worker_t *w[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tr_ratelimit_worker_open(rl[i], &loop, &w[i]), 0);
        assert_true(spin_until(&loop, worker_up, w[i], 3000));
    }
    assert_true(metric("ratelimit_redis_up ") == 1);

    /* Alternating replicas draw on one budget of 5. */
    for (int i = 0; i < 10; i++) {
        tr_ratelimit_decision_t d;
        assert_int_equal(decide(&loop, w[i % 2], p[i % 2], "203.0.113.9", &d),
                         TR_RATELIMIT_PENDING);
        assert_int_equal(d.source, TR_RATELIMIT_SOURCE_REDIS);
        assert_int_equal(d.limit, 5);
        if (i < 5) {
            assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
            assert_int_equal(d.remaining, 4 - i);
            assert_int_equal(d.retry_after_s, 0);
            assert_in_range(d.reset_s, 100 * (i + 1) - 1, 100 * (i + 1));
        } else {
            assert_int_equal(d.result, TR_RATELIMIT_LIMITED);
            assert_int_equal(d.remaining, 0);
            assert_in_range(d.retry_after_s, 99, 100); /* one interval of 100 s */
            assert_in_range(d.reset_s, 499, 500);
        }
    }
    assert_true(metric("ratelimit_decisions_total{policy=\"shared\",result=\"allowed\"} ") == 5);
    assert_true(metric("ratelimit_decisions_total{policy=\"shared\",result=\"limited\"} ") == 5);

    /* API keys: shared too, and stored only as a digest with an expiry. */
    tr_ratelimit_decision_t d;
    decide(&loop, w[0], k[0], "tk_live_supersecret", &d);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    decide(&loop, w[1], k[1], "tk_live_supersecret", &d);
    assert_int_equal(d.result, TR_RATELIMIT_LIMITED);
    redisContext *c = redis_sync();
    assert_non_null(c);
    redisReply *r = redisCommand(c, "KEYS *supersecret*");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 0);
    freeReplyObject(r);
    r = redisCommand(c, "KEYS trellis:rl:apikeys:h:*");
    assert_int_equal(r->elements, 1);
    freeReplyObject(r);
    r = redisCommand(c, "PTTL trellis:rl:shared:203.0.113.9");
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_in_range(r->integer, 490000, 501000);
    freeReplyObject(r);
    redisFree(c);

    close_all(&loop, w, 2);
    assert_true(metric("ratelimit_redis_up ") == 0);
    tr_ratelimit_free(rl[0]);
    tr_ratelimit_free(rl[1]);
}

/* Also connects by host name, through the asynchronous resolver. */
static void test_flushed_script_is_resent(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "redis://localhost:%d/1", redis.port);
    tr_ratelimit_options_t opts = {.redis_url = url, .redis_connect_timeout_ms = 300};
    tr_ratelimit_t *rl = NULL;
    assert_int_equal(tr_ratelimit_create(&opts, &rl), 0);
    const tr_ratelimit_policy_t *p = add_policy(rl, "flushed", 1, 10, TR_RATELIMIT_KEY_USER);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tr_ratelimit_worker_t *w;
    assert_int_equal(tr_ratelimit_worker_open(rl, &loop, &w), 0);
    assert_true(spin_until(&loop, worker_up, w, 3000));

    redisContext *c = redis_sync();
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    redisFree(c);
    double fallbacks = metric("ratelimit_redis_fallbacks_total ");
    tr_ratelimit_decision_t d;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(decide(&loop, w, p, "user-7", &d), TR_RATELIMIT_PENDING);
        assert_int_equal(d.source, TR_RATELIMIT_SOURCE_REDIS);
        assert_int_equal(d.remaining, 9 - i);
    }
    assert_true(metric("ratelimit_redis_fallbacks_total ") == fallbacks);
    close_all(&loop, &w, 1);
    tr_ratelimit_free(rl);
}

static void test_stalled_redis_times_out_to_local(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_replica();
    const tr_ratelimit_policy_t *p = add_policy(rl, "stalled", 0.01, 3, TR_RATELIMIT_KEY_IP);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tr_ratelimit_worker_t *w;
    assert_int_equal(tr_ratelimit_worker_open(rl, &loop, &w), 0);
    assert_true(spin_until(&loop, worker_up, w, 3000));
    double fallbacks = metric("ratelimit_redis_fallbacks_total ");

    assert_int_equal(kill(redis.pid, SIGSTOP), 0);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    tr_ratelimit_decision_t d;
    assert_int_equal(decide(&loop, w, p, "192.0.2.1", &d), TR_RATELIMIT_PENDING);
    uint64_t waited = uv_now(&loop) - t0;
    assert_in_range(waited, 45, 500); /* the 50 ms timeout, not a hang */
    assert_int_equal(d.source, TR_RATELIMIT_SOURCE_FALLBACK);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(d.remaining, 2);
    assert_false(tr_ratelimit_worker_redis_up(w));
    /* The stalled connection was dropped: the next decisions are immediate. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(decide(&loop, w, p, "192.0.2.1", &d), TR_RATELIMIT_DECIDED);
        assert_int_equal(d.source, TR_RATELIMIT_SOURCE_FALLBACK);
        assert_int_equal(d.result, i < 2 ? TR_RATELIMIT_ALLOWED : TR_RATELIMIT_LIMITED);
    }
    assert_true(metric("ratelimit_redis_fallbacks_total ") == fallbacks + 4);
    assert_true(metric("ratelimit_redis_up ") == 0);

    assert_int_equal(kill(redis.pid, SIGCONT), 0);
    assert_true(spin_until(&loop, worker_up, w, 6000));
    assert_int_equal(decide(&loop, w, p, "192.0.2.1", &d), TR_RATELIMIT_PENDING);
    assert_int_equal(d.source, TR_RATELIMIT_SOURCE_REDIS);
    assert_true(metric("ratelimit_redis_up ") == 1);
    close_all(&loop, &w, 1);
    tr_ratelimit_free(rl);
}

static void test_killed_redis_falls_back_and_recovers(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_replica();
    const tr_ratelimit_policy_t *p = add_policy(rl, "killed", 0.01, 5, TR_RATELIMIT_KEY_IP);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tr_ratelimit_worker_t *w;
    assert_int_equal(tr_ratelimit_worker_open(rl, &loop, &w), 0);
    assert_true(spin_until(&loop, worker_up, w, 3000));
    tr_ratelimit_decision_t d;
    assert_int_equal(decide(&loop, w, p, "198.51.100.1", &d), TR_RATELIMIT_PENDING);
    assert_int_equal(d.source, TR_RATELIMIT_SOURCE_REDIS);

    redis_kill();
    assert_true(spin_until(&loop, worker_down, w, 2000));
    assert_true(metric("ratelimit_redis_up ") == 0);
    double fallbacks = metric("ratelimit_redis_fallbacks_total ");
    /* Decisions go on, locally, and are still limited: neither fail-open nor
     * refusing everything. */
    for (int i = 0; i < 7; i++) {
        assert_int_equal(decide(&loop, w, p, "198.51.100.2", &d), TR_RATELIMIT_DECIDED);
        assert_int_equal(d.source, TR_RATELIMIT_SOURCE_FALLBACK);
        assert_int_equal(d.result, i < 5 ? TR_RATELIMIT_ALLOWED : TR_RATELIMIT_LIMITED);
        assert_int_equal(d.limit, 5);
    }
    assert_true(metric("ratelimit_redis_fallbacks_total ") == fallbacks + 7);

    redis_start(); /* same port, empty data */
    assert_true(spin_until(&loop, worker_up, w, 6000));
    assert_true(metric("ratelimit_redis_up ") == 1);
    assert_int_equal(decide(&loop, w, p, "198.51.100.2", &d), TR_RATELIMIT_PENDING);
    assert_int_equal(d.source, TR_RATELIMIT_SOURCE_REDIS);
    assert_int_equal(d.result, TR_RATELIMIT_ALLOWED);
    assert_int_equal(d.remaining, 4);
    close_all(&loop, &w, 1);
    tr_ratelimit_free(rl);
}

/* A pending check can be cancelled, and closing a worker answers the checks
 * still pending instead of dropping them. */
static void test_cancel_and_close_with_pending(void **state)
{
    (void)state;
    tr_ratelimit_t *rl = make_replica();
    const tr_ratelimit_policy_t *p = add_policy(rl, "pending", 0.01, 5, TR_RATELIMIT_KEY_IP);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    tr_ratelimit_worker_t *w;
    assert_int_equal(tr_ratelimit_worker_open(rl, &loop, &w), 0);
    assert_true(spin_until(&loop, worker_up, w, 3000));

    waiter_t cancelled = {0}, answered = {0}, at_close = {0};
    tr_ratelimit_decision_t d;
    tr_ratelimit_pending_t *pend = NULL;
    assert_int_equal(tr_ratelimit_check(w, p, "a", &d, on_decision, &cancelled, &pend),
                     TR_RATELIMIT_PENDING);
    assert_non_null(pend);
    tr_ratelimit_cancel(pend);
    assert_int_equal(tr_ratelimit_check(w, p, "a", &d, on_decision, &answered, NULL),
                     TR_RATELIMIT_PENDING);
    assert_true(spin_until(&loop, waiter_done, &answered, 2000));
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(answered.d.remaining, 3); /* the cancelled one still counted */

    assert_int_equal(tr_ratelimit_check(w, p, "a", &d, on_decision, &at_close, NULL),
                     TR_RATELIMIT_PENDING);
    tr_ratelimit_worker_close(w);
    assert_int_equal(at_close.calls, 1);
    assert_int_equal(at_close.d.source, TR_RATELIMIT_SOURCE_FALLBACK);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(at_close.calls, 1);
    tr_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_replicas_share_one_limit),
        cmocka_unit_test(test_flushed_script_is_resent),
        cmocka_unit_test(test_stalled_redis_times_out_to_local),
        cmocka_unit_test(test_killed_redis_falls_back_and_recovers),
        cmocka_unit_test(test_cancel_and_close_with_pending),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

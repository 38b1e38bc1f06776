/*
 * test_server.c - the HTTP server over real loopback sockets.
 *
 * Each test starts a server on 127.0.0.1, port 0, with a small router and
 * talks to it from the test thread with blocking sockets (receive timeout
 * 2 s, so a bug shows as a failure, not a hang). Timeouts in the server
 * config are a few hundred ms so the whole file runs in a few seconds.
 *
 * Every test ends with tr_server_stop + tr_server_wait, and the worker_stop
 * hook checks that, once the server is done, no handle of the worker's loop
 * is still open (the server then closes the loop, which must succeed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kit/http.h"
#include "kit/router.h"
#include "kit/server.h"
#include "testnet.h"

/* ---- handlers ----------------------------------------------------------- */

static atomic_int cancelled_seen; /* set by the slow handler */
static atomic_int slow_started;   /* slow requests that reached their handler */
static atomic_int open_handles;   /* counted by the worker_stop hook */
static atomic_int worker_starts, worker_stops, completions;

static void handle_hello(tr_req_t *req)
{
    tr_respond(req, 200, "text/plain", "hello", 5);
}

static void handle_item(tr_req_t *req)
{
    json_t *body = json_pack("{s:s}", "id", tr_req_param(req, "id"));
    tr_res_header(req, "X-Custom", "yes");
    tr_res_header(req, "X-Bad", "a\r\nInjected: 1"); /* must be dropped */
    tr_respond_json(req, 200, body);
}

static void handle_echo(tr_req_t *req)
{
    tr_respond(req, 200, "application/octet-stream", req->body, req->body_len);
}

static void handle_query(tr_req_t *req)
{
    const char *q = tr_req_query(req, "q");
    tr_respond(req, 200, "text/plain", q ? q : "(none)", q ? strlen(q) : 6);
}

static void handle_noop_delete(tr_req_t *req)
{
    tr_respond_json(req, 204, NULL);
}

#define BIG_BYTES (8 * 1024 * 1024)

/* Larger than the kernel lets a socket buffer (4 MiB here): the answer
 * cannot be written at once. */
static void handle_big(tr_req_t *req)
{
    char *body = malloc(BIG_BYTES);
    for (size_t i = 0; i < BIG_BYTES; i++)
        body[i] = (char)('a' + i % 26);
    tr_respond(req, 200, "text/plain", body, BIG_BYTES);
    free(body);
}

static atomic_int stuck_seen;

/* Never answers: the drain deadline has to end it. */
static void handle_stuck(tr_req_t *req)
{
    (void)req;
    atomic_fetch_add(&stuck_seen, 1);
}

/* Answers from a timer on the worker loop: ?ms= delay, ?n= label. */
typedef struct slow {
    uv_timer_t timer;
    tr_req_t *req;
} slow_t;

static void slow_closed(uv_handle_t *h)
{
    free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
    slow_t *s = t->data;
    tr_req_t *req = s->req;
    char body[64];
    const char *n = tr_req_query(req, "n");
    int len = snprintf(body, sizeof(body), "slow-%s", n ? n : "?");
    if (tr_req_cancelled(req)) atomic_fetch_add(&cancelled_seen, 1);
    tr_respond(req, 200, "text/plain", body, (size_t)len);
    uv_close((uv_handle_t *)t, slow_closed);
}

static void handle_slow(tr_req_t *req)
{
    slow_t *s = calloc(1, sizeof(*s));
    atomic_fetch_add(&slow_started, 1);
    const char *ms = tr_req_query(req, "ms");
    s->req = req;
    uv_timer_init(req->worker->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, slow_fire, ms ? strtoull(ms, NULL, 10) : 50, 0);
}

static const tr_route_t routes[] = {
    {"GET", "/hello", handle_hello, TR_AUTH_NONE, NULL, 0},
    {"GET", "/items/{id}", handle_item, TR_AUTH_NONE, NULL, 0},
    {"DELETE", "/items/{id}", handle_noop_delete, TR_AUTH_NONE, NULL, 0},
    {"POST", "/echo", handle_echo, TR_AUTH_NONE, NULL, 64},
    {"GET", "/query", handle_query, TR_AUTH_NONE, NULL, 0},
    {"GET", "/slow", handle_slow, TR_AUTH_NONE, NULL, 0},
    {"GET", "/big", handle_big, TR_AUTH_NONE, NULL, 0},
    {"GET", "/stuck", handle_stuck, TR_AUTH_NONE, NULL, 0},
};

static void dispatch(tr_req_t *req)
{
    req->route->handler(req);
}

static int worker_start(tr_worker_t *w)
{
    (void)w;
    atomic_fetch_add(&worker_starts, 1);
    return 0;
}

static void count_open(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) atomic_fetch_add(&open_handles, 1);
}

static void worker_stop(tr_worker_t *w)
{
    atomic_fetch_add(&worker_stops, 1);
    uv_walk(w->loop, count_open, NULL);
}

static void on_complete(tr_req_t *req, int status, size_t bytes, double seconds)
{
    (void)req;
    (void)status;
    (void)bytes;
    (void)seconds;
    atomic_fetch_add(&completions, 1);
}

/* ---- fixture ------------------------------------------------------------ */

typedef struct fixture {
    tr_router_t *router;
    tr_server_t *srv;
    int port;
} fixture_t;

static fixture_t fx;

static void base_config(tr_server_config_t *cfg)
{
    tr_server_config_defaults(cfg);
    cfg->router = fx.router;
    cfg->dispatch = dispatch;
    cfg->worker_start = worker_start;
    cfg->worker_stop = worker_stop;
    cfg->on_complete = on_complete;
    cfg->max_header_bytes = 1024;
    cfg->max_body_bytes = 1024;
    cfg->header_timeout_ms = 300;
    cfg->idle_timeout_ms = 300;
    cfg->drain_timeout_ms = 2000;
}

static void start(const tr_server_config_t *cfg)
{
    atomic_store(&open_handles, 0);
    atomic_store(&slow_started, 0);
    atomic_store(&worker_starts, 0);
    atomic_store(&worker_stops, 0);
    assert_int_equal(tr_server_start(cfg, &fx.srv), 0);
    fx.port = tr_server_port(fx.srv);
    assert_true(fx.port > 0);
    assert_int_equal(atomic_load(&worker_starts), cfg->workers);
}

static void start_default(void)
{
    tr_server_config_t cfg;
    base_config(&cfg);
    start(&cfg);
}

static void stop(int workers)
{
    tr_server_stop(fx.srv);
    tr_server_stop(fx.srv); /* idempotent */
    tr_server_wait(fx.srv);
    fx.srv = NULL;
    assert_int_equal(atomic_load(&worker_stops), workers);
    assert_int_equal(atomic_load(&open_handles), 0);
}

static int setup(void **state)
{
    (void)state;
    fx.router = tr_router_new();
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (tr_router_add(fx.router, &routes[i]) != 0) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tr_router_free(fx.router);
    return 0;
}

/* ---- the client (testnet.h) -------------------------------------------- */

/* rcvbuf > 0 pins a small receive buffer (set before connecting, so the
 * window stays small). */
static testnet_client_t *client_open_rcvbuf(int rcvbuf)
{
    return testnet_client_open(fx.port, (testnet_opts_t){.rcvbuf = rcvbuf});
}

static testnet_client_t *client_open(void)
{
    return client_open_rcvbuf(0);
}

static void get_ok(testnet_client_t *c, const char *path, const char *want_body)
{
    char req[256];
    testnet_response_t r;
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    testnet_send_str(c, req);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen(want_body));
    assert_memory_equal(r.body, want_body, r.body_len);
}

/* Waits until a slow request reached its handler: the request is then
 * certainly in flight (unlike right after reading an answer, which the
 * server writes before it counts the request as done). */
static void wait_slow_started(void)
{
    for (int i = 0; i < 400 && atomic_load(&slow_started) == 0; i++)
        testnet_sleep_ms(5);
    assert_int_equal(atomic_load(&slow_started), 1);
    assert_true(tr_server_in_flight(fx.srv) >= 1);
}

/* ---- tests -------------------------------------------------------------- */

static void test_keep_alive_and_standard_headers(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    for (int i = 0; i < 3; i++) {
        testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_int_equal(testnet_read_response(c, &r, false, false), 0);
        assert_int_equal(r.status, 200);
        assert_memory_equal(r.body, "hello", 5);
        assert_string_equal(testnet_find_header(&r, "Content-Length"), "5");
        assert_string_equal(testnet_find_header(&r, "Content-Type"), "text/plain");
        assert_non_null(testnet_find_header(&r, "Date"));
        assert_true(strlen(testnet_find_header(&r, "X-Request-Id")) == 36); /* generated UUIDv7 */
        assert_null(testnet_find_header(&r, "Connection"));
    }
    testnet_client_close(c);
    stop(1);
}

static void test_json_params_and_response_headers(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /items/a%20b%2Fc HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"id\":\"a b/c\"}");
    assert_string_equal(testnet_find_header(&r, "Content-Type"), "application/json");
    assert_string_equal(testnet_find_header(&r, "X-Custom"), "yes");
    assert_null(testnet_find_header(&r, "X-Bad"));
    assert_null(testnet_find_header(&r, "Injected"));

    get_ok(c, "/query?a=1&q=x+y%21&q=second", "x y!");
    get_ok(c, "/query?a=1", "(none)");

    testnet_send_str(c, "DELETE /items/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 204);
    assert_null(testnet_find_header(&r, "Content-Length"));
    get_ok(c, "/hello", "hello"); /* the 204 carried no body */
    testnet_client_close(c);
    stop(1);
}

static void test_pipelining_in_order_with_async_handler(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /slow?ms=120&n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                        "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                        "GET /slow?ms=10&n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
                        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nfour");
    static const char *const want[] = {"slow-1", "hello", "slow-3", "four"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(testnet_read_response(c, &r, false, false), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, strlen(want[i]));
        assert_memory_equal(r.body, want[i], r.body_len);
    }
    testnet_client_close(c);
    stop(1);
}

static void test_chunked_request_body(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n");
    testnet_sleep_ms(20); /* the body arrives in two reads */
    testnet_send_str(c, "7\r\n, world\r\n0\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello, world");
    testnet_client_close(c);
    stop(1);
}

static void test_head_keeps_length_without_body(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(testnet_find_header(&r, "Content-Length"), "5");
    /* Had a body been sent, it would be read as the next status line. */
    get_ok(c, "/hello", "hello");
    testnet_send_str(c, "HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(testnet_find_header(&r, "Content-Length"));
    get_ok(c, "/hello", "hello");
    testnet_client_close(c);
    stop(1);
}

static void test_expect_continue(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();

    testnet_client_t *c = client_open();
    testnet_send_str(
        c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 100);
    testnet_send_str(c, "body");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "body");
    testnet_client_close(c);

    /* Too large for the route (64): the final answer comes at once. */
    c = client_open();
    testnet_send_str(
        c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 413);
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    /* Unknown route: no 100, a 404 at once. */
    c = client_open();
    testnet_send_str(
        c, "POST /nope HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 404);
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    stop(1);
}

static void test_limits_431_413(void **state)
{
    (void)state;
    testnet_response_t r;
    char big[2048];
    start_default();

    testnet_client_t *c = client_open();
    snprintf(big, sizeof(big), "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: %01500d\r\n\r\n", 7);
    testnet_send_str(c, big);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 431);
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_non_null(strstr(r.body, "\"code\":\"headers_too_large\""));
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    /* Declared length over the route's 64 bytes, body still being sent. */
    c = client_open();
    memset(big, 'x', sizeof(big));
    testnet_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n");
    testnet_send(c, big, 1000);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"code\":\"payload_too_large\""));
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    /* Chunked body growing past the limit. */
    c = client_open();
    testnet_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                        "1\r\nx\r\n0\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 413);
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    stop(1);
}

static void test_timeouts_408_and_idle(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();

    /* Headers never completed within 300 ms. */
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 408);
    assert_non_null(strstr(r.body, "\"code\":\"request_timeout\""));
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    /* Idle keep-alive connection: closed silently. */
    c = client_open();
    get_ok(c, "/hello", "hello");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_true(testnet_closed_by_server(c));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(waited > 0.2 && waited < 1.5);
    testnet_client_close(c);

    /* A slow body is a timeout too, answered with 408. */
    c = client_open();
    testnet_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 408);
    testnet_client_close(c);
    stop(1);
}

/* RFC 9112 framing refused by the server: the status and the envelope's
 * code, and the connection is closed after the answer. */
static void test_framing_errors_answered_and_closed(void **state)
{
    (void)state;
    static const struct {
        const char *request;
        int status;
        const char *code;
    } cases[] = {
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
         "chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
         400, "invalid_argument"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
         "not_implemented"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n", 501,
         "not_implemented"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501,
         "not_implemented"},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: "
         "3\r\n\r\n0\r\n\r\n",
         400, "invalid_argument"},
        {"GET /hello HTTP/1.1\r\n\r\n", 400, "invalid_argument"},
        {"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "invalid_argument"},
        {"GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid_argument"},
        {"GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400, "invalid_argument"},
        {"GET /hello HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431,
         "headers_too_large"},
    };
    testnet_response_t r;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.max_header_fields = 4;
    start(&cfg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("request %zu\n", i);
        testnet_client_t *c = client_open();
        testnet_send_str(c, cases[i].request);
        assert_int_equal(testnet_read_response(c, &r, false, false), 0);
        assert_int_equal(r.status, cases[i].status);
        char code[64];
        snprintf(code, sizeof(code), "\"code\":\"%s\"", cases[i].code);
        assert_non_null(strstr(r.body, code));
        assert_string_equal(testnet_find_header(&r, "Connection"), "close");
        assert_true(testnet_closed_by_server(c));
        testnet_client_close(c);
    }

    /* A target longer than the head limit is 414, not 431. */
    char line[2048];
    snprintf(line, sizeof(line), "GET /hello?q=%01200d HTTP/1.1\r\nHost: t\r\n\r\n", 1);
    testnet_client_t *c = client_open();
    testnet_send_str(c, line);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 414);
    assert_non_null(strstr(r.body, "\"code\":\"uri_too_long\""));
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    /* Valid chunk extensions are ignored; HTTP/1.0 needs no Host. */
    c = client_open();
    testnet_send_str(c,
                     "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;a=1;b=2\r\nhello\r\n2 ;foo=bar\r\n, \r\n5;a=\"q s\"\r\nworld\r\n0\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello, world");
    testnet_client_close(c);
    c = client_open();
    testnet_send_str(c, "GET /hello HTTP/1.0\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    testnet_client_close(c);
    stop(1);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* A client dripping a body one byte per 50 ms never trips the 300 ms idle
 * timer; the request deadline (400 ms from the first byte) ends it with 408.
 * The drip stops as soon as the answer is readable. */
static void test_request_deadline_ends_a_drip(void **state)
{
    (void)state;
    testnet_response_t r;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.request_timeout_ms = 400;
    start(&cfg);

    testnet_client_t *c = client_open();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    testnet_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n");
    int sent = 0;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    while (poll(&pfd, 1, 50) == 0) {
        assert_true(sent < 60); /* the whole body would have gone out: no deadline */
        testnet_send_str(c, "x");
        sent++;
    }
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    double took = seconds_since(&t0);
    assert_int_equal(r.status, 408);
    assert_non_null(strstr(r.body, "\"code\":\"request_timeout\""));
    assert_true(testnet_closed_by_server(c));
    assert_true(took > 0.35 && took < 1.5);
    assert_true(sent >= 5);
    testnet_client_close(c);

    /* The same drip of headers: the header timer (300 ms) stays in force. */
    c = client_open();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n");
    pfd.fd = c->fd;
    while (poll(&pfd, 1, 50) == 0)
        testnet_send_str(c, "X-A: 1\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 408);
    assert_true(seconds_since(&t0) < 1.5);
    testnet_client_close(c);
    stop(1);
}

static void test_max_connections_503(void **state)
{
    (void)state;
    testnet_response_t r;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.max_connections = 2;
    cfg.idle_timeout_ms = 2000;
    start(&cfg);

    testnet_client_t *a = client_open(), *b = client_open();
    get_ok(a, "/hello", "hello"); /* both accepted and counted */
    get_ok(b, "/hello", "hello");
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"code\":\"unavailable\""));
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    testnet_client_close(a);
    testnet_sleep_ms(50); /* let the server see the close */
    c = client_open();
    get_ok(c, "/hello", "hello");
    testnet_client_close(c);
    testnet_client_close(b);
    stop(1);
}

static void test_malformed_400_and_routing_errors(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();

    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"code\":\"invalid_argument\""));
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    c = client_open();
    testnet_send_str(c, "GET /nope HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-me.1\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(testnet_find_header(&r, "Content-Type"), "application/json");
    json_error_t jerr;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    assert_non_null(doc);
    json_t *error = json_object_get(doc, "error");
    assert_string_equal(json_string_value(json_object_get(error, "code")), "not_found");
    assert_string_equal(json_string_value(json_object_get(error, "request_id")), "trace-me.1");
    assert_non_null(json_string_value(json_object_get(error, "message")));
    assert_null(json_object_get(error, "details"));
    json_decref(doc);

    /* The connection survives a 404; then a 405 with Allow. */
    testnet_send_str(c, "PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(testnet_find_header(&r, "Allow"), "GET, HEAD");
    assert_non_null(strstr(r.body, "\"code\":\"method_not_allowed\""));
    get_ok(c, "/hello", "hello");
    testnet_client_close(c);
    stop(1);
}

static void test_request_id_echo_or_generate(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123_X.y\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(testnet_find_header(&r, "X-Request-Id"), "abc-123_X.y");

    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: bad id!\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    const char *id = testnet_find_header(&r, "X-Request-Id");
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '7'); /* UUIDv7 */
    testnet_client_close(c);
    stop(1);
}

static void test_http10(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(testnet_find_header(&r, "Connection"), "keep-alive");
    testnet_send_str(c, "GET /hello HTTP/1.0\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    stop(1);
}

static void test_client_gone_while_pending(void **state)
{
    (void)state;
    start_default();
    atomic_store(&cancelled_seen, 0);
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /slow?ms=100&n=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_slow_started();
    /* A reset, not a polite FIN. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    testnet_client_close(c);
    for (int i = 0; i < 200 && tr_server_in_flight(fx.srv) > 0; i++)
        testnet_sleep_ms(5);
    assert_int_equal(tr_server_in_flight(fx.srv), 0);
    assert_int_equal(atomic_load(&cancelled_seen), 1);

    c = client_open();
    get_ok(c, "/hello", "hello");
    testnet_client_close(c);
    stop(1);
}

static void test_graceful_stop_finishes_in_flight(void **state)
{
    (void)state;
    testnet_response_t r;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.workers = 2;
    cfg.idle_timeout_ms = 5000;
    start(&cfg);

    testnet_client_t *idle = client_open();
    get_ok(idle, "/hello", "hello");
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /slow?ms=200&n=last HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_slow_started();
    tr_server_stop(fx.srv);

    /* The idle keep-alive connection is closed at once... */
    assert_true(testnet_closed_by_server(idle));
    testnet_client_close(idle);
    /* ...while the request under way gets its answer, then a close. */
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "slow-last");
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    stop(2);

    /* Nothing listens any more. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

static void test_large_answer_written_in_pieces(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.idle_timeout_ms = 2000; /* the reader may stall on a loaded machine */
    start(&cfg);
    testnet_client_t *c = client_open_rcvbuf(16 * 1024);
    testnet_send_str(c,
                     "GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    testnet_sleep_ms(50); /* let the server fill the socket buffer and wait */
    char head[1024];
    size_t got = 0, head_len = 0;
    /* Read the big answer without keeping it: head, then BIG_BYTES. */
    while (!head_len) {
        ssize_t n = recv(c->fd, head + got, sizeof(head) - got - 1, 0);
        assert_true(n > 0);
        got += (size_t)n;
        head[got] = '\0';
        char *end = strstr(head, "\r\n\r\n");
        if (end) head_len = (size_t)(end - head) + 4;
    }
    assert_non_null(strstr(head, "Content-Length: 8388608\r\n"));
    size_t body = got - head_len;
    char chunk[65536];
    while (body < BIG_BYTES) {
        size_t want = BIG_BYTES - body < sizeof(chunk) ? BIG_BYTES - body : sizeof(chunk);
        ssize_t n = recv(c->fd, chunk, want, 0);
        assert_true(n > 0);
        if (body + (size_t)n == BIG_BYTES)
            assert_int_equal(chunk[n - 1], 'a' + (BIG_BYTES - 1) % 26);
        body += (size_t)n;
    }
    testnet_response_t r;
    assert_int_equal(testnet_read_response(c, &r, false, false), 0); /* the pipelined one */
    assert_string_equal(r.body, "hello");
    testnet_client_close(c);
    stop(1);
}

/* A reader that keeps taking the 8 MiB answer, but slowly (16 KiB reads
 * 5 ms apart through a 16 KiB window: seconds in all, most of the answer
 * waiting in libuv for the kernel's megabytes to drain first), is not cut
 * off by the 500 ms write timer, which counts time without progress. */
static void test_slow_steady_reader_gets_the_whole_answer(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.idle_timeout_ms = 500;
    start(&cfg);
    testnet_client_t *c = client_open_rcvbuf(16 * 1024);
    testnet_send_str(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    char chunk[16384];
    size_t got = 0, head_len = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!head_len || got - head_len < BIG_BYTES) {
        ssize_t n = recv(c->fd, chunk, sizeof(chunk), 0);
        assert_true(n > 0);
        if (!head_len) {
            char *end = memmem(chunk, (size_t)n, "\r\n\r\n", 4);
            assert_non_null(end);
            head_len = (size_t)(end - chunk) + 4;
        }
        got += (size_t)n;
        testnet_sleep_ms(5); /* the reader's pace: at most 3.2 MB/s */
    }
    assert_int_equal(got - head_len, BIG_BYTES);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(took > 1.5); /* well past the write timer */
    testnet_client_close(c);
    stop(1);
}

static void test_drain_deadline_ends_stuck_requests(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.drain_timeout_ms = 150;
    start(&cfg);
    atomic_store(&stuck_seen, 0);
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 0; i < 400 && atomic_load(&stuck_seen) == 0; i++)
        testnet_sleep_ms(5);
    assert_int_equal(tr_server_in_flight(fx.srv), 1);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    stop(1); /* returns once the deadline closed the connection */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(waited > 0.1 && waited < 1.0);
    assert_true(testnet_closed_by_server(c)); /* without an answer */
    testnet_client_close(c);
}

static void test_several_workers_share_the_port(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.workers = 3;
    start(&cfg);
    testnet_client_t *cs[12];
    for (int i = 0; i < 12; i++)
        cs[i] = client_open();
    for (int i = 0; i < 12; i++)
        get_ok(cs[i], "/items/7", "{\"id\":\"7\"}");
    for (int i = 0; i < 12; i++)
        testnet_client_close(cs[i]);
    stop(3);
}

static void test_start_errors(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    tr_server_t *srv = NULL;
    base_config(&cfg);
    cfg.host = "not-an-ip";
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);
    assert_null(srv);

    /* A port held by a plain (non-reuseport) socket. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    base_config(&cfg);
    cfg.port = ntohs(sa.sin_port);
    assert_int_equal(tr_server_start(&cfg, &srv), -EADDRINUSE);
    close(fd);
}

static int fail_second_worker(tr_worker_t *w)
{
    atomic_fetch_add(&worker_starts, 1);
    return w->index == 1 ? -EIO : 0;
}

static void test_worker_start_failure_unwinds(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    tr_server_t *srv = NULL;
    base_config(&cfg);
    cfg.workers = 2;
    cfg.worker_start = fail_second_worker;
    atomic_store(&worker_stops, 0);
    atomic_store(&open_handles, 0);
    assert_int_equal(tr_server_start(&cfg, &srv), -EIO);
    assert_null(srv);
    /* Only the worker that started is stopped. */
    assert_int_equal(atomic_load(&worker_stops), 1);
    assert_int_equal(atomic_load(&open_handles), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive_and_standard_headers),
        cmocka_unit_test(test_json_params_and_response_headers),
        cmocka_unit_test(test_pipelining_in_order_with_async_handler),
        cmocka_unit_test(test_chunked_request_body),
        cmocka_unit_test(test_head_keeps_length_without_body),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_limits_431_413),
        cmocka_unit_test(test_timeouts_408_and_idle),
        cmocka_unit_test(test_framing_errors_answered_and_closed),
        cmocka_unit_test(test_request_deadline_ends_a_drip),
        cmocka_unit_test(test_max_connections_503),
        cmocka_unit_test(test_malformed_400_and_routing_errors),
        cmocka_unit_test(test_request_id_echo_or_generate),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_client_gone_while_pending),
        cmocka_unit_test(test_graceful_stop_finishes_in_flight),
        cmocka_unit_test(test_large_answer_written_in_pieces),
        cmocka_unit_test(test_slow_steady_reader_gets_the_whole_answer),
        cmocka_unit_test(test_drain_deadline_ends_stuck_requests),
        cmocka_unit_test(test_several_workers_share_the_port),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_worker_start_failure_unwinds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * test_client.c - the kit's HTTP client against real loopback upstreams.
 *
 * Two kinds of upstream:
 *   - kit servers (tr_server_start on port 0, their own worker thread) with
 *     handlers the test controls through atomics: a status to answer with, a
 *     delay, a readiness flag for /readyz, big bodies, echo;
 *   - raw servers on the test's own loop, for what a kit server will not do:
 *     count TCP connections, dribble a chunked answer, close mid-body, reset
 *     on request, answer 101 and echo.
 * The client runs on the test's loop. Every test waits with run_until(), which
 * fails the test after a few seconds instead of hanging, and ends by freeing
 * the client, closing the raw servers, running the loop dry and asserting
 * uv_loop_close() == 0, so a leaked handle fails the test. Times (timeouts,
 * ejection, cool-down, health interval) are tens of ms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kit/buf.h"
#include "kit/client.h"
#include "kit/http.h"
#include "kit/log.h"
#include "kit/metrics.h"
#include "kit/router.h"
#include "kit/server.h"
#include "kit/upstream.h"
#include "kit/upstream_internal.h"

/* Handles on a test function's stack must be closed before it returns. */
static void flag_closed(uv_handle_t *h)
{
    *(bool *)h->data = true;
}

static void close_now(uv_handle_t *h)
{
    bool closed = false;
    h->data = &closed;
    uv_close(h, flag_closed);
    while (!closed)
        uv_run(h->loop, UV_RUN_NOWAIT);
}

/* ---- kit server upstreams ----------------------------------------------- */

typedef struct upsrv {
    tr_server_t *srv;
    tr_router_t *router;
    int port;
    char addr[32];
    char name;
    atomic_int hits;     /* /status requests seen */
    atomic_int status;   /* what /status answers */
    atomic_int delay_ms; /* /status answers after this long */
    atomic_int ready;    /* /readyz: 200 when set, else 503 */
    atomic_int health_hits;
} upsrv_t;

typedef struct delayed {
    uv_timer_t timer;
    tr_req_t *req;
    int status;
    char body[32];
} delayed_t;

static void delayed_closed(uv_handle_t *h)
{
    free(h->data);
}

static void delayed_fire(uv_timer_t *t)
{
    delayed_t *d = t->data;
    tr_respond(d->req, d->status, "text/plain", d->body, strlen(d->body));
    uv_close((uv_handle_t *)t, delayed_closed);
}

static void answer_later(tr_req_t *req, int ms, int status, const char *body)
{
    delayed_t *d = calloc(1, sizeof *d);
    d->req = req;
    d->status = status;
    snprintf(d->body, sizeof d->body, "%s", body);
    uv_timer_init(req->worker->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, delayed_fire, (uint64_t)ms, 0);
}

static void h_status(tr_req_t *req)
{
    upsrv_t *u = req->worker->service;
    atomic_fetch_add(&u->hits, 1);
    char body[8];
    snprintf(body, sizeof body, "srv-%c", u->name);
    int delay = atomic_load(&u->delay_ms);
    if (delay > 0)
        answer_later(req, delay, atomic_load(&u->status), body);
    else
        tr_respond(req, atomic_load(&u->status), "text/plain", body, strlen(body));
}

static void h_hello(tr_req_t *req)
{
    tr_respond(req, 200, "text/plain", "hello", 5);
}

static void h_slow(tr_req_t *req)
{
    const char *ms = tr_req_query(req, "ms");
    answer_later(req, ms ? atoi(ms) : 1000, 200, "slow");
}

static char pattern_byte(size_t i)
{
    return (char)('a' + i % 26);
}

static void h_big(tr_req_t *req)
{
    const char *n = tr_req_query(req, "n");
    size_t len = n ? (size_t)atol(n) : 0;
    char *body = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        body[i] = pattern_byte(i);
    tr_respond(req, 200, "application/octet-stream", body, len);
    free(body);
}

static void h_echo(tr_req_t *req)
{
    tr_respond(req, 200, "application/octet-stream", req->body, req->body_len);
}

/* Answers with the value of the request header named by ?name=. */
static void h_header(tr_req_t *req)
{
    const char *v = tr_req_header(req, tr_req_query(req, "name"));
    tr_respond(req, v ? 200 : 404, "text/plain", v ? v : "", v ? strlen(v) : 0);
}

static void h_readyz(tr_req_t *req)
{
    upsrv_t *u = req->worker->service;
    atomic_fetch_add(&u->health_hits, 1);
    bool ok = atomic_load(&u->ready);
    tr_respond(req, ok ? 200 : 503, "text/plain", ok ? "ok" : "no", 2);
}

static const tr_route_t routes[] = {
    {.method = "GET", .pattern = "/status", .handler = h_status},
    {.method = "POST", .pattern = "/status", .handler = h_status},
    {.method = "GET", .pattern = "/hello", .handler = h_hello},
    {.method = "GET", .pattern = "/slow", .handler = h_slow},
    {.method = "GET", .pattern = "/big", .handler = h_big},
    {.method = "POST", .pattern = "/echo", .handler = h_echo},
    {.method = "PUT", .pattern = "/echo", .handler = h_echo},
    {.method = "GET", .pattern = "/header", .handler = h_header},
    {.method = "GET", .pattern = "/readyz", .handler = h_readyz},
};

static void dispatch(tr_req_t *req)
{
    req->route->handler(req);
}

static void upsrv_start(upsrv_t *u, char name)
{
    memset(u, 0, sizeof *u);
    u->name = name;
    atomic_store(&u->status, 200);
    atomic_store(&u->ready, 1);
    u->router = tr_router_new();
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        assert_int_equal(tr_router_add(u->router, &routes[i]), 0);
    tr_server_config_t cfg;
    tr_server_config_defaults(&cfg);
    cfg.router = u->router;
    cfg.dispatch = dispatch;
    cfg.service = u;
    cfg.max_body_bytes = 16 * 1024 * 1024;
    cfg.drain_timeout_ms = 1000;
    assert_int_equal(tr_server_start(&cfg, &u->srv), 0);
    u->port = tr_server_port(u->srv);
    snprintf(u->addr, sizeof u->addr, "127.0.0.1:%d", u->port);
}

static void upsrv_stop(upsrv_t *u)
{
    tr_server_stop(u->srv);
    tr_server_wait(u->srv);
    tr_router_free(u->router);
}

/* ---- raw upstreams on the test loop ------------------------------------- */

typedef enum raw_mode {
    RAW_SCRIPT,  /* write pieces[] (interval ms apart), then keep or close */
    RAW_UPGRADE, /* 101 + "EXTRA", then echo */
    RAW_HANG,    /* read requests, never answer */
    RAW_RESET    /* close as soon as a request is complete */
} raw_mode_t;

typedef struct rawsrv rawsrv_t;

typedef struct rawconn {
    uv_tcp_t tcp;
    rawsrv_t *srv;
    tr_buf_t in;
    bool upgraded, closing;
    uv_timer_t timer; /* paces the script */
    int closes;       /* handle close callbacks seen; freed at 2 */
    size_t piece;
    struct rawconn *next;
} rawconn_t;

struct rawsrv {
    uv_tcp_t listener;
    int port;
    char addr[32];
    raw_mode_t mode;
    const char *const *pieces;
    size_t npieces;
    int interval_ms;
    bool close_after;
    int conns, requests, closed;
    tr_buf_t last_request;
    rawconn_t *list;
};

typedef struct wr {
    uv_write_t w;
    char data[];
} wr_t;

static void wr_done(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
}

static void raw_send(uv_stream_t *s, const char *data, size_t len)
{
    wr_t *w = malloc(sizeof *w + len);
    memcpy(w->data, data, len);
    w->w.data = w;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->w, s, &b, 1, wr_done) != 0) free(w);
}

/* Both handles (tcp and timer) close with this; the second frees. */
static void raw_conn_closed(uv_handle_t *h)
{
    rawconn_t *rc = h->data;
    if (++rc->closes < 2) return;
    tr_buf_free(&rc->in);
    free(rc);
}

static void raw_close(rawconn_t *rc)
{
    if (rc->closing) return;
    rc->closing = true;
    rc->srv->closed++;
    for (rawconn_t **p = &rc->srv->list; *p; p = &(*p)->next)
        if (*p == rc) {
            *p = rc->next;
            break;
        }
    uv_close((uv_handle_t *)&rc->timer, raw_conn_closed);
    uv_close((uv_handle_t *)&rc->tcp, raw_conn_closed);
}

static void raw_script_step(uv_timer_t *t)
{
    rawconn_t *rc = t->data;
    rawsrv_t *s = rc->srv;
    if (rc->piece < s->npieces) {
        const char *p = s->pieces[rc->piece++];
        raw_send((uv_stream_t *)&rc->tcp, p, strlen(p));
    }
    if (rc->piece < s->npieces) {
        uv_timer_start(&rc->timer, raw_script_step, (uint64_t)s->interval_ms, 0);
    } else if (s->close_after) {
        raw_close(rc);
    }
}

/* Length of the first complete request in buf, or 0. */
static size_t request_length(const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - buf) + 4;
    char *lower = strndup(buf, head);
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    size_t total = head;
    const char *cl = strstr(lower, "\r\ncontent-length:");
    if (strstr(lower, "\r\ntransfer-encoding: chunked")) {
        const char *fin = memmem(buf + head, len - head, "0\r\n\r\n", 5);
        total = fin ? (size_t)(fin - buf) + 5 : 0;
    } else if (cl) {
        total = head + (size_t)atol(cl + 17);
        if (total > len) total = 0;
    }
    free(lower);
    return total;
}

static void raw_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(size);
    buf->len = size;
}

static void raw_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    rawconn_t *rc = st->data;
    rawsrv_t *s = rc->srv;
    if (nread < 0) {
        raw_close(rc);
    } else if (nread > 0 && rc->upgraded) {
        raw_send(st, buf->base, (size_t)nread);
    } else if (nread > 0) {
        tr_buf_append(&rc->in, buf->base, (size_t)nread);
        size_t n;
        while (!rc->closing && !rc->upgraded && (n = request_length(rc->in.data, rc->in.len))) {
            s->requests++;
            tr_buf_reset(&s->last_request);
            tr_buf_append(&s->last_request, rc->in.data, n);
            tr_buf_consume(&rc->in, n);
            if (s->mode == RAW_RESET) {
                raw_close(rc);
            } else if (s->mode == RAW_UPGRADE) {
                static const char ok[] =
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\n\r\nEXTRA";
                raw_send(st, ok, sizeof ok - 1);
                rc->upgraded = true;
                if (rc->in.len) raw_send(st, rc->in.data, rc->in.len);
            } else if (s->mode == RAW_SCRIPT) {
                rc->piece = 0;
                raw_script_step(&rc->timer);
            }
        }
    }
    free(buf->base);
}

static void raw_accept(uv_stream_t *l, int status)
{
    rawsrv_t *s = l->data;
    if (status < 0) return;
    rawconn_t *rc = calloc(1, sizeof *rc);
    rc->srv = s;
    tr_buf_init(&rc->in, 1 << 20);
    uv_tcp_init(l->loop, &rc->tcp);
    uv_timer_init(l->loop, &rc->timer);
    rc->tcp.data = rc->timer.data = rc;
    if (uv_accept(l, (uv_stream_t *)&rc->tcp) != 0) {
        rc->closing = true;
        uv_close((uv_handle_t *)&rc->timer, raw_conn_closed);
        uv_close((uv_handle_t *)&rc->tcp, raw_conn_closed);
        return;
    }
    s->conns++;
    rc->next = s->list;
    s->list = rc;
    uv_read_start((uv_stream_t *)&rc->tcp, raw_alloc, raw_read);
}

static void rawsrv_start(uv_loop_t *loop, rawsrv_t *s, raw_mode_t mode)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    tr_buf_init(&s->last_request, 1 << 20);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 64, raw_accept), 0);
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
    s->port = ntohs(got.sin_port);
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
}

static void rawsrv_script(rawsrv_t *s, const char *const *pieces, size_t n, int interval_ms,
                          bool close_after)
{
    s->mode = RAW_SCRIPT;
    s->pieces = pieces;
    s->npieces = n;
    s->interval_ms = interval_ms;
    s->close_after = close_after;
}

static void rawsrv_stop(rawsrv_t *s)
{
    while (s->list)
        raw_close(s->list);
    close_now((uv_handle_t *)&s->listener);
    tr_buf_free(&s->last_request);
}

/* ---- the test loop, client and result collection ------------------------ */

static uv_loop_t loop;
static tr_client_t *client;
static int waiting; /* requests not finished yet */

static int setup(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(tr_client_new(&loop, &client), 0);
    waiting = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tr_client_free(client);
    client = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

static bool timed_out;

static void on_guard(uv_timer_t *t)
{
    (void)t;
    timed_out = true;
}

/* Runs the loop until *flag is true (or, with flag NULL, until `waiting` is
 * 0), failing the test after limit_ms. */
static void run_until(const bool *flag, uint64_t limit_ms)
{
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    timed_out = false;
    uv_timer_start(&guard, on_guard, limit_ms, 0);
    while (!timed_out && (flag ? !*flag : waiting > 0))
        uv_run(&loop, UV_RUN_ONCE);
    close_now((uv_handle_t *)&guard);
    assert_false(timed_out);
}

/* Runs the loop for ms milliseconds. */
static void run_for(uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    timed_out = false;
    uv_timer_start(&t, on_guard, ms, 0);
    while (!timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    close_now((uv_handle_t *)&t);
}

typedef struct result {
    int status;
    int err;
    bool head, done, failed, finished;
    tr_buf_t body;
    tr_buf_t headers; /* "name: value\n" lines */
    size_t bodies, max_chunk;
    bool delivered_while_paused;
    bool paused;
    int written_calls;
    uint64_t finished_at;
    tr_client_req_t *req;
    /* pause/resume test */
    int pause_every;
    uv_timer_t *resume_timer;
    const char *held; /* the chunk delivered when pausing */
    size_t held_len, held_at;
    bool held_changed;
    /* cancel test */
    bool cancel_on_body;
    bool callback_after_cancel;
    bool cancelled;
} result_t;

static void result_init(result_t *r)
{
    memset(r, 0, sizeof *r);
    tr_buf_init(&r->body, 64 * 1024 * 1024);
    tr_buf_init(&r->headers, 1 << 20);
}

static void result_free(result_t *r)
{
    tr_buf_free(&r->body);
    tr_buf_free(&r->headers);
}

static void finish(result_t *res)
{
    if (res->cancelled) res->callback_after_cancel = true;
    res->finished = true;
    res->finished_at = uv_now(&loop);
    waiting--;
}

static void cb_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n, void *data)
{
    (void)r;
    result_t *res = data;
    if (res->cancelled) res->callback_after_cancel = true;
    res->head = true;
    res->status = status;
    for (size_t i = 0; i < n; i++)
        tr_buf_printf(&res->headers, "%s: %s\n", h[i].name, h[i].value);
}

static void resume_fire(uv_timer_t *t)
{
    result_t *res = t->data;
    /* The chunk stays valid while paused, whatever else the loop read. */
    if (memcmp(res->held, res->body.data + res->held_at, res->held_len) != 0)
        res->held_changed = true;
    res->paused = false;
    tr_client_resume(res->req);
}

static void cb_body(tr_client_req_t *r, const char *chunk, size_t len, void *data)
{
    result_t *res = data;
    if (res->cancelled) res->callback_after_cancel = true;
    if (res->paused) res->delivered_while_paused = true;
    tr_buf_append(&res->body, chunk, len);
    res->bodies++;
    if (len > res->max_chunk) res->max_chunk = len;
    if (res->cancel_on_body) {
        res->cancelled = true;
        tr_client_cancel(r);
        waiting--;
        return;
    }
    if (res->pause_every && res->bodies % (size_t)res->pause_every == 0) {
        res->paused = true;
        res->held = chunk;
        res->held_len = len;
        res->held_at = res->body.len - len;
        tr_client_pause(r);
        uv_timer_start(res->resume_timer, resume_fire, 2, 0);
    }
}

static void cb_done(tr_client_req_t *r, void *data)
{
    (void)r;
    result_t *res = data;
    res->done = true;
    finish(res);
}

static void cb_error(tr_client_req_t *r, int err, void *data)
{
    (void)r;
    result_t *res = data;
    res->failed = true;
    res->err = err;
    finish(res);
}

static void cb_written(tr_client_req_t *r, void *data)
{
    (void)r;
    ((result_t *)data)->written_calls++;
}

static const tr_client_callbacks_t callbacks = {.on_head = cb_head,
                                                .on_body = cb_body,
                                                .on_done = cb_done,
                                                .on_error = cb_error,
                                                .on_written = cb_written};

/* Upstream over the given addresses, with the test's usual overrides: short
 * times, no breaker and no ejection unless a test turns them on. */
static tr_upstream_t *make_upstream(const char *name, const char *const *addrs, size_t n,
                                    void (*tweak)(tr_upstream_config_t *))
{
    tr_upstream_config_t cfg;
    tr_upstream_config_defaults(&cfg);
    cfg.name = name;
    cfg.instances = addrs;
    cfg.ninstances = n;
    cfg.breaker.failure_threshold = 0;
    cfg.outlier_consecutive_failures = 0;
    if (tweak) tweak(&cfg);
    tr_upstream_t *up = NULL;
    assert_int_equal(tr_upstream_new(&cfg, &up), 0);
    return up;
}

/* Starts raw playing pieces (see rawsrv_script) and returns a one-instance
 * upstream named name that points at it. */
static tr_upstream_t *scripted_upstream(rawsrv_t *raw, const char *name, const char *const *pieces,
                                        size_t n, int interval_ms, bool close_after)
{
    rawsrv_start(&loop, raw, RAW_SCRIPT);
    rawsrv_script(raw, pieces, n, interval_ms, close_after);
    const char *addr = raw->addr;
    return make_upstream(name, &addr, 1, NULL);
}

static tr_client_opts_t opts(const char *method, const char *target, result_t *res)
{
    tr_client_opts_t o;
    tr_client_opts_init(&o);
    o.method = method;
    o.target = target;
    o.cb = &callbacks;
    o.data = res;
    o.retry.base_ms = 5;
    o.retry.cap_ms = 20;
    return o;
}

/* Starts a request and counts it in `waiting`. */
static tr_client_req_t *start(tr_upstream_t *up, const tr_client_opts_t *o)
{
    tr_client_req_t *r = NULL;
    assert_int_equal(tr_client_request(client, up, o, &r), 0);
    ((result_t *)o->data)->req = r;
    waiting++;
    return r;
}

/* One request, run to its end. */
static void fetch(tr_upstream_t *up, const tr_client_opts_t *o)
{
    start(up, o);
    run_until(NULL, 5000);
}

/* ---- tests: framing and pooling ----------------------------------------- */

static const char *const fixed_hello[] = {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"};

/* N sequential requests share one TCP connection; Host is the instance's. */
static void test_pool_reuse(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "reuse", fixed_hello, 1, 0, false);
    for (int i = 0; i < 10; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/x?i=1", &res);
        fetch(up, &o);
        assert_true(res.done);
        assert_int_equal(res.status, 200);
        assert_int_equal(res.body.len, 5);
        assert_memory_equal(res.body.data, "hello", 5);
        result_free(&res);
    }
    assert_int_equal(raw.requests, 10);
    assert_int_equal(raw.conns, 1);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: %s\r\n", raw.addr);
    assert_non_null(strstr(raw.last_request.data, host));
    assert_non_null(strstr(raw.last_request.data, "GET /x?i=1 HTTP/1.1\r\n"));
    assert_null(strstr(raw.last_request.data, "Content-Length")); /* bodyless GET */
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

static void test_kit_server_bodies(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("kit", &addr, 1, NULL);

    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/hello", &res);
    fetch(up, &o);
    assert_true(res.done);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body.data, "hello");
    assert_non_null(strcasestr(res.headers.data, "content-length: 5\n"));
    result_free(&res);

    /* Sized body larger than many reads. */
    result_init(&res);
    o = opts("GET", "/big?n=3000000", &res);
    fetch(up, &o);
    assert_true(res.done);
    assert_int_equal(res.body.len, 3000000);
    for (size_t i = 0; i < res.body.len; i += 4099)
        assert_int_equal(res.body.data[i], pattern_byte(i));
    result_free(&res);

    /* Buffered request body. */
    result_init(&res);
    o = opts("POST", "/echo", &res);
    o.body = "ping-pong";
    o.body_len = 9;
    fetch(up, &o);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body.data, "ping-pong");
    result_free(&res);

    /* HEAD: headers announce a body that never comes; the connection stays
     * usable. */
    result_init(&res);
    o = opts("HEAD", "/hello", &res);
    fetch(up, &o);
    assert_true(res.done);
    assert_int_equal(res.body.len, 0);
    result_free(&res);
    result_init(&res);
    o = opts("GET", "/hello", &res);
    fetch(up, &o);
    assert_string_equal(res.body.data, "hello");
    result_free(&res);

    /* An empty POST still says Content-Length: 0. */
    result_init(&res);
    o = opts("POST", "/echo", &res);
    fetch(up, &o);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.body.len, 0);
    result_free(&res);

    upsrv_stop(&u);
    tr_upstream_release(up);
}

static const char *const chunked_pieces[] = {
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-Empty:\r\n\r\n5\r\nhel",
    "lo\r\n6\r\n world\r\n",
    "1;ext=1\r\n!\r\n",
    "0\r\n\r\n",
};

/* A chunked answer dribbled over several writes is de-chunked, its headers
 * (an empty one included) reported, and the connection reused. */
static void test_chunked_response(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "chunked", chunked_pieces, 4, 5, false);
    for (int i = 0; i < 2; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/", &res);
        fetch(up, &o);
        assert_true(res.done);
        assert_string_equal(res.body.data, "hello world!");
        assert_non_null(strstr(res.headers.data, "X-A: 1\n"));
        assert_non_null(strstr(res.headers.data, "X-Empty: \n"));
        result_free(&res);
    }
    assert_int_equal(raw.conns, 1);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

static const char *const eof_body[] = {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-", "eof"};
static const char *const cut_body[] = {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"};

/* A body delimited by the close is complete; one cut short is an error
 * after the head. */
static void test_close_delimited_and_cut(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "eof", eof_body, 2, 5, true);

    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    fetch(up, &o);
    assert_true(res.done);
    assert_string_equal(res.body.data, "until-eof");
    result_free(&res);

    rawsrv_script(&raw, cut_body, 1, 0, true);
    result_init(&res);
    o = opts("GET", "/", &res);
    fetch(up, &o);
    assert_true(res.head);
    assert_true(res.failed);
    assert_int_equal(res.err, TR_CLIENT_ECLOSED);
    assert_string_equal(res.body.data, "0123456789");
    assert_int_equal(raw.requests, 2); /* not retried after the head */
    result_free(&res);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

static const char *const interim[] = {
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n"};

static void test_interim_and_no_content(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "interim", interim, 1, 0, false);
    for (int i = 0; i < 2; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/", &res);
        fetch(up, &o);
        assert_true(res.done);
        assert_int_equal(res.status, 204);
        assert_non_null(strstr(res.headers.data, "X-B: 2\n"));
        assert_int_equal(res.body.len, 0);
        result_free(&res);
    }
    assert_int_equal(raw.conns, 1);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

static const char *const garbage[] = {"HTTP/1.1 abc\r\n\r\n"};

static void test_malformed_response(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "garbage", garbage, 1, 0, false);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    fetch(up, &o);
    assert_true(res.failed);
    assert_int_equal(res.err, TR_CLIENT_EPROTOCOL);
    assert_int_equal(tr_client_error_public(res.err), TR_ERR_BAD_GATEWAY);
    assert_int_equal(raw.requests, 1); /* protocol errors are not retried */
    result_free(&res);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

/* ---- tests: streaming both ways ----------------------------------------- */

/* 8 MiB through pause/resume: nothing is delivered while paused, no piece is
 * larger than one read, and every byte arrives in order. */
static void test_stream_pause_resume(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("stream", &addr, 1, NULL);
    uv_timer_t resume_timer;
    uv_timer_init(&loop, &resume_timer);

    result_t res;
    result_init(&res);
    res.pause_every = 3;
    res.resume_timer = &resume_timer;
    resume_timer.data = &res;
    tr_client_opts_t o = opts("GET", "/big?n=8388608", &res);
    start(up, &o);
    /* Meanwhile other responses are read on the same loop. */
    result_t other[4];
    for (int i = 0; i < 4; i++) {
        result_init(&other[i]);
        tr_client_opts_t oo = opts("GET", "/big?n=2000000", &other[i]);
        start(up, &oo);
    }
    run_until(NULL, 20000);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(other[i].body.len, 2000000);
        result_free(&other[i]);
    }
    assert_true(res.done);
    assert_false(res.delivered_while_paused);
    assert_false(res.held_changed);
    assert_int_equal(res.body.len, 8388608);
    assert_true(res.max_chunk <= 64 * 1024);
    assert_true(res.bodies > 100);
    for (size_t i = 0; i < res.body.len; i++)
        if (res.body.data[i] != pattern_byte(i)) fail_msg("byte %zu differs", i);
    result_free(&res);
    close_now((uv_handle_t *)&resume_timer);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

/* Pausing right in on_head holds the body until resumed. */
typedef struct head_pause {
    result_t res;
    uv_timer_t timer;
    bool resumed;
} head_pause_t;

static void hp_resume(uv_timer_t *t)
{
    head_pause_t *hp = t->data;
    hp->resumed = true;
    hp->res.paused = false;
    tr_client_resume(hp->res.req);
}

static void hp_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n, void *data)
{
    head_pause_t *hp = data;
    cb_head(r, status, h, n, &hp->res);
    hp->res.paused = true;
    tr_client_pause(r);
    uv_timer_start(&hp->timer, hp_resume, 30, 0);
}

static void hp_body(tr_client_req_t *r, const char *c, size_t len, void *data)
{
    head_pause_t *hp = data;
    cb_body(r, c, len, &hp->res);
}

static void hp_done(tr_client_req_t *r, void *data)
{
    cb_done(r, &((head_pause_t *)data)->res);
}

static void hp_error(tr_client_req_t *r, int err, void *data)
{
    cb_error(r, err, &((head_pause_t *)data)->res);
}

static const tr_client_callbacks_t hp_callbacks = {
    .on_head = hp_head, .on_body = hp_body, .on_done = hp_done, .on_error = hp_error};

static void test_pause_in_head(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("hp", &addr, 1, NULL);
    head_pause_t hp;
    memset(&hp, 0, sizeof hp);
    result_init(&hp.res);
    uv_timer_init(&loop, &hp.timer);
    hp.timer.data = &hp;
    tr_client_opts_t o = opts("GET", "/big?n=20000", &hp.res);
    o.cb = &hp_callbacks;
    o.data = &hp;
    tr_client_req_t *r = NULL;
    assert_int_equal(tr_client_request(client, up, &o, &r), 0);
    hp.res.req = r;
    waiting++;
    run_until(NULL, 5000);
    assert_true(hp.resumed);
    assert_true(hp.res.done);
    assert_false(hp.res.delivered_while_paused);
    assert_int_equal(hp.res.body.len, 20000);

    /* Paused before the head: the head still comes, the body waits. */
    hp.resumed = false;
    tr_buf_reset(&hp.res.body);
    hp.res.done = false;
    hp.res.head = false;
    o.cb = &callbacks;
    o.data = &hp.res;
    assert_int_equal(tr_client_request(client, up, &o, &r), 0);
    hp.res.req = r;
    waiting++;
    tr_client_pause(r);
    hp.res.paused = true;
    bool head_seen = false;
    while (!hp.res.head)
        uv_run(&loop, UV_RUN_ONCE);
    head_seen = true;
    run_for(30);
    assert_true(head_seen);
    assert_int_equal(hp.res.body.len, 0);
    hp.res.paused = false;
    tr_client_resume(r);
    run_until(NULL, 5000);
    assert_true(hp.res.done);
    assert_int_equal(hp.res.body.len, 20000);
    result_free(&hp.res);
    close_now((uv_handle_t *)&hp.timer);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

/* Streamed request bodies, chunked and sized, written before the
 * connection exists and after. */
static void test_streamed_request_body(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("upload", &addr, 1, NULL);

    for (int sized = 0; sized < 2; sized++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts(sized ? "PUT" : "POST", "/echo", &res);
        o.stream_body = true;
        o.stream_length = sized ? 200011 : -1;
        tr_client_req_t *r = start(up, &o);
        assert_int_equal(tr_client_write(r, "abc", 3), 0);
        assert_int_equal(tr_client_write_pending(r), 3);
        run_for(20);
        char *big = malloc(200000);
        memset(big, 'z', 200000);
        assert_int_equal(tr_client_write(r, big, 200000), 0);
        free(big);
        assert_int_equal(tr_client_write(r, "12345678", 8), 0);
        if (sized) {
            assert_int_equal(tr_client_write(r, "xyz", 3), -EINVAL); /* over the length */
            assert_int_equal(tr_client_end(r), 0);
        } else {
            assert_int_equal(tr_client_end(r), 0);
        }
        assert_int_equal(tr_client_write(r, "late", 4), -EINVAL);
        assert_int_equal(tr_client_end(r), -EINVAL);
        run_until(NULL, 5000);
        assert_true(res.done);
        assert_int_equal(res.status, 200);
        assert_int_equal(res.body.len, 200011);
        assert_memory_equal(res.body.data, "abc", 3);
        assert_memory_equal(res.body.data + 200003, "12345678", 8);
        assert_true(res.written_calls >= 1);
        result_free(&res);
    }
    /* The echo answers of both were fully read: one connection served both
     * and a third request. */
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/hello", &res);
    fetch(up, &o);
    assert_true(res.done);
    result_free(&res);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

/* ---- tests: failures and timeouts --------------------------------------- */

/* A loopback port where connecting is refused: bound but never listening.
 * The socket stays bound until the caller closes *fd, so no other listener
 * (another test, a `--port 0` server) can be given the port meanwhile. */
static int closed_port(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

static void test_connect_refused(void **state)
{
    (void)state;
    char addr[32];
    int held;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", closed_port(&held));
    const char *a = addr;
    tr_upstream_t *up = make_upstream("refused", &a, 1, NULL);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("POST", "/", &res); /* connect failures retry any method */
    o.connect_timeout_ms = 1000;
    uint64_t t0 = uv_now(&loop);
    tr_client_req_t *r = start(up, &o);
    assert_string_equal(tr_client_req_instance(r), addr);
    run_until(NULL, 5000);
    assert_true(res.failed);
    assert_int_equal(res.err, TR_CLIENT_ECONNECT);
    assert_int_equal(tr_client_error_public(res.err), TR_ERR_UNAVAILABLE);
    assert_true(res.finished_at - t0 < 1000);
    result_free(&res);

    tr_buf_t m;
    tr_buf_init(&m, 1 << 22);
    assert_int_equal(tr_metrics_render(&m), 0);
    assert_non_null(strstr(m.data, "upstream_connect_errors_total{upstream=\"refused\"} 3"));
    assert_non_null(strstr(m.data, "upstream_retries_total{upstream=\"refused\"} 2"));
    assert_non_null(strstr(
        m.data, "upstream_requests_total{upstream=\"refused\",status=\"connect_failed\"} 1"));
    tr_buf_free(&m);
    tr_upstream_release(up);
    close(held);
}

/* A listener whose backlog is full and never accepts: SYNs go unanswered. */
static void test_connect_timeout(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t len = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &len);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    const char *ap = addr;
    tr_upstream_t *up = make_upstream("blackhole", &ap, 1, NULL);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    o.connect_timeout_ms = 100;
    o.retry.max_retries = 0;
    uint64_t t0 = uv_now(&loop);
    start(up, &o);
    run_until(NULL, 5000);
    assert_true(res.failed);
    assert_int_equal(res.err, TR_CLIENT_ECONNECT_TIMEOUT);
    assert_true(res.finished_at - t0 >= 99);
    assert_true(res.finished_at - t0 < 1000);
    result_free(&res);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    tr_upstream_release(up);
}

static void test_try_and_total_timeouts(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("slow", &addr, 1, NULL);

    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/slow?ms=600", &res);
    o.try_timeout_ms = 100;
    o.retry.max_retries = 0;
    uint64_t t0 = uv_now(&loop);
    start(up, &o);
    run_until(NULL, 5000);
    assert_int_equal(res.err, TR_CLIENT_ETRY_TIMEOUT);
    assert_int_equal(tr_client_error_public(res.err), TR_ERR_DEADLINE_EXCEEDED);
    assert_true(res.finished_at - t0 >= 99 && res.finished_at - t0 < 1000);
    result_free(&res);

    /* Retried once after the per-try timeout, then cut by the total. */
    result_init(&res);
    o = opts("GET", "/slow?ms=600", &res);
    o.try_timeout_ms = 100;
    o.total_timeout_ms = 160;
    o.retry.max_retries = 3;
    t0 = uv_now(&loop);
    tr_client_req_t *r = start(up, &o);
    run_until(NULL, 5000);
    assert_int_equal(res.err, TR_CLIENT_ETOTAL_TIMEOUT);
    assert_true(res.finished_at - t0 >= 159 && res.finished_at - t0 < 1000);
    (void)r;
    result_free(&res);

    /* Total timeout alone. */
    result_init(&res);
    o = opts("GET", "/slow?ms=600", &res);
    o.total_timeout_ms = 120;
    t0 = uv_now(&loop);
    start(up, &o);
    run_until(NULL, 5000);
    assert_int_equal(res.err, TR_CLIENT_ETOTAL_TIMEOUT);
    assert_true(res.finished_at - t0 >= 119 && res.finished_at - t0 < 1000);
    result_free(&res);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

static const char *const stall[] = {"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nabc"};

/* After the head, a stalled body trips the idle timeout (not while paused). */
static void test_idle_body_timeout(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "stall", stall, 1, 0, false);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    o.idle_timeout_ms = 80;
    o.total_timeout_ms = 50; /* ends at the head: must not fire later */
    start(up, &o);
    run_until(NULL, 5000);
    assert_true(res.head);
    assert_int_equal(res.err, TR_CLIENT_EIDLE_TIMEOUT);
    assert_string_equal(res.body.data, "abc");
    result_free(&res);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

/* ---- tests: retries ----------------------------------------------------- */

static void retry_5xx(tr_client_opts_t *o)
{
    o->retry.retry_on |= TR_RETRY_ON_5XX;
    o->retry.max_retries = 2;
}

static void test_retry_idempotent_only(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    atomic_store(&u.status, 500);
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("retry", &addr, 1, NULL);
    static const struct {
        const char *method;
        bool key;
        int hits;
    } cases[] = {{"GET", false, 3}, {"POST", false, 1}, {"POST", true, 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        atomic_store(&u.hits, 0);
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts(cases[i].method, "/status", &res);
        retry_5xx(&o);
        tr_header_t key = {"Idempotency-Key", "k-1"};
        if (cases[i].key) {
            o.headers = &key;
            o.nheaders = 1;
        }
        tr_client_req_t *r = start(up, &o);
        (void)r;
        run_until(NULL, 5000);
        /* The last answer is delivered as it came. */
        assert_true(res.done);
        assert_int_equal(res.status, 500);
        assert_string_equal(res.body.data, "srv-a");
        assert_int_equal(atomic_load(&u.hits), cases[i].hits);
        result_free(&res);
    }
    /* 500 is not a gateway error: the default policy does not retry it. */
    atomic_store(&u.hits, 0);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/status", &res);
    fetch(up, &o);
    assert_int_equal(atomic_load(&u.hits), 1);
    result_free(&res);
    /* 503 is. */
    atomic_store(&u.status, 503);
    atomic_store(&u.hits, 0);
    result_init(&res);
    o = opts("GET", "/status", &res);
    fetch(up, &o);
    assert_int_equal(res.status, 503);
    assert_int_equal(atomic_load(&u.hits), 3);
    result_free(&res);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

static void test_retry_on_reset(void **state)
{
    (void)state;
    rawsrv_t raw;
    rawsrv_start(&loop, &raw, RAW_RESET);
    const char *addr = raw.addr;
    tr_upstream_t *up = make_upstream("reset", &addr, 1, NULL);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    fetch(up, &o);
    assert_int_equal(res.err, TR_CLIENT_ECLOSED);
    assert_int_equal(raw.requests, 3);
    result_free(&res);

    result_init(&res);
    o = opts("POST", "/", &res);
    o.body = "x";
    o.body_len = 1;
    fetch(up, &o);
    assert_int_equal(res.err, TR_CLIENT_ECLOSED);
    assert_int_equal(raw.requests, 4);
    result_free(&res);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

/* 10 concurrent failing GETs with 5 retries each: the budget (20 %, at least
 * 3) lets only 3 of them retry. */
static void test_retry_budget(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    atomic_store(&u.status, 503);
    atomic_store(&u.delay_ms, 20);
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("budget", &addr, 1, NULL);
    result_t res[10];
    for (int i = 0; i < 10; i++) {
        result_init(&res[i]);
        tr_client_opts_t o = opts("GET", "/status", &res[i]);
        o.retry.max_retries = 5;
        start(up, &o);
    }
    run_until(NULL, 10000);
    int retried = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(res[i].status, 503);
        result_free(&res[i]);
    }
    retried = atomic_load(&u.hits) - 10;
    assert_int_equal(retried, 15);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

/* ---- tests: breaker, ejection, health, balancing ------------------------ */

static void breaker_on(tr_upstream_config_t *cfg)
{
    cfg->breaker.failure_threshold = 5;
    cfg->breaker.cooldown_ms = 150;
}

static void test_breaker(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    atomic_store(&u.status, 500);
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("breaker", &addr, 1, breaker_on);
    for (int i = 0; i < 5; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/status", &res);
        fetch(up, &o);
        assert_int_equal(res.status, 500);
        result_free(&res);
    }
    assert_int_equal(tr_upstream_breaker_state(up, uv_now(&loop)), TR_BREAKER_OPEN);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/status", &res);
    assert_int_equal(tr_client_request(client, up, &o, NULL), TR_CLIENT_EBREAKER_OPEN);
    assert_int_equal(tr_client_error_public(TR_CLIENT_EBREAKER_OPEN), TR_ERR_UNAVAILABLE);
    assert_int_equal(atomic_load(&u.hits), 5);

    /* After the cool-down one probe goes through; the second request is
     * still rejected while the probe is out. */
    run_for(170);
    atomic_store(&u.status, 200);
    atomic_store(&u.delay_ms, 30);
    o = opts("GET", "/status", &res);
    start(up, &o);
    result_t res2;
    result_init(&res2);
    tr_client_opts_t o2 = opts("GET", "/status", &res2);
    assert_int_equal(tr_client_request(client, up, &o2, NULL), TR_CLIENT_EBREAKER_OPEN);
    run_until(NULL, 5000);
    assert_int_equal(res.status, 200);
    assert_int_equal(tr_upstream_breaker_state(up, uv_now(&loop)), TR_BREAKER_CLOSED);
    result_free(&res);
    result_free(&res2);

    /* Open it again; a failing probe re-opens it for another cool-down. */
    atomic_store(&u.delay_ms, 0);
    atomic_store(&u.status, 502);
    for (int i = 0; i < 5; i++) {
        result_init(&res);
        o = opts("GET", "/status", &res);
        o.retry.max_retries = 0;
        fetch(up, &o);
        result_free(&res);
    }
    assert_int_equal(tr_upstream_breaker_state(up, uv_now(&loop)), TR_BREAKER_OPEN);
    run_for(170);
    result_init(&res);
    o = opts("GET", "/status", &res);
    o.retry.max_retries = 0;
    fetch(up, &o);
    assert_int_equal(res.status, 502);
    result_free(&res);
    assert_int_equal(tr_upstream_breaker_state(up, uv_now(&loop)), TR_BREAKER_OPEN);

    tr_buf_t m;
    tr_buf_init(&m, 1 << 20);
    assert_int_equal(tr_upstream_render_metrics(&m, uv_now(&loop)), 0);
    assert_non_null(strstr(m.data, "upstream_breaker_state{upstream=\"breaker\"} 1\n"));
    tr_buf_free(&m);
    tr_buf_init(&m, 1 << 22);
    assert_int_equal(tr_metrics_render(&m), 0);
    assert_non_null(
        strstr(m.data, "upstream_requests_total{upstream=\"breaker\",status=\"breaker_open\"} 2"));
    assert_non_null(
        strstr(m.data, "upstream_requests_total{upstream=\"breaker\",status=\"500\"} 5"));
    tr_buf_free(&m);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

static void ejection_on(tr_upstream_config_t *cfg)
{
    cfg->outlier_consecutive_failures = 5;
    cfg->outlier_base_ejection_ms = 200;
}

static void test_outlier_ejection(void **state)
{
    (void)state;
    upsrv_t a, b;
    upsrv_start(&a, 'a');
    upsrv_start(&b, 'b');
    atomic_store(&a.status, 500);
    const char *addrs[] = {a.addr, b.addr};
    tr_upstream_t *up = make_upstream("eject", addrs, 2, ejection_on);
    for (int i = 0; i < 20; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/status", &res);
        fetch(up, &o);
        result_free(&res);
    }
    assert_int_equal(atomic_load(&a.hits), 5);
    assert_int_equal(atomic_load(&b.hits), 15);
    tr_upstream_instance_info_t info;
    tr_upstream_instance_info(up, 0, uv_now(&loop), &info);
    assert_true(info.ejected);
    assert_int_equal(info.ejections, 1);
    assert_true(tr_upstream_available(up, uv_now(&loop)));

    /* After the ejection time it takes traffic again. */
    run_for(220);
    atomic_store(&a.status, 200);
    for (int i = 0; i < 4; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/status", &res);
        fetch(up, &o);
        assert_int_equal(res.status, 200);
        result_free(&res);
    }
    assert_int_equal(atomic_load(&a.hits), 7);
    tr_upstream_instance_info(up, 0, uv_now(&loop), &info);
    assert_false(info.ejected);
    upsrv_stop(&a);
    upsrv_stop(&b);
    tr_upstream_release(up);
}

static void health_fast(tr_upstream_config_t *cfg)
{
    cfg->health_interval_ms = 30;
    cfg->health_timeout_ms = 500;
}

static bool instance_healthy(tr_upstream_t *up, size_t i)
{
    tr_upstream_instance_info_t info;
    tr_upstream_instance_info(up, i, uv_now(&loop), &info);
    return info.healthy;
}

static void wait_health(tr_upstream_t *up, size_t i, bool want)
{
    for (int k = 0; k < 200 && instance_healthy(up, i) != want; k++)
        run_for(10);
    assert_int_equal(instance_healthy(up, i), want);
}

static void test_health_checks(void **state)
{
    (void)state;
    upsrv_t a, b;
    upsrv_start(&a, 'a');
    upsrv_start(&b, 'b');
    atomic_store(&a.ready, 0);
    const char *addrs[] = {a.addr, b.addr};
    tr_upstream_t *up = make_upstream("health", addrs, 2, health_fast);
    assert_int_equal(tr_client_run_health_checks(client, up), 0);
    assert_int_equal(tr_client_run_health_checks(client, up), -EALREADY);
    wait_health(up, 0, false);
    assert_true(atomic_load(&a.health_hits) >= 2);
    for (int i = 0; i < 6; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/status", &res);
        fetch(up, &o);
        assert_string_equal(res.body.data, "srv-b");
        result_free(&res);
    }
    assert_int_equal(atomic_load(&a.hits), 0);

    /* Both down: requests fail fast with no healthy instance. */
    atomic_store(&b.ready, 0);
    wait_health(up, 1, false);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/status", &res);
    assert_int_equal(tr_client_request(client, up, &o, NULL), TR_CLIENT_ENO_HEALTHY);
    assert_false(tr_upstream_available(up, uv_now(&loop)));

    atomic_store(&a.ready, 1);
    wait_health(up, 0, true);
    fetch(up, &o);
    assert_string_equal(res.body.data, "srv-a");
    result_free(&res);
    upsrv_stop(&a);
    upsrv_stop(&b);
    tr_upstream_release(up);
}

/* An instance that stops accepting connections fails its checks too. */
static void test_health_check_connect_failure(void **state)
{
    (void)state;
    char addr[32];
    int held;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", closed_port(&held));
    upsrv_t b;
    upsrv_start(&b, 'b');
    const char *addrs[] = {addr, b.addr};
    tr_upstream_t *up = make_upstream("health2", addrs, 2, health_fast);
    assert_int_equal(tr_client_run_health_checks(client, up), 0);
    wait_health(up, 0, false);
    assert_true(instance_healthy(up, 1));
    upsrv_stop(&b);
    tr_upstream_release(up);
    close(held);
}

static void test_round_robin(void **state)
{
    (void)state;
    upsrv_t s[3];
    const char *addrs[3];
    for (int i = 0; i < 3; i++) {
        upsrv_start(&s[i], (char)('a' + i));
        addrs[i] = s[i].addr;
    }
    tr_upstream_t *up = make_upstream("rr", addrs, 3, NULL);
    for (int i = 0; i < 30; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("GET", "/status", &res);
        fetch(up, &o);
        result_free(&res);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&s[i].hits), 10);
        upsrv_stop(&s[i]);
    }
    tr_upstream_release(up);
}

typedef struct spaced {
    uv_timer_t timer;
    tr_upstream_t *up;
    result_t res[10];
    int started;
} spaced_t;

static void spaced_fire(uv_timer_t *t)
{
    spaced_t *sp = t->data;
    tr_client_opts_t o = opts("GET", "/status", &sp->res[sp->started]);
    start(sp->up, &o);
    if (++sp->started == 10) uv_timer_stop(t);
}

/* One slow instance: least-request sends it almost nothing, round robin half. */
static int slow_instance_hits(tr_lb_policy_t lb)
{
    upsrv_t a, b;
    upsrv_start(&a, 'a');
    upsrv_start(&b, 'b');
    atomic_store(&a.delay_ms, 400);
    const char *addrs[] = {a.addr, b.addr};
    tr_upstream_config_t cfg;
    tr_upstream_config_defaults(&cfg);
    cfg.name = lb == TR_LB_LEAST_REQUEST ? "lr" : "rr-slow";
    cfg.instances = addrs;
    cfg.ninstances = 2;
    cfg.lb = lb;
    tr_upstream_t *up = NULL;
    assert_int_equal(tr_upstream_new(&cfg, &up), 0);
    spaced_t sp;
    memset(&sp, 0, sizeof sp);
    sp.up = up;
    for (int i = 0; i < 10; i++)
        result_init(&sp.res[i]);
    uv_timer_init(&loop, &sp.timer);
    sp.timer.data = &sp;
    uv_timer_start(&sp.timer, spaced_fire, 0, 15);
    bool all_started = false;
    while (sp.started < 10)
        uv_run(&loop, UV_RUN_ONCE);
    all_started = true;
    run_until(NULL, 5000);
    assert_true(all_started);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(sp.res[i].status, 200);
        result_free(&sp.res[i]);
    }
    close_now((uv_handle_t *)&sp.timer);
    int hits = atomic_load(&a.hits);
    assert_int_equal(hits + atomic_load(&b.hits), 10);
    upsrv_stop(&a);
    upsrv_stop(&b);
    tr_upstream_release(up);
    return hits;
}

static void test_least_request(void **state)
{
    (void)state;
    assert_true(slow_instance_hits(TR_LB_LEAST_REQUEST) <= 1);
    assert_int_equal(slow_instance_hits(TR_LB_ROUND_ROBIN), 5);
}

/* ---- tests: cancel ------------------------------------------------------ */

static const char *const endless[] = {"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789",
                                      "more"};

static void test_cancel_mid_response(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "cancel", endless, 2, 50, false);
    result_t res;
    result_init(&res);
    res.cancel_on_body = true;
    tr_client_opts_t o = opts("GET", "/", &res);
    start(up, &o);
    run_until(NULL, 5000);
    assert_true(res.cancelled);
    run_for(100); /* the "more" piece arrives at a closed connection */
    assert_false(res.callback_after_cancel);
    assert_int_equal(raw.closed, 1); /* the connection was not kept */
    result_free(&res);

    /* Cancel while waiting for the head and during backoff. */
    raw.mode = RAW_HANG;
    result_init(&res);
    o = opts("GET", "/", &res);
    tr_client_req_t *r = start(up, &o);
    run_for(30);
    tr_client_cancel(r);
    waiting--;
    run_for(30);
    assert_false(res.finished);
    assert_int_equal(raw.conns, 2);
    assert_int_equal(raw.closed, 2);
    result_free(&res);

    raw.mode = RAW_RESET;
    result_init(&res);
    o = opts("GET", "/", &res);
    o.retry.base_ms = o.retry.cap_ms = 500;
    r = start(up, &o);
    while (raw.requests < 3)
        uv_run(&loop, UV_RUN_ONCE);
    tr_client_cancel(r);
    waiting--;
    run_for(30);
    assert_false(res.finished);
    result_free(&res);

    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

/* ---- tests: upgrade ----------------------------------------------------- */

typedef struct upg {
    result_t res;
    uv_tcp_t *stream;
    tr_buf_t echoed;
    bool upgraded;
    char extra[16];
    bool saw_upgrade_header;
} upg_t;

static void upg_closed(uv_handle_t *h)
{
    free(h);
}

static void upg_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(size);
    buf->len = size;
}

static void upg_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    upg_t *u = s->data;
    if (nread > 0) tr_buf_append(&u->echoed, buf->base, (size_t)nread);
    free(buf->base);
}

static void upg_on_upgrade(tr_client_req_t *r, const tr_header_t *h, size_t n, uv_tcp_t *stream,
                           const char *extra, size_t extra_len, void *data)
{
    (void)r;
    upg_t *u = data;
    u->upgraded = true;
    u->stream = stream;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, "Upgrade") == 0 && strcmp(h[i].value, "websocket") == 0)
            u->saw_upgrade_header = true;
    snprintf(u->extra, sizeof u->extra, "%.*s", (int)extra_len, extra);
    stream->data = u;
    uv_read_start((uv_stream_t *)stream, upg_alloc, upg_read);
    raw_send((uv_stream_t *)stream, "ping", 4);
    waiting--;
}

static void upg_done(tr_client_req_t *r, void *data)
{
    cb_done(r, &((upg_t *)data)->res);
}

static void upg_error(tr_client_req_t *r, int err, void *data)
{
    cb_error(r, err, &((upg_t *)data)->res);
}

static void upg_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n, void *data)
{
    cb_head(r, status, h, n, &((upg_t *)data)->res);
}

static const tr_client_callbacks_t upg_callbacks = {
    .on_head = upg_head, .on_done = upg_done, .on_error = upg_error, .on_upgrade = upg_on_upgrade};

static void test_upgrade(void **state)
{
    (void)state;
    rawsrv_t raw;
    rawsrv_start(&loop, &raw, RAW_UPGRADE);
    const char *addr = raw.addr;
    tr_upstream_t *up = make_upstream("ws", &addr, 1, NULL);
    upg_t u;
    memset(&u, 0, sizeof u);
    result_init(&u.res);
    tr_buf_init(&u.echoed, 1024);
    tr_client_opts_t o;
    tr_client_opts_init(&o);
    o.target = "/ws";
    o.upgrade = true;
    tr_header_t h[] = {{"Upgrade", "websocket"}, {"Sec-WebSocket-Version", "13"}};
    o.headers = h;
    o.nheaders = 2;
    o.cb = &upg_callbacks;
    o.data = &u;
    assert_int_equal(tr_client_request(client, up, &o, NULL), 0);
    waiting++;
    run_until(NULL, 5000);
    assert_true(u.upgraded);
    assert_true(u.saw_upgrade_header);
    assert_string_equal(u.extra, "EXTRA");
    assert_non_null(strstr(raw.last_request.data, "\r\nConnection: Upgrade\r\n"));
    assert_non_null(strstr(raw.last_request.data, "\r\nUpgrade: websocket\r\n"));
    for (int i = 0; i < 100 && u.echoed.len < 4; i++)
        run_for(5);
    assert_int_equal(u.echoed.len, 4);
    assert_memory_equal(u.echoed.data, "ping", 4);
    uv_close((uv_handle_t *)u.stream, upg_closed);

    /* A refusal is an ordinary response. */
    static const char *const refuse[] = {"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno"};
    rawsrv_script(&raw, refuse, 1, 0, false);
    u.upgraded = false;
    assert_int_equal(tr_client_request(client, up, &o, NULL), 0);
    waiting++;
    run_until(NULL, 5000);
    assert_false(u.upgraded);
    assert_true(u.res.done);
    assert_int_equal(u.res.status, 400);
    result_free(&u.res);
    tr_buf_free(&u.echoed);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

/* ---- tests: propagation and argument checks ----------------------------- */

static void test_propagation(void **state)
{
    (void)state;
    upsrv_t u;
    upsrv_start(&u, 'a');
    const char *addr = u.addr;
    tr_upstream_t *up = make_upstream("prop", &addr, 1, NULL);
    tr_req_t req;
    memset(&req, 0, sizeof req);
    snprintf(req.request_id, sizeof req.request_id, "req-123");
    snprintf(req.trace.trace_id, sizeof req.trace.trace_id, "0af7651916cd43dd8448eb211c80319c");
    snprintf(req.trace.span_id, sizeof req.trace.span_id, "b7ad6b7169203331");
    req.trace.flags = 1;
    tr_client_propagation_t p;
    tr_header_t h[2];
    assert_int_equal(tr_client_propagate(&req, &p, h), 2);
    assert_int_equal(strlen(p.span_id), 16);
    assert_string_not_equal(p.span_id, req.trace.span_id);

    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/header?name=traceparent", &res);
    o.headers = h;
    o.nheaders = 2;
    fetch(up, &o);
    char want[64];
    snprintf(want, sizeof want, "00-0af7651916cd43dd8448eb211c80319c-%s-01", p.span_id);
    assert_string_equal(res.body.data, want);
    result_free(&res);

    result_init(&res);
    o = opts("GET", "/header?name=x-request-id", &res);
    o.headers = h;
    o.nheaders = 2;
    fetch(up, &o);
    assert_string_equal(res.body.data, "req-123");
    result_free(&res);
    upsrv_stop(&u);
    tr_upstream_release(up);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    const char *addr = "127.0.0.1:9";
    tr_upstream_t *up = make_upstream("args", &addr, 1, NULL);
    result_t res;
    result_init(&res);
    tr_header_t bad[] = {{"X-Evil", "a\r\nInjected: 1"}};
    tr_header_t badname[] = {{"X Evil", "a"}};
    tr_client_opts_t o = opts("GET", "/", &res);
    o.headers = bad;
    o.nheaders = 1;
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    o.headers = badname;
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    o = opts("G ET", "/", &res);
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    o = opts("GET", "/a b", &res);
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    o = opts("GET", "/", &res);
    o.cb = NULL;
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    o = opts("GET", "/", &res);
    o.upgrade = true; /* no on_upgrade */
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    assert_int_equal(tr_client_write(NULL, "x", 1), -EINVAL);
    result_free(&res);
    tr_upstream_release(up);
}

/* Nothing a caller passes can smuggle a line into the request head: every
 * byte RFC 9110 forbids in a method, header name, header value or target is
 * refused before anything is sent. */
static void test_head_injection_refused(void **state)
{
    (void)state;
    const char *addr = "127.0.0.1:9";
    tr_upstream_t *up = make_upstream("inject", &addr, 1, NULL);
    result_t res;
    result_init(&res);
    static const char *const bad_values[] = {"a\nInjected: 1", "a\rb", "a\x01z", "a\x7f", "\x1f"};
    static const char *const bad_names[] = {"",    "X:Y",   "X\tY",  "X(Y)", "X\"Y",
                                            "X/Y", "\x80X", "X\x7f", "{X}"};
    static const char *const bad_methods[] = {"", "GET\r\n", "GE T", "GET(", "G\x01"};
    static const char *const bad_targets[] = {"", "/a\tb", "/a\x7f", "/a\r\nX: 1", "/\x01"};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        tr_header_t h[] = {{"X-Ok", "fine"}, {"X-Evil", bad_values[i]}};
        tr_client_opts_t o = opts("GET", "/", &res);
        o.headers = h;
        o.nheaders = 2;
        if (tr_client_request(client, up, &o, NULL) != -EINVAL) fail_msg("value %zu accepted", i);
    }
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        tr_header_t h[] = {{bad_names[i], "v"}};
        tr_client_opts_t o = opts("GET", "/", &res);
        o.headers = h;
        o.nheaders = 1;
        if (tr_client_request(client, up, &o, NULL) != -EINVAL) fail_msg("name %zu accepted", i);
    }
    tr_header_t null_value[] = {{"X-Null", NULL}};
    tr_client_opts_t o = opts("GET", "/", &res);
    o.headers = null_value;
    o.nheaders = 1;
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    for (size_t i = 0; i < sizeof bad_methods / sizeof bad_methods[0]; i++) {
        o = opts(bad_methods[i], "/", &res);
        if (tr_client_request(client, up, &o, NULL) != -EINVAL) fail_msg("method %zu accepted", i);
    }
    o = opts(NULL, "/", &res);
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    for (size_t i = 0; i < sizeof bad_targets / sizeof bad_targets[0]; i++) {
        o = opts("GET", bad_targets[i], &res);
        if (tr_client_request(client, up, &o, NULL) != -EINVAL) fail_msg("target %zu accepted", i);
    }
    o = opts("GET", NULL, &res);
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    o = opts("POST", "/", &res);
    o.body_len = 3; /* a length without a body */
    assert_int_equal(tr_client_request(client, up, &o, NULL), -EINVAL);
    result_free(&res);
    tr_upstream_release(up);
}

/* Every client error has a log name, a message and the public error a proxy
 * answers with (connect problems 503, timeouts 504, the rest 502). */
static void test_error_names(void **state)
{
    (void)state;
    static const struct {
        int err;
        const char *name;
        tr_err_t pub;
    } want[] = {
        {TR_CLIENT_ECONNECT, "connect_failed", TR_ERR_UNAVAILABLE},
        {TR_CLIENT_ECONNECT_TIMEOUT, "connect_failed", TR_ERR_UNAVAILABLE},
        {TR_CLIENT_ETRY_TIMEOUT, "timeout", TR_ERR_DEADLINE_EXCEEDED},
        {TR_CLIENT_ETOTAL_TIMEOUT, "timeout", TR_ERR_DEADLINE_EXCEEDED},
        {TR_CLIENT_EIDLE_TIMEOUT, "timeout", TR_ERR_DEADLINE_EXCEEDED},
        {TR_CLIENT_ECLOSED, "closed", TR_ERR_BAD_GATEWAY},
        {TR_CLIENT_EPROTOCOL, "protocol", TR_ERR_BAD_GATEWAY},
        {TR_CLIENT_EBREAKER_OPEN, "breaker_open", TR_ERR_UNAVAILABLE},
        {TR_CLIENT_ENO_HEALTHY, "no_healthy", TR_ERR_UNAVAILABLE},
        {-ENOMEM, "error", TR_ERR_BAD_GATEWAY},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(tr_client_error_name(want[i].err), want[i].name);
        assert_int_equal(tr_client_error_public(want[i].err), want[i].pub);
        const char *msg = tr_client_strerror(want[i].err);
        assert_non_null(msg);
        assert_true(strlen(msg) > 5);
        for (size_t j = 0; j < i; j++)
            if (want[j].err != want[i].err)
                assert_string_not_equal(msg, tr_client_strerror(want[j].err));
    }
    assert_string_equal(tr_client_strerror(-ENOMEM), strerror(ENOMEM));
    assert_string_equal(tr_client_strerror(-100000), "unknown client error");
    assert_string_equal(tr_client_strerror(5), "unknown client error");
}

/* A retired upstream's pool goes away on the housekeeping timer while the
 * client keeps running. */
static void test_retired_upstream(void **state)
{
    (void)state;
    rawsrv_t raw;
    tr_upstream_t *up = scripted_upstream(&raw, "retire", fixed_hello, 1, 0, false);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    fetch(up, &o);
    assert_true(res.done);
    result_free(&res);
    tr_upstream_release(up); /* the client's pool still holds it */
    run_for(1100);
    assert_int_equal(raw.closed, 1); /* the idle connection went with the pool */
    rawsrv_stop(&raw);
}

static const char *const hello_then_close[] = {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"};

static void short_idle(tr_upstream_config_t *cfg)
{
    cfg->idle_timeout_ms = 50;
}

/* An upstream closing an idle pooled connection is noticed at once (the next
 * request does not fail on it), and idle connections expire. */
static void test_idle_connections(void **state)
{
    (void)state;
    rawsrv_t raw;
    rawsrv_start(&loop, &raw, RAW_SCRIPT);
    rawsrv_script(&raw, hello_then_close, 1, 0, true);
    const char *addr = raw.addr;
    tr_upstream_t *up = make_upstream("idle", &addr, 1, short_idle);
    for (int i = 0; i < 3; i++) {
        result_t res;
        result_init(&res);
        tr_client_opts_t o = opts("POST", "/", &res); /* would not be retried */
        fetch(up, &o);
        assert_true(res.done);
        assert_string_equal(res.body.data, "hello");
        result_free(&res);
        run_for(20);
    }
    assert_int_equal(raw.conns, 3);

    rawsrv_script(&raw, hello_then_close, 1, 0, false);
    result_t res;
    result_init(&res);
    tr_client_opts_t o = opts("GET", "/", &res);
    fetch(up, &o);
    assert_true(res.done);
    result_free(&res);
    int closed = raw.closed;
    run_for(1100); /* the housekeeping timer closes it after idle_timeout_ms */
    assert_int_equal(raw.closed, closed + 1);
    rawsrv_stop(&raw);
    tr_upstream_release(up);
}

int main(void)
{
    tr_log_init("test", TR_LOG_ERROR);
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_pool_reuse),
        T(test_kit_server_bodies),
        T(test_chunked_response),
        T(test_close_delimited_and_cut),
        T(test_interim_and_no_content),
        T(test_malformed_response),
        T(test_stream_pause_resume),
        T(test_pause_in_head),
        T(test_streamed_request_body),
        T(test_connect_refused),
        T(test_connect_timeout),
        T(test_try_and_total_timeouts),
        T(test_idle_body_timeout),
        T(test_retry_idempotent_only),
        T(test_retry_on_reset),
        T(test_retry_budget),
        T(test_breaker),
        T(test_outlier_ejection),
        T(test_health_checks),
        T(test_health_check_connect_failure),
        T(test_round_robin),
        T(test_least_request),
        T(test_cancel_mid_response),
        T(test_upgrade),
        T(test_propagation),
        T(test_invalid_arguments),
        T(test_head_injection_refused),
        T(test_error_names),
        T(test_retired_upstream),
        T(test_idle_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

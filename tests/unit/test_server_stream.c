/*
 * test_server_stream.c - the server's streaming extensions over real
 * loopback sockets: the on_headers hook and how it shares requests with the
 * router, streamed request bodies (pause/resume backpressure, de-chunking,
 * limits, timeouts, clients that leave), streamed answers (chunked, sized,
 * HEAD, HTTP/1.0, keep-alive and pipelining after them), early answers, and
 * the connection hand-off for upgrades; plus the parser's streaming modes.
 *
 * As in test_server.c the test thread is a blocking client (2 s receive
 * timeout) and the server runs one worker unless said otherwise. Handlers
 * record what they saw in atomics the test thread reads. Every test stops
 * the server and checks that the worker's loop had no handle left open.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kit/http.h"
#include "kit/http_parser.h"
#include "kit/router.h"
#include "kit/server.h"
#include "kit/server_internal.h"
#include "testnet.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

#define MAX_HEADER_BYTES 1024
#define SLAB_BYTES       (64 * 1024)

/* ---- what handlers saw ------------------------------------------------- */

static atomic_int open_handles, worker_stops, hook_calls, completions;
static atomic_int last_status;   /* last status reported to on_complete */
static atomic_int end_status;    /* status of the last body on_end */
static atomic_int end_calls;     /* body on_end calls */
static atomic_int cancel_calls;  /* tr_req_on_cancel callbacks */
static atomic_int write_errors;  /* write callbacks with a negative status */
static atomic_int order_errors;  /* write callbacks out of order */
static atomic_int paused_data;   /* on_data while paused: must stay 0 */
static atomic_int dispatched;    /* streamed/claimed requests that reached dispatch */
static atomic_ullong body_bytes; /* body bytes the upload handler received */
static atomic_ullong held_max;   /* largest stash seen from inside on_data */
static atomic_ullong piece_max;  /* largest on_data piece */
static atomic_int first_data;    /* the upload handler got its first piece */
static atomic_int upgraded;      /* connections handed off */
static atomic_int checks_failed; /* handler-side expectations that failed */
static char hook_request_id[TR_REQUEST_ID_MAX + 1];

static void check(bool ok)
{
    if (!ok) atomic_fetch_add(&checks_failed, 1);
}

static void reset_counters(void)
{
    atomic_store(&open_handles, 0);
    atomic_store(&worker_stops, 0);
    atomic_store(&hook_calls, 0);
    atomic_store(&completions, 0);
    atomic_store(&last_status, 0);
    atomic_store(&end_status, 1);
    atomic_store(&end_calls, 0);
    atomic_store(&cancel_calls, 0);
    atomic_store(&write_errors, 0);
    atomic_store(&order_errors, 0);
    atomic_store(&paused_data, 0);
    atomic_store(&dispatched, 0);
    atomic_store(&body_bytes, 0);
    atomic_store(&held_max, 0);
    atomic_store(&piece_max, 0);
    atomic_store(&first_data, 0);
    atomic_store(&upgraded, 0);
    atomic_store(&checks_failed, 0);
}

static long query_long(tr_req_t *req, const char *name, long dflt)
{
    const char *v = tr_req_query(req, name);
    return v ? strtol(v, NULL, 10) : dflt;
}

static uint32_t fnv(uint32_t h, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)data[i]) * 16777619u;
    return h;
}

/* ---- the upload handler: a streamed body -------------------------------- */

/* ?pause=N: pause after every piece, resume N ms later (0: next loop turn);
 * ?hold=N: pause after the first piece for N ms; ?early=1: answer 200
 * before the body ended; ?echo=1: stream the body back as a chunked answer,
 * one write per piece, pausing until each write called back. */
typedef struct upload {
    tr_req_t *req;
    uv_timer_t timer;
    uint64_t bytes;
    uint32_t hash;
    long pause_ms, hold_ms;
    bool echo;
    bool paused;
    bool answered;
    int pending_writes;
    int next_write, next_done;
} upload_t;

static void upload_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void upload_finish(upload_t *u)
{
    uv_close((uv_handle_t *)&u->timer, upload_timer_closed);
}

static void upload_resume(uv_timer_t *t)
{
    upload_t *u = t->data;
    u->paused = false;
    tr_req_body_resume(u->req);
}

typedef struct echo_piece {
    upload_t *u;
    int seq;
    size_t len;
    char data[];
} echo_piece_t;

static void echo_written(tr_req_t *req, int status, void *arg)
{
    echo_piece_t *p = arg;
    upload_t *u = p->u;
    (void)req;
    if (status < 0) atomic_fetch_add(&write_errors, 1);
    if (p->seq != u->next_done++) atomic_fetch_add(&order_errors, 1);
    u->pending_writes--;
    free(p);
    if (u->pending_writes == 0 && !u->answered) {
        u->paused = false;
        tr_req_body_resume(u->req);
    }
    if (u->pending_writes == 0 && u->answered) upload_finish(u);
}

static void upload_data(tr_req_t *req, const char *data, size_t len, void *arg)
{
    upload_t *u = arg;
    if (u->paused) atomic_fetch_add(&paused_data, 1);
    u->bytes += len;
    u->hash = fnv(u->hash, data, len);
    atomic_store(&body_bytes, u->bytes);
    atomic_store(&first_data, 1);
    size_t held = tr__req_held_bytes(req);
    if (held > atomic_load(&held_max)) atomic_store(&held_max, held);
    if (len > atomic_load(&piece_max)) atomic_store(&piece_max, len);

    if (u->echo) {
        echo_piece_t *p = malloc(sizeof(*p) + len);
        p->u = u;
        p->seq = u->next_write++;
        p->len = len;
        memcpy(p->data, data, len);
        check(tr_respond_write(req, p->data, len, echo_written, p) == 0);
        u->pending_writes++;
        u->paused = true;
        tr_req_body_pause(req);
        return;
    }
    if (u->hold_ms > 0) {
        u->paused = true;
        tr_req_body_pause(req);
        uv_timer_start(&u->timer, upload_resume, (uint64_t)u->hold_ms, 0);
        u->hold_ms = 0;
        return;
    }
    if (u->pause_ms >= 0) {
        u->paused = true;
        tr_req_body_pause(req);
        uv_timer_start(&u->timer, upload_resume, (uint64_t)u->pause_ms, 0);
    }
}

static void upload_end(tr_req_t *req, int status, void *arg)
{
    upload_t *u = arg;
    char text[96];
    atomic_store(&end_status, status);
    atomic_fetch_add(&end_calls, 1);
    uv_timer_stop(&u->timer);
    u->answered = true;
    if (status != 0) {
        tr_respond_body_error(req, status);
    } else if (u->echo) {
        check(tr_respond_end(req) == 0);
    } else {
        int n = snprintf(text, sizeof(text), "bytes=%llu hash=%08x", (unsigned long long)u->bytes,
                         u->hash);
        tr_respond(req, 200, "text/plain", text, (size_t)n);
    }
    if (u->pending_writes == 0) upload_finish(u);
}

static void upload_cancelled(tr_req_t *req, void *arg)
{
    (void)req;
    (void)arg;
    atomic_fetch_add(&cancel_calls, 1);
}

static void handle_upload(tr_req_t *req)
{
    upload_t *u = calloc(1, sizeof(*u));
    u->req = req;
    u->hash = 2166136261u;
    u->pause_ms = query_long(req, "pause", -1);
    u->hold_ms = query_long(req, "hold", 0);
    u->echo = query_long(req, "echo", 0) != 0;
    uv_timer_init(req->worker->loop, &u->timer);
    u->timer.data = u;
    tr_req_on_cancel(req, upload_cancelled, u);
    if (query_long(req, "early", 0)) {
        /* Answer without reading the body: the server drops the rest. */
        check(tr_req_body_start(req, NULL, upload_end, u) == 0);
        u->answered = true;
        tr_respond(req, 200, "text/plain", "early", 5);
        upload_finish(u);
        return;
    }
    if (u->echo) check(tr_respond_start(req, 200, "application/octet-stream", -1) == 0);
    check(tr_req_body_start(req, upload_data, upload_end, u) == 0);
    check(tr_req_body_start(req, upload_data, upload_end, u) == -EINVAL);
}

/* ---- streamed answers --------------------------------------------------- */

/* /res/{chunked,sized,abort,short}?n=pieces&ms=delay: n pieces "piece-<i>;"
 * written one after the other, each after the previous one called back
 * (the proxy pattern), with a timer of ms between them. */
typedef struct res_job {
    tr_req_t *req;
    uv_timer_t timer;
    int n, next, done;
    long ms;
    bool abort_midway, short_body, empty;
    int empty_done;
    char pieces[16][24];
} res_job_t;

static void res_job_closed(uv_handle_t *h)
{
    free(h->data);
}

static void res_next(uv_timer_t *t);

static void res_written(tr_req_t *req, int status, void *arg)
{
    res_job_t *j = arg;
    (void)req;
    if (status < 0) {
        atomic_fetch_add(&write_errors, 1);
        tr_respond_abort(j->req);
        uv_close((uv_handle_t *)&j->timer, res_job_closed);
        return;
    }
    if (j->done++ != j->next - 1) atomic_fetch_add(&order_errors, 1);
    uv_timer_start(&j->timer, res_next, (uint64_t)j->ms, 0);
}

/* A zero-length write calls back in order: after the piece before it,
 * before the piece after it. */
static void empty_written(tr_req_t *req, int status, void *arg)
{
    res_job_t *j = arg;
    (void)req;
    if (status < 0) return;
    if (j->done != j->next - 1 || j->empty_done++ != j->done) atomic_fetch_add(&order_errors, 1);
}

static void res_next(uv_timer_t *t)
{
    res_job_t *j = t->data;
    if (j->next == j->n || (j->abort_midway && j->next == j->n / 2)) {
        if (j->abort_midway)
            tr_respond_abort(j->req);
        else
            check(tr_respond_end(j->req) == 0);
        uv_close((uv_handle_t *)&j->timer, res_job_closed);
        return;
    }
    const char *p = j->pieces[j->next++];
    if (j->empty) check(tr_respond_write(j->req, "", 0, empty_written, j) == 0);
    int rc = tr_respond_write(j->req, p, strlen(p), res_written, j);
    if (rc != 0) {
        /* The client is gone: release the request. */
        check(rc == -ECONNRESET);
        tr_respond_abort(j->req);
        uv_close((uv_handle_t *)&j->timer, res_job_closed);
    }
}

static void res_cancelled(tr_req_t *req, void *arg)
{
    (void)req;
    (void)arg;
    atomic_fetch_add(&cancel_calls, 1);
}

static void handle_res(tr_req_t *req)
{
    res_job_t *j = calloc(1, sizeof(*j));
    const char *kind = req->path + strlen("/res/");
    size_t total = 0;
    j->req = req;
    j->n = (int)query_long(req, "n", 3);
    j->ms = query_long(req, "ms", 0);
    if (j->n > 16) j->n = 16;
    for (int i = 0; i < j->n; i++) {
        snprintf(j->pieces[i], sizeof(j->pieces[i]), "piece-%d;", i);
        total += strlen(j->pieces[i]);
    }
    j->abort_midway = strcmp(kind, "abort") == 0;
    j->empty = query_long(req, "empty", 0) != 0;
    j->short_body = strcmp(kind, "short") == 0;
    uv_timer_init(req->worker->loop, &j->timer);
    j->timer.data = j;

    int64_t length = strcmp(kind, "sized") == 0 || j->short_body ? (int64_t)total : -1;
    if (j->short_body) length += 10; /* announces more than it will send */
    check(tr_res_header(req, "X-Stream", "yes") == 0);
    check(tr_res_header(req, "Content-Length", "1") == -EINVAL);
    check(tr_res_header(req, "Transfer-Encoding", "chunked") == -EINVAL);
    if (query_long(req, "nodate", 0)) {
        tr_res_omit(req, TR_RES_OMIT_DATE);
        check(tr_res_header(req, "Date", "Mon, 01 Jan 2024 00:00:00 GMT") == 0);
    }
    check(tr_respond_write(req, "x", 1, NULL, NULL) == -EINVAL); /* not started */
    check(tr_respond_start(req, 200, "text/plain", length) == 0);
    check(tr_respond_started(req));
    check(tr_respond_start(req, 200, "text/plain", length) == -EINVAL);
    tr_req_on_cancel(req, res_cancelled, j);
    if (query_long(req, "copy", 0)) {
        /* No callbacks: the server copies, the caller just writes it all. */
        for (int i = 0; i < j->n; i++)
            check(tr_respond_write(req, j->pieces[i], strlen(j->pieces[i]), NULL, NULL) == 0);
        if (length >= 0) check(tr_respond_write(req, "x", 1, NULL, NULL) == -EINVAL);
        check(tr_respond_end(req) == 0);
        check(tr_respond_end(req) == -EINVAL);
        uv_close((uv_handle_t *)&j->timer, res_job_closed);
        return;
    }
    uv_timer_start(&j->timer, res_next, (uint64_t)j->ms, 0);
}

/* ---- upgrade hand-off --------------------------------------------------- */

typedef struct ws_conn {
    uv_tcp_t tcp;
    struct ws_conn *next;
    bool closing;
} ws_conn_t;

static ws_conn_t *ws_list; /* the (single) worker's handed-off connections */

typedef struct ws_write {
    uv_write_t req;
    char data[];
} ws_write_t;

static void ws_closed(uv_handle_t *h)
{
    ws_conn_t *ws = h->data;
    for (ws_conn_t **pp = &ws_list; *pp; pp = &(*pp)->next) {
        if (*pp == ws) {
            *pp = ws->next;
            break;
        }
    }
    free(ws);
}

static void ws_close(ws_conn_t *ws)
{
    if (ws->closing) return;
    ws->closing = true;
    uv_close((uv_handle_t *)&ws->tcp, ws_closed);
}

static void ws_written(uv_write_t *req, int status)
{
    (void)status;
    free(req->data);
}

static void ws_send(ws_conn_t *ws, const char *data, size_t len)
{
    ws_write_t *w = malloc(sizeof(*w) + len);
    memcpy(w->data, data, len);
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&ws->tcp, &b, 1, ws_written) != 0) free(w);
}

static void ws_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = suggested;
}

static void ws_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ws_conn_t *ws = s->data;
    if (nread > 0) ws_send(ws, buf->base, (size_t)nread);
    if (nread < 0) ws_close(ws);
    free(buf->base);
}

typedef struct ws_job {
    uv_timer_t timer;
    tr_req_t *req;
} ws_job_t;

static void ws_job_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Takes the connection over, answers 101 on it ourselves, echoes what came
 * early, then echoes everything. */
static void ws_upgrade(tr_req_t *req)
{
    uv_loop_t *loop = req->worker->loop;
    tr_upgrade_t up;
    int rc = tr_req_upgrade(req, 101, &up);
    check(rc == 0);
    if (rc != 0) {
        tr_respond_error(req, TR_ERR_INTERNAL, "upgrade failed", NULL);
        return;
    }
    atomic_fetch_add(&upgraded, 1);
    ws_conn_t *ws = calloc(1, sizeof(*ws));
    uv_tcp_init(loop, &ws->tcp);
    ws->tcp.data = ws;
    check(uv_tcp_open(&ws->tcp, up.fd) == 0);
    ws->next = ws_list;
    ws_list = ws;
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                               "Connection: Upgrade\r\n\r\n";
    ws_send(ws, head, sizeof(head) - 1);
    if (up.pending_len) ws_send(ws, up.pending, up.pending_len);
    free(up.pending);
    uv_read_start((uv_stream_t *)&ws->tcp, ws_alloc, ws_read);
}

/* As a proxy does after the upstream's 101. */
static void ws_take_over(uv_timer_t *t)
{
    ws_job_t *job = t->data;
    uv_close((uv_handle_t *)t, ws_job_closed);
    ws_upgrade(job->req);
}

static void handle_ws(tr_req_t *req)
{
    tr_upgrade_t up;
    /* Still being dispatched with the body complete: allowed, but this test
     * takes over later, like a proxy after the upstream's 101. */
    check(tr_req_body_length(req) == 0);
    if (query_long(req, "bad", 0)) {
        check(tr_respond_start(req, 200, NULL, 0) == 0);
        check(tr_req_upgrade(req, 101, &up) == -EINVAL);
        check(tr_respond_end(req) == 0);
        return;
    }
    if (query_long(req, "sync", 0)) {
        /* From inside dispatch: the early bytes are still in the server's
         * input, not yet in its stash. */
        ws_upgrade(req);
        return;
    }
    ws_job_t *job = calloc(1, sizeof(*job));
    job->req = req;
    uv_timer_init(req->worker->loop, &job->timer);
    job->timer.data = job;
    uv_timer_start(&job->timer, ws_take_over, 20, 0);
}

/* ---- routing: router first, then the hook ------------------------------- */

static void handle_hello(tr_req_t *req)
{
    tr_respond(req, 200, "text/plain", "hello", 5);
}

static void buffered_data(tr_req_t *req, const char *data, size_t len, void *arg)
{
    char *seen = arg;
    (void)req;
    check(seen[0] == '\0' && len < 64);
    memcpy(seen, data, len);
    seen[len] = '\0';
}

static void buffered_end(tr_req_t *req, int status, void *arg)
{
    char text[96];
    check(status == 0);
    int n = snprintf(text, sizeof(text), "read=%s", (char *)arg);
    tr_respond(req, 200, "text/plain", text, (size_t)n);
}

static void handle_buffered(tr_req_t *req)
{
    char text[128];
    if (query_long(req, "read", 0)) {
        /* A buffered body read like a streamed one: one piece, then end. */
        char *seen = tr_req_alloc(req, 64);
        seen[0] = '\0';
        check(tr_req_body_start(req, buffered_data, buffered_end, seen) == 0);
        return;
    }
    const char *tag = req->handler_data;
    check(req->route == NULL);
    check(tag && strcmp(tag, "claimed") == 0);
    check(strcmp(req->request_id, hook_request_id) == 0);
    check(!req->tls && req->local_port > 0);
    int n = snprintf(text, sizeof(text), "len=%zu body=%s", req->body_len, req->body);
    tr_respond(req, 200, "text/plain", text, (size_t)n);
}

typedef void (*handler_fn)(tr_req_t *req);

static int on_headers(tr_req_t *req, tr_body_mode_t *mode, size_t *max_body)
{
    atomic_fetch_add(&hook_calls, 1);
    check(*mode == TR_BODY_BUFFER && *max_body == 4096 && req->route == NULL);
    check(req->body_len == 0);
    if (strncmp(req->path, "/up", 3) == 0) {
        *mode = TR_BODY_STREAM;
        *max_body = (size_t)query_long(req, "max", 64L * 1024 * 1024);
        req->handler_data = (void *)handle_upload;
        return 0;
    }
    if (strncmp(req->path, "/res/", 5) == 0) {
        req->handler_data = (void *)handle_res;
        *mode = TR_BODY_STREAM;
        return 0;
    }
    if (strcmp(req->path, "/ws") == 0) {
        req->handler_data = (void *)handle_ws;
        return 0;
    }
    if (strcmp(req->path, "/buf") == 0) {
        char *tag = tr_req_strdup(req, "claimed");
        memcpy(hook_request_id, req->request_id, sizeof(hook_request_id));
        req->handler_data = tag;
        *max_body = 100;
        return 0;
    }
    if (strcmp(req->path, "/deny") == 0) {
        tr_res_header(req, "WWW-Authenticate", "Bearer");
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "no", NULL);
        return 0;
    }
    if (strcmp(req->path, "/limited") == 0) return 429;
    if (strcmp(req->path, "/hello") == 0) return 405; /* the router knew the path */
    return 404;
}

static void dispatch(tr_req_t *req)
{
    if (req->route) {
        req->route->handler(req);
        return;
    }
    atomic_fetch_add(&dispatched, 1);
    if (strcmp(req->path, "/buf") == 0)
        handle_buffered(req);
    else
        ((handler_fn)req->handler_data)(req);
}

static const tr_route_t routes[] = {
    {"GET", "/hello", handle_hello, TR_AUTH_NONE, NULL, 0},
};

static void count_open(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) atomic_fetch_add(&open_handles, 1);
}

static int worker_start(tr_worker_t *w)
{
    (void)w;
    return 0;
}

static void worker_stop(tr_worker_t *w)
{
    /* What we took over is ours to close (http.h, tr_req_upgrade). */
    for (ws_conn_t *ws = ws_list; ws; ws = ws->next)
        ws_close(ws);
    atomic_fetch_add(&worker_stops, 1);
    uv_walk(w->loop, count_open, NULL);
}

static void on_complete(tr_req_t *req, int status, size_t bytes, double seconds)
{
    (void)req;
    (void)bytes;
    (void)seconds;
    atomic_store(&last_status, status);
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
    cfg->on_headers = on_headers;
    cfg->worker_start = worker_start; /* worker_stop runs only after it */
    cfg->worker_stop = worker_stop;
    cfg->on_complete = on_complete;
    cfg->max_header_bytes = MAX_HEADER_BYTES;
    cfg->max_body_bytes = 4096;
    cfg->header_timeout_ms = 500;
    cfg->idle_timeout_ms = 500;
    cfg->drain_timeout_ms = 2000;
}

static void start(const tr_server_config_t *cfg)
{
    reset_counters();
    assert_int_equal(tr_server_start(cfg, &fx.srv), 0);
    fx.port = tr_server_port(fx.srv);
}

static void start_default(void)
{
    tr_server_config_t cfg;
    base_config(&cfg);
    start(&cfg);
}

static void stop(void)
{
    tr_server_stop(fx.srv);
    tr_server_wait(fx.srv);
    fx.srv = NULL;
    assert_int_equal(atomic_load(&worker_stops), 1);
    assert_int_equal(atomic_load(&open_handles), 0);
    assert_int_equal(atomic_load(&checks_failed), 0);
    assert_int_equal(atomic_load(&paused_data), 0);
    assert_int_equal(atomic_load(&order_errors), 0);
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

static bool wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 400 && atomic_load(v) < want; i++)
        testnet_sleep_ms(5);
    return atomic_load(v) >= want;
}

/* ---- the client (testnet.h) -------------------------------------------- */

/* sndbuf > 0 pins a small send buffer, so a large body meets backpressure
 * early. */
static testnet_client_t *client_open_with(int sndbuf)
{
    return testnet_client_open(fx.port, (testnet_opts_t){.sndbuf = sndbuf, .send_timeout = true});
}

static testnet_client_t *client_open(void)
{
    return client_open_with(0);
}

static void get_hello(testnet_client_t *c)
{
    testnet_response_t r;
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "hello", 5);
}

static void fill_pattern(char *buf, size_t len, uint64_t offset)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)((offset + i) * 31 + 7);
}

/* ---- tests: routing and the hook ---------------------------------------- */

static void test_router_first_then_hook(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();

    get_hello(c); /* the router's: the hook is not asked */
    assert_int_equal(atomic_load(&hook_calls), 0);

    testnet_send_str(c, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));

    /* The router knows /hello under GET only: the hook decides, the server
     * answers 405 with the router's Allow. */
    testnet_send_str(c, "PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(testnet_find_header(&r, "Allow"), "GET, HEAD");

    testnet_send_str(c, "GET /limited HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "\"code\":\"rate_limited\""));

    /* Claimed and buffered: dispatch gets the hook's request, body whole. */
    testnet_send_str(c, "POST /buf HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "len=5 body=hello");
    assert_string_equal(testnet_find_header(&r, "X-Request-Id"), hook_request_id);

    /* Buffered for the hook: 100 Continue once the hook chose the mode. */
    testnet_send_str(
        c, "POST /buf HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_int_equal(r.status, 100);
    testnet_send_str(c, "ok");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(r.body, "len=2 body=ok");

    testnet_send_str(c, "POST /buf?read=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(r.body, "read=xyz");
    testnet_send_str(c, "GET /buf?read=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(r.body, "read=");

    /* Over the hook's limit (100): 413 before dispatch, then close. */
    testnet_send_str(c, "POST /buf HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 413);
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    assert_int_equal(atomic_load(&dispatched), 4);
    assert_int_equal(atomic_load(&hook_calls), 8);
    stop();
}

static void test_hook_answers_early_body_discarded_or_closed(void **state)
{
    (void)state;
    testnet_response_t r;
    char big[2048];
    start_default();

    /* A small body after an early 401: read and dropped, connection kept,
     * even when the body arrives after the answer. */
    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /deny HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(testnet_find_header(&r, "WWW-Authenticate"), "Bearer");
    assert_null(testnet_find_header(&r, "Connection"));
    testnet_send_str(c, "56789");
    get_hello(c);
    /* Chunked, in the same packet as the next request. */
    testnet_send_str(c, "POST /deny HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3\r\nabc\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 401);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    testnet_client_close(c);

    /* A large announced body is not worth reading: Connection: close. */
    c = client_open();
    testnet_send_str(c, "POST /deny HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
    memset(big, 'x', sizeof(big));
    testnet_send(c, big, sizeof(big));
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);

    /* Expect: 100-continue never answered: close rather than wait. */
    c = client_open();
    testnet_send_str(
        c, "POST /deny HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    testnet_client_close(c);
    assert_int_equal(atomic_load(&dispatched), 0);
    stop();
}

/* ---- tests: streamed request bodies ------------------------------------- */

typedef struct sender {
    int fd;
    uint64_t total;
    atomic_ullong sent;
    atomic_int failed;
} sender_t;

static void *send_body(void *arg)
{
    sender_t *s = arg;
    static char chunk[32 * 1024];
    uint64_t off = 0;
    while (off < s->total) {
        size_t n = s->total - off < sizeof(chunk) ? (size_t)(s->total - off) : sizeof(chunk);
        fill_pattern(chunk, n, off);
        size_t done = 0;
        while (done < n) {
            ssize_t k = send(s->fd, chunk + done, n - done, MSG_NOSIGNAL);
            if (k <= 0) {
                atomic_store(&s->failed, 1);
                return NULL;
            }
            done += (size_t)k;
            atomic_store(&s->sent, off + done);
        }
        off += n;
    }
    return NULL;
}

static uint32_t pattern_hash(uint64_t total)
{
    static char chunk[32 * 1024];
    uint32_t h = 2166136261u;
    for (uint64_t off = 0; off < total; off += sizeof(chunk)) {
        size_t n = total - off < sizeof(chunk) ? (size_t)(total - off) : sizeof(chunk);
        fill_pattern(chunk, n, off);
        h = fnv(h, chunk, n);
    }
    return h;
}

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* 20 MB to a handler that holds the body for 400 ms, then pauses after
 * every piece and resumes on the next loop turn. While it holds, the client
 * cannot push the body: the server stops reading instead of buffering. */
static void test_stream_body_backpressure_20mb(void **state)
{
    (void)state;
    testnet_response_t r;
    char want[96];
    const uint64_t total = 20u * 1024 * 1024;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.idle_timeout_ms = 5000;
    start(&cfg);
    long rss_before = max_rss_kib();

    testnet_client_t *c = client_open_with(64 * 1024);
    char head[128];
    snprintf(head, sizeof(head),
             "POST /up?hold=400&pause=0 HTTP/1.1\r\nHost: t\r\nContent-Length: %llu\r\n\r\n",
             (unsigned long long)total);
    testnet_send_str(c, head);
    sender_t s = {.fd = c->fd, .total = total};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_body, &s), 0);

    assert_true(wait_for(&first_data, 1));
    testnet_sleep_ms(250); /* the handler holds until 400 ms */
    uint64_t sent = atomic_load(&s.sent), got = atomic_load(&body_bytes);
    assert_true(sent < total);
    assert_true(sent - got < total - 4u * 1024 * 1024);

    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&s.failed), 0);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    snprintf(want, sizeof(want), "bytes=%llu hash=%08x", (unsigned long long)total,
             pattern_hash(total));
    assert_string_equal(r.body, want);
    /* What the server held in user space stayed within one read past the
     * stash limit, and no piece was larger than a read. */
    assert_true(atomic_load(&held_max) <= MAX_HEADER_BYTES + SLAB_BYTES);
    assert_true(atomic_load(&piece_max) <= SLAB_BYTES);
    assert_int_equal(atomic_load(&end_status), 0);
#ifndef UNDER_SANITIZER
    assert_true(max_rss_kib() - rss_before < 8 * 1024);
#else
    (void)rss_before;
#endif
    get_hello(c); /* keep-alive after a streamed body */
    testnet_client_close(c);
    stop();
}

static void test_stream_chunked_body_echoed(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /up?echo=1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5;ext=1\r\nhello\r\n");
    testnet_sleep_ms(30);
    testnet_send_str(c, "7\r\n, world\r\n");
    testnet_sleep_ms(30);
    testnet_send_str(c, "0\r\nX-Trailer: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_int_equal(r.body_len, 12);
    assert_memory_equal(r.body, "hello, world", 12);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0); /* the pipelined one */
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "hello", 5);
    testnet_client_close(c);
    assert_int_equal(atomic_load(&end_status), 0);
    assert_int_equal(atomic_load(&write_errors), 0);
    stop();
}

static void test_stream_body_limit_413(void **state)
{
    (void)state;
    testnet_response_t r;
    char body[700];
    start_default();
    memset(body, 'y', sizeof(body));

    /* Announced over the limit: 413 at once, the handler never runs. */
    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /up?max=1000 HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 413);
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    assert_int_equal(atomic_load(&dispatched), 0);

    /* Chunked, growing past it mid-stream: on_end(-EMSGSIZE), then 413. */
    c = client_open();
    testnet_send_str(c,
                     "POST /up?max=1000 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    testnet_send_str(c, "2bc\r\n");
    testnet_send(c, body, sizeof(body));
    testnet_send_str(c, "\r\n2bc\r\n");
    testnet_send(c, body, sizeof(body));
    testnet_send_str(c, "\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"code\":\"payload_too_large\""));
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    assert_int_equal(atomic_load(&end_status), -EMSGSIZE);

    /* Malformed chunk framing mid-stream: on_end(-EBADMSG), then 400. */
    c = client_open();
    testnet_send_str(
        c, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 400);
    testnet_client_close(c);
    assert_int_equal(atomic_load(&end_status), -EBADMSG);
    stop();
}

static void test_stream_body_timeout_and_expect(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();

    /* The body stops coming: -ETIMEDOUT to the handler, 408. */
    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 408);
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    assert_int_equal(atomic_load(&end_status), -ETIMEDOUT);

    /* 100 Continue comes when the handler starts reading. */
    c = client_open();
    testnet_send_str(
        c,
        "POST /up?echo=1 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_int_equal(r.status, 100);
    testnet_send_str(c, "body");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "body", 4);

    /* An early answer that skips a small body keeps the connection. */
    testnet_send_str(c, "POST /up?early=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabcdef");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "early", 5);
    get_hello(c);
    testnet_client_close(c);
    stop();
}

/* A streamed body dripped one chunk per 100 ms never trips the 500 ms idle
 * timer; the 600 ms request deadline ends it: -ETIMEDOUT to the handler,
 * whose answer is 408. */
static void test_stream_body_request_deadline(void **state)
{
    (void)state;
    testnet_response_t r;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.request_timeout_ms = 600;
    start(&cfg);

    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int sent = 0;
    while (poll(&pfd, 1, 100) == 0) {
        assert_true(sent < 40); /* 4 s of drip: the deadline did not fire */
        testnet_send_str(c, "1;drip=1\r\nx\r\n");
        sent++;
    }
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 408);
    assert_true(testnet_closed_by_server(c));
    testnet_client_close(c);
    assert_int_equal(atomic_load(&end_status), -ETIMEDOUT);
    assert_true(sent >= 4);
    stop();
}

static void test_client_disconnect_mid_stream(void **state)
{
    (void)state;
    start_default();

    /* Half the body, then a reset: the body ends with -ECONNRESET; the
     * handler answers there, so its cancel callback has nothing to add. */
    testnet_client_t *c = client_open();
    testnet_send_str(c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    char part[5000];
    memset(part, 'z', sizeof(part));
    testnet_send(c, part, sizeof(part));
    assert_true(wait_for(&first_data, 1));
    testnet_client_reset(c);
    assert_true(wait_for(&end_calls, 1));
    assert_int_equal(atomic_load(&end_status), -ECONNRESET);
    assert_int_equal(atomic_load(&cancel_calls), 0);

    /* A half-close (FIN) before the body is complete. */
    atomic_store(&first_data, 0);
    c = client_open();
    testnet_send_str(c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    testnet_send(c, part, sizeof(part));
    assert_true(wait_for(&first_data, 1));
    shutdown(c->fd, SHUT_WR);
    assert_true(wait_for(&end_calls, 2));
    assert_int_equal(atomic_load(&end_status), -ECONNRESET);
    testnet_client_close(c);

    /* Leaving while the handler waits with nothing to read or write (a
     * slow upstream): only the cancel callback can tell it. */
    c = client_open();
    testnet_send_str(c, "GET /res/chunked?n=4&ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    testnet_sleep_ms(60);
    testnet_client_reset(c);
    assert_true(wait_for(&cancel_calls, 1));
    for (int i = 0; i < 200 && tr_server_in_flight(fx.srv) > 0; i++)
        testnet_sleep_ms(5);
    assert_int_equal(tr_server_in_flight(fx.srv), 0);
    assert_int_equal(atomic_load(&end_calls), 2);

    /* Leaving during a streamed answer with writes under way. */
    c = client_open_with(0);
    testnet_send_str(c, "GET /res/chunked?n=16&ms=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    testnet_sleep_ms(5);
    testnet_client_reset(c);
    for (int i = 0; i < 200 && tr_server_in_flight(fx.srv) > 0; i++)
        testnet_sleep_ms(5);
    assert_int_equal(tr_server_in_flight(fx.srv), 0);
    stop();
}

static void test_shutdown_with_streaming_request(void **state)
{
    (void)state;
    testnet_response_t r;
    tr_server_config_t cfg;
    base_config(&cfg);
    cfg.drain_timeout_ms = 300;
    cfg.idle_timeout_ms = 5000;
    start(&cfg);

    /* One body completes during the drain and is answered with a close;
     * another never completes and is cut by the deadline. */
    testnet_client_t *done = client_open();
    testnet_send_str(done, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\nabcd");
    testnet_client_t *stuck = client_open();
    testnet_send_str(stuck, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\nabcd");
    for (int i = 0; i < 400 && atomic_load(&body_bytes) == 0; i++)
        testnet_sleep_ms(5);
    testnet_sleep_ms(50);
    tr_server_stop(fx.srv);
    testnet_sleep_ms(50);
    testnet_send_str(done, "efgh");
    assert_int_equal(testnet_read_response(done, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_true(testnet_closed_by_server(done));
    testnet_client_close(done);

    tr_server_wait(fx.srv);
    fx.srv = NULL;
    assert_int_equal(atomic_load(&end_status), -ECONNRESET);
    assert_true(testnet_closed_by_server(stuck));
    testnet_client_close(stuck);
    assert_int_equal(atomic_load(&worker_stops), 1);
    assert_int_equal(atomic_load(&open_handles), 0);
    assert_int_equal(atomic_load(&checks_failed), 0);
}

/* ---- tests: streamed answers -------------------------------------------- */

static void test_streamed_answers_chunked_sized_pipelined(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();

    testnet_send_str(c, "GET /res/chunked?n=3&ms=5&empty=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_null(testnet_find_header(&r, "Content-Length"));
    assert_string_equal(testnet_find_header(&r, "Content-Type"), "text/plain");
    assert_string_equal(testnet_find_header(&r, "X-Stream"), "yes");
    assert_int_equal(testnet_count_headers(&r, "Date"), 1);
    assert_int_equal(testnet_count_headers(&r, "Transfer-Encoding"), 1);
    assert_int_equal(r.body_len, strlen("piece-0;piece-1;piece-2;"));
    assert_memory_equal(r.body, "piece-0;piece-1;piece-2;", r.body_len);

    /* Sized, pipelined with a routed request and another streamed one. */
    testnet_send_str(c, "GET /res/sized?n=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                        "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                        "GET /res/chunked?n=1&nodate=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_false(r.chunked);
    assert_string_equal(testnet_find_header(&r, "Content-Length"), "16");
    assert_memory_equal(r.body, "piece-0;piece-1;", 16);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_memory_equal(r.body, "hello", 5);
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_true(r.chunked);
    assert_int_equal(testnet_count_headers(&r, "Date"), 1);
    assert_string_equal(testnet_find_header(&r, "Date"), "Mon, 01 Jan 2024 00:00:00 GMT");
    assert_memory_equal(r.body, "piece-0;", 8);

    /* Copied writes, sized and chunked. */
    testnet_send_str(c, "GET /res/sized?n=3&copy=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_string_equal(testnet_find_header(&r, "Content-Length"), "24");
    assert_memory_equal(r.body, "piece-0;piece-1;piece-2;", 24);
    testnet_send_str(c, "GET /res/chunked?n=2&copy=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_true(r.chunked);
    assert_memory_equal(r.body, "piece-0;piece-1;", 16);
    get_hello(c);
    testnet_client_close(c);
    assert_int_equal(atomic_load(&last_status), 200);
    assert_int_equal(atomic_load(&write_errors), 0);
    stop();
}

static void test_streamed_answer_head_and_http10(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();

    testnet_send_str(c, "HEAD /res/sized?n=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_string_equal(testnet_find_header(&r, "Content-Length"), "16");
    testnet_send_str(c, "HEAD /res/chunked?n=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_string_equal(testnet_find_header(&r, "Transfer-Encoding"), "chunked");
    /* Had any body byte been sent, it would be read as a status line. */
    get_hello(c);
    testnet_client_close(c);

    /* HTTP/1.0 and no length: delimited by the close. */
    c = client_open();
    testnet_send_str(c, "GET /res/chunked?n=2 HTTP/1.0\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, true), 0);
    assert_null(testnet_find_header(&r, "Transfer-Encoding"));
    assert_string_equal(testnet_find_header(&r, "Connection"), "close");
    assert_int_equal(r.body_len, 16);
    assert_memory_equal(r.body, "piece-0;piece-1;", 16);
    testnet_client_close(c);
    stop();
}

static void test_streamed_answer_abort_and_short(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();

    /* Aborted midway: the chunked body never ends, the connection closes. */
    testnet_client_t *c = client_open();
    testnet_send_str(c, "GET /res/abort?n=4 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), -1);
    testnet_client_close(c);

    /* Shorter than announced: handled as an abort. */
    c = client_open();
    testnet_send_str(c, "GET /res/short?n=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), -1);
    testnet_client_close(c);
    for (int i = 0; i < 200 && tr_server_in_flight(fx.srv) > 0; i++)
        testnet_sleep_ms(5);
    assert_int_equal(tr_server_in_flight(fx.srv), 0);
    stop();
}

/* ---- tests: upgrade ----------------------------------------------------- */

static void test_upgrade_hand_off_echo(void **state)
{
    (void)state;
    testnet_response_t r;
    start_default();
    testnet_client_t *c = client_open();
    /* Bytes right after the head must reach the new owner. */
    testnet_send_str(
        c, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly;");
    assert_int_equal(testnet_read_response(c, &r, true, false), 0);
    assert_int_equal(r.status, 101);
    assert_int_equal(testnet_need(c, 6), 0);
    assert_memory_equal(c->buf, "early;", 6);
    testnet_consume(c, 6);
    testnet_send_str(c, "ping");
    assert_int_equal(testnet_need(c, 4), 0);
    assert_memory_equal(c->buf, "ping", 4);
    testnet_consume(c, 4);
    assert_int_equal(atomic_load(&upgraded), 1);
    assert_int_equal(atomic_load(&last_status), 101);
    assert_int_equal(tr_server_in_flight(fx.srv), 0);

    /* A second upgraded connection stays open through the stop: the server
     * does not wait for it, worker_stop closes it. */
    testnet_client_t *d = client_open();
    testnet_send_str(d,
                     "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    assert_int_equal(testnet_read_response(d, &r, true, false), 0);
    assert_int_equal(r.status, 101);
    testnet_client_close(c); /* the first one ends from the client side */

    /* Taken over from inside dispatch, early bytes in the same packet. */
    testnet_client_t *s = client_open();
    testnet_send_str(
        s, "GET /ws?sync=1 HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
           "same-packet");
    assert_int_equal(testnet_read_response(s, &r, true, false), 0);
    assert_int_equal(r.status, 101);
    assert_int_equal(testnet_need(s, 11), 0);
    assert_memory_equal(s->buf, "same-packet", 11);
    testnet_client_close(s);

    /* Not allowed once a streamed answer started. */
    testnet_client_t *e = client_open();
    testnet_send_str(e, "GET /ws?bad=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(e, &r, false, false), 0);
    assert_int_equal(r.status, 200);
    testnet_client_close(e);

    stop();
    assert_true(testnet_closed_by_server(d));
    testnet_client_close(d);
}

/* ---- tests: the parser's streaming modes -------------------------------- */

typedef struct sink {
    char data[256];
    size_t len;
    int stop_after; /* pieces before asking to pause, -1 never */
    int pieces;
} sink_t;

static int sink_data(void *ctx, const char *data, size_t len)
{
    sink_t *s = ctx;
    memcpy(s->data + s->len, data, len);
    s->len += len;
    return ++s->pieces == s->stop_after;
}

static int defer_head(tr_http_parser_t *p, void *ctx, size_t *max_body)
{
    (void)p;
    (void)ctx;
    (void)max_body;
    return TR_HTTP_HEAD_DEFER;
}

static void test_parser_stream_pause_and_defer(void **state)
{
    (void)state;
    tr_http_parser_t p;
    sink_t s = {.stop_after = 1};
    size_t used = 0;
    const char *in = "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /y "
                     "HTTP/1.1\r\nHost: t\r\n\r\n";
    size_t head_len = strstr(in, "hello") - in;

    tr__http_parser_init(&p, 1024, 1 << 20, defer_head, &s);
    p.on_data = sink_data;
    assert_int_equal(tr__http_parser_feed(&p, in, strlen(in), &used), TR_HTTP_HEADERS);
    assert_int_equal(used, head_len);
    assert_true(p.keep_alive);
    assert_int_equal(tr__http_parser_set_body(&p, TR_HTTP_BODY_STREAM, 4), 413);
    tr__http_parser_free(&p);

    tr__http_parser_init(&p, 1024, 1 << 20, defer_head, &s);
    p.on_data = sink_data;
    assert_int_equal(tr__http_parser_feed(&p, in, strlen(in), &used), TR_HTTP_HEADERS);
    assert_int_equal(tr__http_parser_set_body(&p, TR_HTTP_BODY_STREAM, 100), 0);
    size_t off = used;
    /* The sink pauses on its first piece, the whole body: the end of the
     * message is still owed and comes with an empty feed. */
    assert_int_equal(tr__http_parser_feed(&p, in + off, strlen(in) - off, &used), TR_HTTP_PAUSED);
    assert_int_equal(used, 5);
    assert_memory_equal(s.data, "hello", 5);
    assert_false(tr__http_parser_complete(&p));
    assert_int_equal(tr__http_parser_feed(&p, "", 0, &used), TR_HTTP_REQUEST);
    assert_int_equal(used, 0);
    assert_int_equal(p.body_len, 0); /* streamed, not buffered */
    off += 5;
    tr__http_parser_next(&p);
    /* The next request has no body: complete as soon as it is decided. */
    assert_int_equal(tr__http_parser_feed(&p, in + off, strlen(in) - off, &used), TR_HTTP_HEADERS);
    assert_string_equal(p.path, "/y");
    assert_int_equal(tr__http_parser_set_body(&p, TR_HTTP_BODY_STREAM, 100), 0);
    assert_true(tr__http_parser_complete(&p));
    tr__http_parser_free(&p);

    /* Discard mode drops bytes but still enforces the limit. */
    s.len = 0;
    s.pieces = 0;
    tr__http_parser_init(&p, 1024, 1 << 20, defer_head, &s);
    p.on_data = sink_data;
    const char *chunked = "POST /z HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    assert_int_equal(tr__http_parser_feed(&p, chunked, strlen(chunked), &used), TR_HTTP_HEADERS);
    assert_int_equal(tr__http_parser_set_body(&p, TR_HTTP_BODY_DISCARD, 4), 0);
    off = used;
    assert_int_equal(tr__http_parser_feed(&p, chunked + off, strlen(chunked) - off, &used),
                     TR_HTTP_FAILED);
    assert_int_equal(p.error_status, 413);
    assert_int_equal(s.len, 0);
    tr__http_parser_free(&p);
}

static void test_start_config_errors(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    tr_server_t *srv = NULL;
    base_config(&cfg);
    cfg.router = NULL;
    cfg.on_headers = NULL;
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);
    base_config(&cfg);
    cfg.dispatch = NULL;
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);
    assert_null(srv);

    /* No router at all: every request goes to the hook. */
    base_config(&cfg);
    cfg.router = NULL;
    start(&cfg);
    testnet_client_t *c = client_open();
    testnet_response_t r;
    testnet_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(testnet_read_response(c, &r, false, false), 0);
    assert_int_equal(r.status, 405); /* the hook's verdict; no router, no Allow */
    assert_null(testnet_find_header(&r, "Allow"));
    testnet_client_close(c);
    stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_first_then_hook),
        cmocka_unit_test(test_hook_answers_early_body_discarded_or_closed),
        cmocka_unit_test(test_stream_body_backpressure_20mb),
        cmocka_unit_test(test_stream_chunked_body_echoed),
        cmocka_unit_test(test_stream_body_limit_413),
        cmocka_unit_test(test_stream_body_timeout_and_expect),
        cmocka_unit_test(test_stream_body_request_deadline),
        cmocka_unit_test(test_client_disconnect_mid_stream),
        cmocka_unit_test(test_shutdown_with_streaming_request),
        cmocka_unit_test(test_streamed_answers_chunked_sized_pipelined),
        cmocka_unit_test(test_streamed_answer_head_and_http10),
        cmocka_unit_test(test_streamed_answer_abort_and_short),
        cmocka_unit_test(test_upgrade_hand_off_echo),
        cmocka_unit_test(test_parser_stream_pause_and_defer),
        cmocka_unit_test(test_start_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

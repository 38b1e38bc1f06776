/*
 * server.c - the HTTP/1.1 server of server.h on libuv.
 *
 * THREADS. tr_server_start() binds one socket per worker (SO_REUSEPORT when
 * there are several, so the kernel spreads connections; libuv 1.44 cannot
 * set it, hence socket/setsockopt/bind here and uv_tcp_open on the worker).
 * Each worker owns its loop, its listener and its connections; nothing is
 * shared between workers but the read-only config and router and one atomic
 * in-flight counter per worker (written by its worker only). SIGPIPE is
 * ignored process-wide: a peer that vanished must cost an EPIPE, not the
 * process.
 *
 * CONNECTION STATE MACHINE.
 *
 *   READING --request complete--> HANDLING --tr_respond--> WRITING --written--+
 *      ^                             |          (try_write done: skip WRITING)|
 *      +------------- keep-alive ----+----------------------------------------+
 *   last answer (close decided) -> LINGERING: FIN sent, the peer's remaining
 *   bytes are read and dropped until it closes or a short timer fires, so a
 *   client still sending (a 413'd body) reads our answer instead of a reset.
 *   Anything -> CLOSED (uv_close on the socket and the timer).
 *
 * Invariants:
 *   1. At most one request per connection is active; the tr_req_t embedded
 *      in the connection is reused by the next one only after tr_respond*().
 *   2. Bytes that arrive while a request is active are stashed (inbuf) and
 *      parsed only after the answer was written: pipelined requests are
 *      answered in order. Reading goes on meanwhile, to notice a client that
 *      leaves (tr_req_cancelled), until the stash holds max_header_bytes.
 *   3. A connection is freed only when both handles are closed AND no
 *      request is active, so a handler that answers after the client left
 *      still holds valid memory; its answer is discarded.
 *   4. No recursion: an answer written synchronously inside dispatch does
 *      not parse the next request from inside the handler's stack frame;
 *      conn_run()'s loop does (in_process flag).
 *
 * TIMERS (one uv_timer per connection, in one of these modes):
 *   HEADER  from accept (first request) or from the first byte of a later
 *           request until the headers are complete; 408 when bytes were
 *           received, else a silent close;
 *   BODY    idle_timeout_ms without a byte while reading a body -> 408;
 *   IDLE    idle_timeout_ms between keep-alive requests -> silent close;
 *   WRITE   idle_timeout_ms for a response the peer does not read -> close;
 *   LINGER  see LINGERING above.
 *   A timeout of 0 in the config disables that timer (not the drain one).
 *
 * SHUTDOWN. tr_server_stop() wakes each worker with its uv_async: the
 * listener and idle connections close at once, connections with a request
 * under way finish it (answered with Connection: close) and the drain timer
 * bounds the wait. The worker then stops its loop, runs worker_stop, closes
 * whatever handles are left (the service's own included), runs the loop
 * until every close callback ran, frees requests a handler never answered
 * and closes the loop, which must report no leftover handles.
 */
#include "kit/server.h"
#include "kit/alloc.h"
#include "kit/errors.h"
#include "kit/http_parser.h"
#include "kit/log.h"
#include "kit/server_internal.h"
#include "kit/trace.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SLAB_BYTES    (64 * 1024)
#define LINGER_MS          2000
#define RESPONSE_MAX_BYTES (256u * 1024 * 1024)
#define KEEP_BUFFER_BYTES  (64 * 1024)
#define LISTEN_BACKLOG     4096

typedef struct worker worker_t;

typedef enum conn_state {
    CONN_READING,
    CONN_HANDLING,
    CONN_WRITING,
    CONN_LINGERING,
    CONN_CLOSED
} conn_state_t;

typedef enum timer_mode {
    TIMER_OFF,
    TIMER_HEADER,
    TIMER_BODY,
    TIMER_IDLE,
    TIMER_WRITE,
    TIMER_LINGER
} timer_mode_t;

struct tr__conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_write_t continue_req;
    uv_shutdown_t shutdown_req;
    worker_t *w;
    tr__conn_t *prev, *next; /* the worker's list of connections not yet freed */
    conn_state_t state;
    timer_mode_t timer_mode;
    int closes_pending;
    bool counted;     /* counts toward max_connections */
    bool reading;     /* uv_read_start is in effect */
    bool close_after; /* the answer being prepared is the last one */
    bool peer_eof;
    bool in_process;
    uint64_t start_ns;
    tr_http_parser_t parser;
    tr_buf_t inbuf; /* pipelined bytes from inpos on wait for the active request */
    size_t inpos;
    tr_buf_t out;
    tr_match_result_t match_result;
    tr_match_t match;
    char client_ip[64];
    tr_req_t req;
    tr_req_impl_t impl;
};

struct worker {
    tr_worker_t pub;
    tr_server_t *srv;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    uv_timer_t drain_timer;
    uv_check_t log_flush; /* flushes this thread's batched log lines */
    uv_thread_t thread;
    bool thread_started;
    int fd;       /* the bound socket until uv_tcp_open takes it */
    int start_rc; /* result of the worker's start-up */
    bool hook_started;
    bool stopping;
    bool finished;
    tr__conn_t *conns;
    size_t nconns;     /* connections counted toward max_connections */
    size_t nconns_all; /* every connection not yet freed, rejected ones included */
    atomic_size_t in_flight;
    time_t date_sec;
    char date[40];
    char slab[READ_SLAB_BYTES]; /* every read lands here first; see on_alloc */
};

struct tr_server {
    tr_server_config_t cfg;
    int nworkers;
    worker_t **workers;
    int port;
    atomic_bool stop_requested;
    uv_mutex_t lock;
    uv_cond_t cond;
    int nreported;
};

static void conn_close(tr__conn_t *c);
static void process_inbuf(tr__conn_t *c);
static void after_response(tr__conn_t *c);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *t);
static void check_finish(worker_t *w);

/* ---- small helpers ------------------------------------------------------ */

static const tr_server_config_t *cfg_of(const tr__conn_t *c)
{
    return &c->w->srv->cfg;
}

static void timer_set(tr__conn_t *c, timer_mode_t mode, uint64_t ms)
{
    if (ms == 0) {
        if (c->timer_mode != TIMER_OFF) uv_timer_stop(&c->timer);
        c->timer_mode = TIMER_OFF;
        return;
    }
    c->timer_mode = mode;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_stop(tr__conn_t *c)
{
    if (c->timer_mode == TIMER_OFF) return;
    uv_timer_stop(&c->timer);
    c->timer_mode = TIMER_OFF;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    /* libuv calls read_cb right after alloc_cb, so one slab per loop serves
     * every connection; only bytes left unparsed are copied elsewhere. */
    tr__conn_t *c = handle->data;
    (void)suggested;
    *buf = uv_buf_init(c->w->slab, sizeof(c->w->slab));
}

static void read_start(tr__conn_t *c)
{
    if (c->reading || c->peer_eof || c->state == CONN_CLOSED) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
}

static void read_stop(tr__conn_t *c)
{
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

static const char *http_date(worker_t *w)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(w->date, sizeof(w->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        w->date_sec = now;
    }
    return w->date;
}

static void in_flight_add(worker_t *w, int delta)
{
    /* Single writer (this worker), so a relaxed load/store pair suffices. */
    size_t v = atomic_load_explicit(&w->in_flight, memory_order_relaxed);
    atomic_store_explicit(&w->in_flight, v + (size_t)(ptrdiff_t)delta, memory_order_relaxed);
}

/* ---- connection lifetime ------------------------------------------------ */

static tr__conn_t *conn_new(worker_t *w)
{
    const tr_server_config_t *cfg = &w->srv->cfg;
    tr__conn_t *c = tr_xcalloc(1, sizeof(*c));
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->impl.conn = c;
    tr_buf_init(&c->inbuf, cfg->max_header_bytes + READ_SLAB_BYTES);
    tr_buf_init(&c->out, RESPONSE_MAX_BYTES + 64 * 1024);
    tr_buf_init(&c->impl.res_headers, TR__RES_HEADERS_MAX);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns_all++;
    return c;
}

static void conn_free(tr__conn_t *c)
{
    worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns_all--;
    tr__http_parser_free(&c->parser);
    tr_buf_free(&c->inbuf);
    tr_buf_free(&c->out);
    tr_buf_free(&c->impl.res_headers);
    tr__arena_reset(&c->impl.arena);
    free(c);
}

static void maybe_free(tr__conn_t *c)
{
    if (c->state != CONN_CLOSED || c->closes_pending > 0 || c->impl.active) return;
    worker_t *w = c->w;
    conn_free(c);
    check_finish(w);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    tr__conn_t *c = h->data;
    c->closes_pending--;
    maybe_free(c);
}

static void conn_close(tr__conn_t *c)
{
    if (c->state == CONN_CLOSED) return;
    if (c->impl.active) c->impl.cancelled = true;
    if (c->counted) {
        c->w->nconns--;
        c->counted = false;
    }
    c->state = CONN_CLOSED;
    c->reading = false;
    c->timer_mode = TIMER_OFF;
    c->closes_pending = 2;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    tr__conn_t *c = req->data;
    if (status < 0 && status != UV_ECANCELED) conn_close(c);
}

/* The last answer is out: send FIN and drop whatever the peer still sends
 * until it closes (see LINGERING in the file comment). */
static void begin_linger(tr__conn_t *c)
{
    c->state = CONN_LINGERING;
    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    read_start(c);
    uint64_t idle = cfg_of(c)->idle_timeout_ms;
    timer_set(c, TIMER_LINGER, idle && idle < LINGER_MS ? idle : LINGER_MS);
}

/* ---- answers ------------------------------------------------------------ */

static void put(tr_buf_t *b, const char *s, size_t n)
{
    /* Sizes are checked before building, so this cannot overflow the
     * buffer's maximum. */
    (void)tr_buf_append(b, s, n);
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_str(tr_buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_uint(tr_buf_t *b, uint64_t v)
{
    char digits[24];
    size_t n = sizeof(digits);
    do {
        digits[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, digits + n, sizeof(digits) - n);
}

static void build_response(tr__conn_t *c, const tr_req_t *req, int status, const char *content_type,
                           const void *body, size_t len)
{
    tr_buf_t *o = &c->out;
    bool bodiless = status < 200 || status == 204 || status == 304;
    bool head = strcmp(req->method, "HEAD") == 0;

    tr_buf_reset(o);
    PUT_LIT(o, "HTTP/1.1 ");
    put_uint(o, (uint64_t)status);
    put(o, " ", 1);
    put_str(o, tr_http_reason(status));
    PUT_LIT(o, "\r\nDate: ");
    put_str(o, http_date(c->w));
    PUT_LIT(o, "\r\n");
    if (!bodiless) {
        if (len > 0) {
            PUT_LIT(o, "Content-Type: ");
            put_str(o, content_type ? content_type : "application/octet-stream");
            PUT_LIT(o, "\r\n");
        }
        PUT_LIT(o, "Content-Length: ");
        put_uint(o, len);
        PUT_LIT(o, "\r\n");
    }
    PUT_LIT(o, "X-Request-Id: ");
    put_str(o, req->request_id);
    PUT_LIT(o, "\r\n");
    if (c->close_after)
        PUT_LIT(o, "Connection: close\r\n");
    else if (req->http_minor == 0)
        PUT_LIT(o, "Connection: keep-alive\r\n");
    put(o, c->impl.res_headers.data ? c->impl.res_headers.data : "", c->impl.res_headers.len);
    PUT_LIT(o, "\r\n");
    if (!bodiless && !head && len > 0) put(o, body, len);
}

static void on_write(uv_write_t *req, int status)
{
    tr__conn_t *c = req->data;
    if (status < 0) {
        conn_close(c);
        return;
    }
    after_response(c);
}

/* Returns 1 when everything was written at once, 0 when a uv_write is
 * under way, or a negative libuv error. */
static int write_out(tr__conn_t *c)
{
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n >= 0 && (size_t)n == c->out.len) return 1;
    if (n < 0 && n != UV_EAGAIN) return n;
    if (n < 0) n = 0;
    b = uv_buf_init(c->out.data + n, (unsigned)(c->out.len - (size_t)n));
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) return rc;
    c->state = CONN_WRITING;
    timer_set(c, TIMER_WRITE, cfg_of(c)->idle_timeout_ms);
    return 0;
}

static void release_req(tr__conn_t *c)
{
    tr_req_impl_t *impl = &c->impl;
    tr__arena_reset(&impl->arena);
    if (impl->res_headers.cap > TR__RES_HEADERS_MAX) tr_buf_free(&impl->res_headers);
    tr_buf_reset(&impl->res_headers);
    if (impl->dispatched) in_flight_add(c->w, -1);
    impl->dispatched = false;
    impl->active = false;
}

void tr__respond(tr_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    worker_t *w = c->w;
    const tr_server_config_t *cfg = &w->srv->cfg;
    size_t sent = 0;
    int wrote = 0;
    bool deliver = c->state == CONN_HANDLING;

    if (!impl->active) {
        tr_log_error("tr_respond called twice for one request (status %d)", status);
        return;
    }
    if (status < 100 || status > 599 || len > RESPONSE_MAX_BYTES) {
        status = 500;
        body = NULL;
        len = 0;
    }
    if (deliver) {
        c->close_after = c->close_after || !c->parser.keep_alive || w->stopping || c->peer_eof;
        build_response(c, req, status, content_type, body, len);
        sent = c->out.len;
        wrote = write_out(c);
    }
    if (cfg->on_complete)
        cfg->on_complete(req, status, sent, (double)(uv_hrtime() - impl->start_ns) / 1e9);
    release_req(c);
    if (!deliver)
        maybe_free(c);
    else if (wrote == 1)
        after_response(c);
    else if (wrote < 0)
        conn_close(c);
}

/* The answer has been written completely. */
static void after_response(tr__conn_t *c)
{
    if (c->out.cap > KEEP_BUFFER_BYTES) tr_buf_free(&c->out);
    if (c->close_after || c->peer_eof || c->w->stopping) {
        begin_linger(c);
        return;
    }
    c->state = CONN_READING;
    tr__http_parser_next(&c->parser);
    timer_set(c, TIMER_IDLE, cfg_of(c)->idle_timeout_ms);
    process_inbuf(c);
}

/* ---- requests ----------------------------------------------------------- */

/* Fills the connection's tr_req_t from what the parser knows (everything for
 * a complete request, less for one the server rejects early) and marks it
 * active. */
static tr_req_t *prepare_req(tr__conn_t *c)
{
    tr_req_t *r = &c->req;
    tr_http_parser_t *p = &c->parser;

    memset(r, 0, sizeof(*r));
    r->method = p->method;
    r->target = p->target;
    r->path = p->path;
    r->query = p->query;
    r->http_minor = p->http_minor;
    r->headers = p->headers;
    r->nheaders = p->nheaders;
    r->body = p->body;
    r->body_len = p->body_len;
    r->client_ip = c->client_ip;
    r->worker = &c->w->pub;
    r->impl = &c->impl;

    const char *id = tr_req_header(r, "X-Request-Id");
    if (id && tr_request_id_valid(id))
        memcpy(r->request_id, id, strlen(id) + 1);
    else
        tr_request_id_generate(r->request_id);
    const char *traceparent = tr_req_header(r, "traceparent");
    if (traceparent) tr_traceparent_parse(traceparent, &r->trace);
    tr_trace_start(&r->trace);

    c->impl.active = true;
    c->impl.cancelled = false;
    c->impl.dispatched = false;
    c->impl.start_ns = p->started ? c->start_ns : uv_hrtime();
    c->state = CONN_HANDLING;
    timer_stop(c);
    return r;
}

static void server_error(tr__conn_t *c, int status)
{
    tr_err_t err;
    const char *message;
    switch (status) {
    case 404:
        err = TR_ERR_NOT_FOUND;
        message = "no route matches this path";
        break;
    case 405:
        err = TR_ERR_METHOD_NOT_ALLOWED;
        message = "method not allowed for this path";
        break;
    case 408:
        err = TR_ERR_REQUEST_TIMEOUT;
        message = "request not received in time";
        break;
    case 413:
        err = TR_ERR_PAYLOAD_TOO_LARGE;
        message = "request body too large";
        break;
    case 431:
        err = TR_ERR_HEADERS_TOO_LARGE;
        message = "request line and headers too large";
        break;
    case 503:
        err = TR_ERR_UNAVAILABLE;
        message = "too many connections";
        break;
    case 400:
        err = TR_ERR_INVALID_ARGUMENT;
        message = "malformed request";
        break;
    default:
        err = TR_ERR_INTERNAL;
        message = "internal error";
        break;
    }
    tr_req_t *r = prepare_req(c);
    if (status == 405 && c->match_result == TR_MATCH_METHOD_NOT_ALLOWED)
        tr_res_header(r, "Allow", c->match.allow);
    tr_respond_error(r, err, message, NULL);
}

static void dispatch_request(tr__conn_t *c)
{
    const tr_server_config_t *cfg = cfg_of(c);
    tr_req_t *r = prepare_req(c);

    if (c->match_result != TR_MATCH_OK) {
        server_error(c, c->match_result == TR_MATCH_METHOD_NOT_ALLOWED ? 405 : 404);
        return;
    }
    r->route = c->match.route;
    for (size_t i = 0; i < c->match.nparams; i++) {
        size_t len = c->match.params[i].value_len;
        char *value = tr_req_alloc(r, len + 1);
        tr__percent_decode(value, c->match.params[i].value, len, false);
        r->params[i].name = c->match.params[i].name;
        r->params[i].value = value;
    }
    r->nparams = c->match.nparams;
    c->impl.dispatched = true;
    in_flight_add(c->w, 1);
    if (cfg->dispatch)
        cfg->dispatch(r);
    else
        r->route->handler(r);
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void on_continue_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status; /* a failed write shows up on the read side */
}

static void send_continue(tr__conn_t *c)
{
    uv_buf_t b = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n >= 0 && (size_t)n == b.len) return;
    if (n < 0 && n != UV_EAGAIN) return;
    if (n < 0) n = 0;
    b = uv_buf_init((char *)continue_line + n, (unsigned)(sizeof(continue_line) - 1 - (size_t)n));
    uv_write(&c->continue_req, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written);
}

/* Headers complete: route now, so the body limit is the route's and a
 * client waiting on "Expect: 100-continue" learns the verdict before it
 * sends the body. */
static int on_head(tr_http_parser_t *p, void *ctx, size_t *max_body)
{
    tr__conn_t *c = ctx;
    const tr_server_config_t *cfg = cfg_of(c);

    c->match_result = tr_router_match(cfg->router, p->method, p->path, p->path_len, &c->match);
    *max_body = cfg->max_body_bytes;
    if (c->match_result == TR_MATCH_OK && c->match.route->max_body)
        *max_body = c->match.route->max_body;
    if (!p->expect_continue) return 0;
    if (c->match_result == TR_MATCH_NOT_FOUND) return 404;
    if (c->match_result == TR_MATCH_METHOD_NOT_ALLOWED) return 405;
    if (p->has_content_length && p->content_length > *max_body) return 413;
    if (p->http_minor >= 1 && (p->chunked || p->content_length > 0)) send_continue(c);
    return 0;
}

/* Parses data while the connection is READING; returns the bytes used. */
static size_t conn_run(tr__conn_t *c, const char *data, size_t len)
{
    const tr_server_config_t *cfg = cfg_of(c);
    size_t off = 0;

    c->in_process = true;
    while (c->state == CONN_READING && off < len) {
        size_t used = 0;
        bool was_started = c->parser.started;
        tr_http_parse_result_t r = tr__http_parser_feed(&c->parser, data + off, len - off, &used);
        off += used;
        if (!was_started && c->parser.started) {
            c->start_ns = uv_hrtime();
            if (c->timer_mode == TIMER_IDLE) timer_set(c, TIMER_HEADER, cfg->header_timeout_ms);
        }
        if (r == TR_HTTP_NEED_MORE) {
            if (c->parser.headers_done) timer_set(c, TIMER_BODY, cfg->idle_timeout_ms);
            break;
        }
        if (r == TR_HTTP_FAILED) {
            c->close_after = true;
            server_error(c, c->parser.error_status);
            break;
        }
        dispatch_request(c);
    }
    c->in_process = false;
    return off;
}

static void stash(tr__conn_t *c, const char *data, size_t len)
{
    if (c->inpos > 0) {
        tr_buf_consume(&c->inbuf, c->inpos);
        c->inpos = 0;
    }
    if (tr_buf_append(&c->inbuf, data, len) != 0) {
        /* Cannot happen: reading stops below before the stash can overflow. */
        conn_close(c);
        return;
    }
    if (c->inbuf.len >= cfg_of(c)->max_header_bytes) read_stop(c);
}

static void process_inbuf(tr__conn_t *c)
{
    if (c->in_process) return;
    if (c->state == CONN_READING && c->inpos < c->inbuf.len)
        c->inpos += conn_run(c, c->inbuf.data + c->inpos, c->inbuf.len - c->inpos);
    if (c->inpos >= c->inbuf.len) {
        if (c->inbuf.cap > KEEP_BUFFER_BYTES) tr_buf_free(&c->inbuf);
        tr_buf_reset(&c->inbuf);
        c->inpos = 0;
    }
    if (c->state == CONN_READING) read_start(c);
}

static void on_peer_gone(tr__conn_t *c, ssize_t err)
{
    c->reading = false;
    if (err == UV_EOF) c->peer_eof = true;
    switch (c->state) {
    case CONN_HANDLING:
        /* Keep the socket after a plain EOF: the peer may only have shut
         * down its sending side and still read the answer. */
        c->impl.cancelled = true;
        if (err != UV_EOF) conn_close(c);
        break;
    case CONN_WRITING:
        if (err != UV_EOF) conn_close(c);
        break;
    default:
        conn_close(c);
        break;
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    tr__conn_t *c = stream->data;
    if (nread == 0) return;
    if (nread < 0) {
        on_peer_gone(c, nread);
        return;
    }
    switch (c->state) {
    case CONN_READING: {
        size_t used = conn_run(c, buf->base, (size_t)nread);
        if (used < (size_t)nread && (c->state == CONN_HANDLING || c->state == CONN_WRITING))
            stash(c, buf->base + used, (size_t)nread - used);
        break;
    }
    case CONN_HANDLING:
    case CONN_WRITING:
        stash(c, buf->base, (size_t)nread);
        break;
    default:
        break; /* lingering: dropped */
    }
}

static void on_timer(uv_timer_t *t)
{
    tr__conn_t *c = t->data;
    timer_mode_t mode = c->timer_mode;
    c->timer_mode = TIMER_OFF;
    if (c->state == CONN_READING &&
        (mode == TIMER_BODY || (mode == TIMER_HEADER && c->parser.started))) {
        c->close_after = true;
        server_error(c, 408);
        return;
    }
    conn_close(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    worker_t *w = listener->data;
    const tr_server_config_t *cfg = &w->srv->cfg;
    if (status < 0 || w->stopping) return;

    tr__conn_t *c = conn_new(w);
    tr__http_parser_init(&c->parser, cfg->max_header_bytes, cfg->max_body_bytes, on_head, c);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage peer;
    int plen = sizeof(peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0) {
        if (peer.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&peer, c->client_ip, sizeof(c->client_ip));
        else
            uv_ip4_name((struct sockaddr_in *)&peer, c->client_ip, sizeof(c->client_ip));
    }

    if (w->nconns >= cfg->max_connections) {
        /* Under a flood even the 503s are capped, then connections are
         * simply closed. */
        if (w->nconns_all > 2 * cfg->max_connections + 16) {
            conn_close(c);
            return;
        }
        c->close_after = true;
        server_error(c, 503);
        return;
    }
    c->counted = true;
    w->nconns++;
    c->state = CONN_READING;
    read_start(c);
    timer_set(c, TIMER_HEADER, cfg->header_timeout_ms);
}

/* ---- workers ------------------------------------------------------------ */

static void finish(worker_t *w)
{
    if (w->finished) return;
    w->finished = true;
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->log_flush, NULL);
    tr_log_flush();
    uv_stop(&w->loop);
}

static void check_finish(worker_t *w)
{
    if (w->stopping && !w->conns) finish(w);
}

static void on_drain_timeout(uv_timer_t *t)
{
    worker_t *w = t->data;
    for (tr__conn_t *c = w->conns; c; c = c->next)
        conn_close(c);
    finish(w);
}

static void begin_stop(worker_t *w)
{
    if (w->stopping) return;
    w->stopping = true;
    uv_close((uv_handle_t *)&w->listener, NULL);
    for (tr__conn_t *c = w->conns; c; c = c->next) {
        bool idle = c->state == CONN_READING && !c->parser.started && c->inpos >= c->inbuf.len;
        if (idle) conn_close(c);
    }
    uv_timer_start(&w->drain_timer, on_drain_timeout, w->srv->cfg.drain_timeout_ms, 0);
    check_finish(w);
}

static void on_async(uv_async_t *a)
{
    begin_stop(a->data);
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Runs after each poll phase, i.e. after a batch of I/O callbacks. */
static void on_log_flush(uv_check_t *h)
{
    (void)h;
    tr_log_flush();
}

static int worker_setup(worker_t *w)
{
    const tr_server_config_t *cfg = &w->srv->cfg;
    int rc;

    w->listener.data = w->async.data = w->drain_timer.data = w;
    if ((rc = uv_async_init(&w->loop, &w->async, on_async)) != 0) goto out;
    uv_timer_init(&w->loop, &w->drain_timer);
    uv_check_init(&w->loop, &w->log_flush);
    uv_check_start(&w->log_flush, on_log_flush);
    uv_unref((uv_handle_t *)&w->log_flush); /* must not keep the loop alive */
    tr_log_buffer_thread(1);
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    if ((rc = uv_tcp_open(&w->listener, w->fd)) != 0) goto out;
    w->fd = -1; /* closed with the handle from now on */
    if (cfg->worker_start) {
        if ((rc = cfg->worker_start(&w->pub)) != 0) goto out;
        w->hook_started = true;
    }
    rc = uv_listen((uv_stream_t *)&w->listener, LISTEN_BACKLOG, on_connection);
out:
    return rc;
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    tr_server_t *srv = w->srv;
    int rc = uv_loop_init(&w->loop);
    bool loop_ok = rc == 0;

    w->pub.loop = &w->loop;
    if (rc == 0) rc = worker_setup(w);

    uv_mutex_lock(&srv->lock);
    w->start_rc = rc;
    srv->nreported++;
    uv_cond_signal(&srv->cond);
    uv_mutex_unlock(&srv->lock);
    if (!loop_ok) return;

    if (rc == 0) uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->hook_started && srv->cfg.worker_stop) srv->cfg.worker_stop(&w->pub);
    uv_walk(&w->loop, close_leftover, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);

    /* Requests a handler never answered before the drain deadline. */
    while (w->conns) {
        tr__conn_t *c = w->conns;
        if (c->impl.active) release_req(c);
        conn_free(c);
    }
    tr_log_buffer_thread(0);
    if ((rc = uv_loop_close(&w->loop)) != 0)
        tr_log_error("worker %d: loop closed with handles left (%s)", w->pub.index,
                     uv_strerror(rc));
}

/* ---- public API --------------------------------------------------------- */

void tr_server_config_defaults(tr_server_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->port = 0;
    cfg->workers = 1;
    cfg->max_connections = 10000;
    cfg->max_header_bytes = 16 * 1024;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->header_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->drain_timeout_ms = 10000;
}

static int open_listener(const struct sockaddr *addr, socklen_t len, bool reuseport, int *out)
{
    int one = 1, rc = 0;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, addr, len) != 0) {
        rc = -errno;
        close(fd);
        goto out;
    }
    *out = fd;
out:
    return rc;
}

static void server_free(tr_server_t *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        worker_t *w = srv->workers[i];
        if (!w) continue;
        if (w->fd >= 0) close(w->fd);
        free(w);
    }
    free(srv->workers);
    uv_cond_destroy(&srv->cond);
    uv_mutex_destroy(&srv->lock);
    free(srv);
}

int tr_server_start(const tr_server_config_t *cfg, tr_server_t **out)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    tr_server_t *srv = NULL;
    int rc = 0, spawned = 0;

    *out = NULL;
    if (!cfg || !cfg->host || !cfg->router || cfg->workers < 1 || cfg->max_header_bytes == 0 ||
        cfg->port < 0 || cfg->port > 65535)
        return -EINVAL;
    memset(&addr, 0, sizeof(addr));
    if (strchr(cfg->host, ':')) {
        rc = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
        addr_len = sizeof(struct sockaddr_in6);
    } else {
        rc = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
        addr_len = sizeof(struct sockaddr_in);
    }
    if (rc != 0) return -EINVAL;

    signal(SIGPIPE, SIG_IGN);
    srv = tr_xcalloc(1, sizeof(*srv));
    srv->cfg = *cfg;
    srv->nworkers = cfg->workers;
    srv->workers = tr_xcalloc((size_t)cfg->workers, sizeof(*srv->workers));
    uv_mutex_init(&srv->lock);
    uv_cond_init(&srv->cond);
    atomic_init(&srv->stop_requested, false);

    /* Bind in the caller's thread so errors come back synchronously. With
     * port 0 the first bind picks the port and the others share it. */
    for (int i = 0; i < srv->nworkers; i++) {
        worker_t *w = tr_xcalloc(1, sizeof(*w));
        srv->workers[i] = w;
        w->srv = srv;
        w->fd = -1;
        w->pub.index = i;
        w->pub.server = srv;
        w->pub.service = cfg->service;
        atomic_init(&w->in_flight, 0);
        if ((rc = open_listener((struct sockaddr *)&addr, addr_len, srv->nworkers > 1, &w->fd)) !=
            0)
            goto fail;
        if (i == 0) {
            struct sockaddr_storage bound;
            socklen_t blen = sizeof(bound);
            if (getsockname(w->fd, (struct sockaddr *)&bound, &blen) != 0) {
                rc = -errno;
                goto fail;
            }
            uint16_t port = bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                        : ((struct sockaddr_in *)&bound)->sin_port;
            srv->port = ntohs(port);
            if (addr.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&addr)->sin6_port = port;
            else
                ((struct sockaddr_in *)&addr)->sin_port = port;
        }
    }

    for (int i = 0; i < srv->nworkers; i++) {
        worker_t *w = srv->workers[i];
        if ((rc = uv_thread_create(&w->thread, worker_main, w)) != 0) break;
        w->thread_started = true;
        spawned++;
    }
    uv_mutex_lock(&srv->lock);
    while (srv->nreported < spawned)
        uv_cond_wait(&srv->cond, &srv->lock);
    uv_mutex_unlock(&srv->lock);
    for (int i = 0; i < spawned && rc == 0; i++)
        rc = srv->workers[i]->start_rc;
    if (rc != 0) {
        tr_server_stop(srv);
        tr_server_wait(srv);
        return rc;
    }
    *out = srv;
    return 0;

fail:
    server_free(srv);
    return rc;
}

int tr_server_port(const tr_server_t *srv)
{
    return srv->port;
}

void tr_server_stop(tr_server_t *srv)
{
    if (atomic_exchange(&srv->stop_requested, true)) return;
    for (int i = 0; i < srv->nworkers; i++) {
        worker_t *w = srv->workers[i];
        /* A worker that failed to start has no loop to wake. */
        if (w->thread_started && w->start_rc == 0) uv_async_send(&w->async);
    }
}

void tr_server_wait(tr_server_t *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        worker_t *w = srv->workers[i];
        if (w->thread_started) uv_thread_join(&w->thread);
    }
    server_free(srv);
}

size_t tr_server_in_flight(const tr_server_t *srv)
{
    size_t n = 0;
    for (int i = 0; i < srv->nworkers; i++)
        n += atomic_load_explicit(&srv->workers[i]->in_flight, memory_order_relaxed);
    return n;
}

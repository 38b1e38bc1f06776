/*
 * client.c - the asynchronous HTTP/1.1 client of client.h, on one libuv loop.
 *
 * DESIGN NOTES
 *
 * 1. Objects. A client has one pool per upstream it has talked to (found by
 *    a short linear scan: a gateway has a handful of upstreams). A pool holds
 *    per instance an idle list of keep-alive connections (LIFO, so the
 *    warmest connection is reused and surplus ones age out) and this
 *    worker's outstanding-request count. A request is bound to at most one
 *    connection at a time (one try); a connection serves one request at a
 *    time (no pipelining towards upstreams).
 *
 * 2. Lifetimes. Connection memory is freed in the uv_close callback of its
 *    TCP handle (the handle is a separate allocation so it can be handed to
 *    the caller on upgrade). A pool is reference counted by its connections,
 *    its requests, its health timer and its place on the client's list, so a
 *    connection closing late never sees a freed pool. Request objects are
 *    recycled through a free list with their two timers and head buffer kept
 *    initialised, so a request costs no malloc in the steady state; their
 *    memory goes when the client is freed. The client itself is freed when
 *    the last of its handles has closed.
 *
 * 3. Parsing. llhttp runs in HTTP_RESPONSE mode. on_headers_complete and
 *    on_message_complete return HPE_PAUSED, so the response head and the end
 *    of the message are handled after llhttp_execute returns, outside the
 *    parser: the caller's callbacks (on_head, on_done) never run inside
 *    llhttp, except on_body, which has to see the parser's pointer. A caller
 *    that pauses or cancels from on_body makes our span callback return
 *    HPE_PAUSED or HPE_USER, which stops the parser at that byte.
 *
 * 4. Buffers and backpressure on responses. Until the response head has
 *    been handled, a connection reads into one 64 KiB buffer per client,
 *    shared by all its connections (reads are processed synchronously in the
 *    read callback, and heads are small). From then on it reads into a body
 *    buffer of its own (64 KiB, recycled through a per-client free list and
 *    given back when the response ends); whatever followed the head in the
 *    shared buffer is copied there first. So every on_body chunk lies in the
 *    connection's body buffer, which is only refilled by a read, and reads
 *    happen only when everything before has been parsed and the caller has
 *    not paused: a caller that pauses inside on_body can keep using the chunk
 *    until it resumes (a proxy writes it out without copying and resumes on
 *    the write callback). While paused, reading stops and the unparsed rest
 *    stays in the body buffer: a paused response holds at most 64 KiB here.
 *    Resume feeds that rest from a uv_idle callback, never from inside the
 *    caller's call to tr_client_resume.
 *
 * 5. Reentrancy. Every call into the caller goes through cb_depth. A cancel
 *    made while a callback of the same request is running only sets
 *    cancel_requested; the code that made the call performs the cancel once
 *    the callback returns. Terminal callbacks (on_done, on_error,
 *    on_upgrade) run after the request is detached from everything, and the
 *    request is recycled when they return.
 *
 * 6. Timers. Each request has `timer` (connect/per-try deadline before the
 *    head, backoff between tries, body idle after the head, and a 0 ms
 *    "fail from the loop" for errors found synchronously) and `deadline`
 *    (the total timeout until the head). The idle check compares against
 *    the time of the last read instead of re-arming the timer per read.
 *
 * 7. Writes. For a buffered body a try writes head, Host line, blank line
 *    and body with one uv_write of up to four buffers pointing at the
 *    request's head buffer and the caller's body (no copy). A connection
 *    whose request ends before all its writes completed is closed, never
 *    reused, and uv_close guarantees libuv touches none of those buffers
 *    again, so the caller may free its body in on_done/on_error. Streamed
 *    pieces are copied into one allocation each (framing included).
 */
#include "kit/client.h"
#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/ids.h"
#include "kit/log.h"
#include "kit/trace.h"
#include "kit/upstream_internal.h"

#include <errno.h>
#include <llhttp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_BUF_BYTES       (64 * 1024)
#define MAX_RESPONSE_HEADERS 128
#define MAX_REQUEST_HEAD     (256 * 1024)
#define SWEEP_INTERVAL_MS    1000
#define MAX_FREE_REQUESTS    1024
#define MAX_FREE_BUFFERS     64

typedef struct conn conn_t;
typedef struct pool pool_t;
typedef struct chunk chunk_t;

typedef enum conn_state { C_CONNECTING, C_ACTIVE, C_IDLE, C_CLOSING } conn_state_t;

typedef enum req_state {
    R_TRY,         /* connecting, writing or waiting for the response head */
    R_BACKOFF,     /* between tries */
    R_BODY,        /* head delivered, body flowing */
    R_FAIL_PENDING /* a failure found synchronously, reported from the loop */
} req_state_t;

/* What kind of failure ended a try (decides retry eligibility). */
typedef enum fail_kind { F_CONNECT, F_RESET, F_TIMEOUT, F_STATUS, F_PROTOCOL } fail_kind_t;

/* Events the parser callbacks leave for conn_feed. */
enum { EV_HEAD = 1, EV_DONE = 2, EV_UPGRADE = 4, EV_PAUSE = 8 };

typedef struct health_check {
    pool_t *pool;
    size_t inst;
    tr_client_req_t *req; /* the check in flight, or NULL */
    int status;
} health_check_t;

struct pool {
    tr_client_t *client;
    tr_upstream_t *up;
    const tr_upstream_config_t *cfg;
    pool_t *next;
    size_t n;
    size_t cursor;
    uint32_t *outstanding; /* [n], this worker's tries in flight per instance */
    conn_t **idle;         /* [n], idle lists */
    size_t *nidle;         /* [n] */
    tr_retry_budget_t budget;
    size_t refs;
    bool dead;
    uv_timer_t *health_timer;
    health_check_t *checks; /* [n] when health checks run here */
};

struct chunk {
    uv_write_t w;
    chunk_t *next;
    conn_t *conn;
    size_t len; /* payload bytes (for write_pending) */
    uv_buf_t bufs[3];
    unsigned nbufs;
    char prefix[24];
    char data[];
};

struct conn {
    uv_tcp_t *tcp;
    uv_connect_t connect_req;
    uv_write_t head_write;
    llhttp_t parser;
    tr_client_t *client;
    pool_t *pool;
    size_t inst;
    tr_client_req_t *req;
    conn_t *idle_next, *idle_prev;
    conn_t *all_next, *all_prev;
    conn_state_t state;
    uint64_t idle_since;
    unsigned writes_pending;
    unsigned ev;
    bool reading, reused, got_bytes, feeding, held, interim;
    bool upgrade_ready;  /* 101 parsed, waiting for the head write to finish */
    bool reset_on_close; /* a cancelled request was on it: close with a TCP reset */
    /* Response head: "name\0value\0" pairs. */
    tr_buf_t hdr;
    size_t nheaders;
    int hstate; /* 0 none, 1 in field, 2 field done, 3 in value */
    /* Body buffer (note 4) and the unparsed bytes held in it while paused. */
    char *bbuf;
    size_t hold_off, hold_len;
};

struct tr_client_req {
    tr_client_t *client;
    pool_t *pool;
    tr_upstream_t *up;
    const tr_client_callbacks_t *cb;
    void *data;
    conn_t *conn;
    uv_timer_t timer, deadline;
    unsigned closes;              /* timer close callbacks seen (2 = free) */
    tr_client_req_t *next, *prev; /* client's active list or free list */
    tr_client_req_t *resume_next, *resume_prev;
    bool in_resume_queue;

    req_state_t state;
    tr_buf_t head; /* request line and headers, without Host and the blank line */
    bool has_host, is_head, idempotent, upgrade, health;
    const char *body;
    size_t body_len;

    bool stream, ended, body_sent, head_written;
    int64_t stream_length;
    uint64_t streamed;
    chunk_t *queue, *queue_tail; /* streamed pieces not yet handed to a connection */
    size_t pending;              /* bytes accepted by tr_client_write, not yet written */
    unsigned chunks_in_flight;

    uint64_t connect_timeout_ms, try_timeout_ms, total_timeout_ms, idle_timeout_ms;
    tr_retry_policy_t retry;
    uint64_t connect_deadline, try_deadline, total_deadline; /* uv_now() ms, 0 = none */
    uint64_t last_activity;
    uint64_t start_ns;

    size_t inst;
    bool has_inst;
    unsigned tries;
    bool probe, retry_slot, counted;
    bool head_delivered, paused, terminal, cancel_requested;
    int cb_depth;
    int status;
    int pending_err;
    fail_kind_t pending_kind;
};

struct tr_client {
    uv_loop_t *loop;
    uv_timer_t sweep;
    uv_idle_t resume_idle;
    pool_t *pools;
    conn_t *conns;
    tr_client_req_t *active;
    tr_client_req_t *free_reqs;
    size_t nfree;
    tr_client_req_t *resume_head;
    size_t live_handles;
    bool closing;
    char *free_bufs; /* body buffers, linked through their first bytes */
    size_t nfree_bufs;
    tr_header_t hdrs[MAX_RESPONSE_HEADERS];
    char rbuf[READ_BUF_BYTES];
};

static const llhttp_settings_t parser_settings;

/* ---- errors ------------------------------------------------------------- */

const char *tr_client_error_name(int err)
{
    switch (err) {
    case TR_CLIENT_ECONNECT:
    case TR_CLIENT_ECONNECT_TIMEOUT:
        return "connect_failed";
    case TR_CLIENT_ETRY_TIMEOUT:
    case TR_CLIENT_ETOTAL_TIMEOUT:
    case TR_CLIENT_EIDLE_TIMEOUT:
        return "timeout";
    case TR_CLIENT_ECLOSED:
        return "closed";
    case TR_CLIENT_EPROTOCOL:
        return "protocol";
    case TR_CLIENT_EBREAKER_OPEN:
        return "breaker_open";
    case TR_CLIENT_ENO_HEALTHY:
        return "no_healthy";
    default:
        return "error";
    }
}

const char *tr_client_strerror(int err)
{
    switch (err) {
    case TR_CLIENT_ECONNECT:
        return "connection to upstream failed";
    case TR_CLIENT_ECONNECT_TIMEOUT:
        return "connecting to upstream timed out";
    case TR_CLIENT_ETRY_TIMEOUT:
        return "upstream did not answer within the per-try timeout";
    case TR_CLIENT_ETOTAL_TIMEOUT:
        return "upstream did not answer within the timeout";
    case TR_CLIENT_EIDLE_TIMEOUT:
        return "upstream response body stalled";
    case TR_CLIENT_ECLOSED:
        return "upstream closed the connection";
    case TR_CLIENT_EPROTOCOL:
        return "malformed response from upstream";
    case TR_CLIENT_EBREAKER_OPEN:
        return "upstream circuit breaker is open";
    case TR_CLIENT_ENO_HEALTHY:
        return "no healthy upstream instance";
    default:
        return err < 0 && err > -4096 ? strerror(-err) : "unknown client error";
    }
}

tr_err_t tr_client_error_public(int err)
{
    switch (err) {
    case TR_CLIENT_ECONNECT:
    case TR_CLIENT_ECONNECT_TIMEOUT:
    case TR_CLIENT_EBREAKER_OPEN:
    case TR_CLIENT_ENO_HEALTHY:
        return TR_ERR_UNAVAILABLE;
    case TR_CLIENT_ETRY_TIMEOUT:
    case TR_CLIENT_ETOTAL_TIMEOUT:
    case TR_CLIENT_EIDLE_TIMEOUT:
        return TR_ERR_DEADLINE_EXCEEDED;
    default:
        return TR_ERR_BAD_GATEWAY;
    }
}

/* ---- options and propagation ------------------------------------------- */

void tr_client_opts_init(tr_client_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->method = "GET";
    o->target = "/";
    o->stream_length = -1;
    o->connect_timeout_ms = 2000;
    o->try_timeout_ms = 0;
    o->total_timeout_ms = 30000;
    o->idle_timeout_ms = 60000;
    tr_retry_policy_defaults(&o->retry);
}

size_t tr_client_propagate(const tr_req_t *req, tr_client_propagation_t *p, tr_header_t out[2])
{
    unsigned char span[8];
    tr_random_bytes(span, sizeof span);
    tr_hex_encode(span, sizeof span, p->span_id);
    tr_trace_t child = req->trace;
    memcpy(child.span_id, p->span_id, sizeof child.span_id);
    tr_traceparent_format(&child, p->traceparent);
    out[0] = (tr_header_t){"X-Request-Id", req->request_id};
    out[1] = (tr_header_t){"traceparent", p->traceparent};
    return 2;
}

/* ---- small helpers ------------------------------------------------------ */

static uint64_t now_ms(const tr_client_t *c)
{
    return uv_now(c->loop);
}

static void handle_closed(tr_client_t *c);

/* RFC 9110 tchar. Letters and digits are tested first: they are nearly all
 * of every header name, and names are checked on every request. */
static bool is_tchar(unsigned char ch)
{
    static const char *const extra = "!#$%&'*+-.^_`|~";
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return true;
    return ch != 0 && strchr(extra, ch) != NULL;
}

static bool is_token(const char *s)
{
    if (!s || !*s) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!is_tchar(*p)) return false;
    return true;
}

static bool is_field_value(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == '\r' || *p == '\n' || (*p < 32 && *p != '\t') || *p == 127) return false;
    return true;
}

static bool is_target(const char *s)
{
    if (!s || !*s) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 32 || *p == 127) return false;
    return true;
}

/* ---- pools -------------------------------------------------------------- */

static void pool_unref(pool_t *p)
{
    if (--p->refs > 0) return;
    tr__upstream_unref(p->up);
    free(p->outstanding);
    free(p->idle);
    free(p->nidle);
    free(p->checks);
    free(p);
}

static pool_t *pool_get(tr_client_t *c, tr_upstream_t *up)
{
    for (pool_t *p = c->pools; p; p = p->next)
        if (p->up == up) return p;
    pool_t *p = tr_xcalloc(1, sizeof *p);
    p->client = c;
    p->up = up;
    tr__upstream_ref(up);
    p->cfg = tr_upstream_config(up);
    p->n = tr_upstream_instance_count(up);
    p->outstanding = tr_xcalloc(p->n, sizeof *p->outstanding);
    p->idle = tr_xcalloc(p->n, sizeof *p->idle);
    p->nidle = tr_xcalloc(p->n, sizeof *p->nidle);
    tr_retry_budget_init(&p->budget);
    p->refs = 1; /* the client's list */
    p->next = c->pools;
    c->pools = p;
    return p;
}

/* ---- connections -------------------------------------------------------- */

static void idle_remove(conn_t *cn)
{
    pool_t *p = cn->pool;
    if (cn->idle_prev)
        cn->idle_prev->idle_next = cn->idle_next;
    else
        p->idle[cn->inst] = cn->idle_next;
    if (cn->idle_next) cn->idle_next->idle_prev = cn->idle_prev;
    cn->idle_next = cn->idle_prev = NULL;
    p->nidle[cn->inst]--;
}

static char *body_buf_get(tr_client_t *c)
{
    char *b = c->free_bufs;
    if (!b) return tr_xmalloc(READ_BUF_BYTES);
    memcpy(&c->free_bufs, b, sizeof(char *));
    c->nfree_bufs--;
    return b;
}

static void body_buf_put(tr_client_t *c, char *b)
{
    if (!b) return;
    if (c->closing || c->nfree_bufs >= MAX_FREE_BUFFERS) {
        free(b);
        return;
    }
    memcpy(b, &c->free_bufs, sizeof(char *));
    c->free_bufs = b;
    c->nfree_bufs++;
}

static void conn_release_buf(conn_t *cn)
{
    body_buf_put(cn->client, cn->bbuf);
    cn->bbuf = NULL;
    cn->hold_off = cn->hold_len = 0;
    cn->held = false;
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *cn = h->data;
    tr_client_t *c = cn->client;
    if (cn->all_prev)
        cn->all_prev->all_next = cn->all_next;
    else
        c->conns = cn->all_next;
    if (cn->all_next) cn->all_next->all_prev = cn->all_prev;
    tr_buf_free(&cn->hdr);
    conn_release_buf(cn);
    free(cn->tcp);
    pool_unref(cn->pool);
    free(cn);
    handle_closed(c);
}

static void conn_close(conn_t *cn)
{
    if (cn->state == C_CLOSING) return;
    if (cn->state == C_IDLE) idle_remove(cn);
    bool reset = cn->reset_on_close && cn->state == C_ACTIVE;
    cn->state = C_CLOSING;
    cn->req = NULL;
    if (reset && uv_tcp_close_reset(cn->tcp, on_conn_closed) == 0) return;
    uv_close((uv_handle_t *)cn->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *cn = h->data;
    if (cn->req && cn->req->state == R_BODY) {
        if (!cn->bbuf) cn->bbuf = body_buf_get(cn->client);
        *buf = uv_buf_init(cn->bbuf, READ_BUF_BYTES);
        return;
    }
    *buf = uv_buf_init(cn->client->rbuf, READ_BUF_BYTES);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(conn_t *cn)
{
    if (cn->reading || cn->state == C_CLOSING) return;
    if (uv_read_start((uv_stream_t *)cn->tcp, on_alloc, on_read) == 0) cn->reading = true;
}

static void conn_read_stop(conn_t *cn)
{
    if (!cn->reading) return;
    uv_read_stop((uv_stream_t *)cn->tcp);
    cn->reading = false;
}

static void conn_reset_parser(conn_t *cn)
{
    llhttp_init(&cn->parser, HTTP_RESPONSE, &parser_settings);
    cn->parser.data = cn;
    tr_buf_reset(&cn->hdr);
    cn->nheaders = 0;
    cn->hstate = 0;
    cn->interim = false;
    conn_release_buf(cn);
}

static conn_t *conn_new(pool_t *p, size_t inst)
{
    tr_client_t *c = p->client;
    conn_t *cn = tr_xcalloc(1, sizeof *cn);
    cn->tcp = tr_xmalloc(sizeof *cn->tcp);
    cn->client = c;
    cn->pool = p;
    cn->inst = inst;
    p->refs++;
    tr_buf_init(&cn->hdr, p->cfg->max_response_header_bytes);
    conn_reset_parser(cn);
    uv_tcp_init(c->loop, cn->tcp);
    cn->tcp->data = cn;
    c->live_handles++;
    uv_tcp_nodelay(cn->tcp, 1);
    cn->all_next = c->conns;
    if (c->conns) c->conns->all_prev = cn;
    c->conns = cn;
    return cn;
}

/* ---- requests: allocation and the end of a request ---------------------- */

static void on_timer(uv_timer_t *t);
static void on_deadline(uv_timer_t *t);

static void on_req_timer_closed(uv_handle_t *h)
{
    tr_client_req_t *r = h->data;
    tr_client_t *c = r->client;
    if (++r->closes == 2) {
        tr_buf_free(&r->head);
        free(r);
    }
    handle_closed(c);
}

static void req_close_handles(tr_client_req_t *r)
{
    uv_close((uv_handle_t *)&r->timer, on_req_timer_closed);
    uv_close((uv_handle_t *)&r->deadline, on_req_timer_closed);
}

static tr_client_req_t *req_alloc(tr_client_t *c)
{
    tr_client_req_t *r = c->free_reqs;
    if (r) {
        c->free_reqs = r->next;
        c->nfree--;
        tr_buf_t head = r->head;
        /* Keep the initialised timers and the head buffer's memory. */
        memset((char *)r + offsetof(tr_client_req_t, state), 0,
               sizeof *r - offsetof(tr_client_req_t, state));
        r->head = head;
        tr_buf_reset(&r->head);
        r->cb = NULL;
        r->data = NULL;
        r->conn = NULL;
        r->pool = NULL;
        r->up = NULL;
        r->in_resume_queue = false;
        r->resume_next = r->resume_prev = NULL;
    } else {
        r = tr_xcalloc(1, sizeof *r);
        r->client = c;
        uv_timer_init(c->loop, &r->timer);
        uv_timer_init(c->loop, &r->deadline);
        r->timer.data = r->deadline.data = r;
        c->live_handles += 2;
        tr_buf_init(&r->head, MAX_REQUEST_HEAD);
    }
    r->next = c->active;
    r->prev = NULL;
    if (c->active) c->active->prev = r;
    c->active = r;
    return r;
}

static void resume_queue_remove(tr_client_req_t *r)
{
    if (!r->in_resume_queue) return;
    if (r->resume_prev)
        r->resume_prev->resume_next = r->resume_next;
    else
        r->client->resume_head = r->resume_next;
    if (r->resume_next) r->resume_next->resume_prev = r->resume_prev;
    r->resume_next = r->resume_prev = NULL;
    r->in_resume_queue = false;
}

/* Returns a finished request to the free list. */
static void req_free(tr_client_req_t *r)
{
    tr_client_t *c = r->client;
    while (r->queue) {
        chunk_t *ch = r->queue;
        r->queue = ch->next;
        free(ch);
    }
    if (r->prev)
        r->prev->next = r->next;
    else
        c->active = r->next;
    if (r->next) r->next->prev = r->prev;
    if (c->closing || c->nfree >= MAX_FREE_REQUESTS) {
        req_close_handles(r);
        return;
    }
    r->next = c->free_reqs;
    c->free_reqs = r;
    c->nfree++;
}

/* Undoes a try's binding to its connection (the caller closes or pools it). */
static void unbind(tr_client_req_t *r)
{
    conn_t *cn = r->conn;
    if (!cn) return;
    r->pool->outstanding[cn->inst]--;
    cn->req = NULL;
    r->conn = NULL;
}

/* Detaches a request from everything before its end is reported: timers,
 * connection (closed), breaker probe, budget, pool. */
static void req_detach(tr_client_req_t *r)
{
    uv_timer_stop(&r->timer);
    uv_timer_stop(&r->deadline);
    resume_queue_remove(r);
    if (r->conn) {
        conn_t *cn = r->conn;
        unbind(r);
        conn_close(cn);
    }
    if (r->probe) {
        tr_breaker_release_probe(tr__upstream_breaker(r->up));
        r->probe = false;
    }
    if (r->retry_slot) {
        tr_retry_budget_release(&r->pool->budget);
        r->retry_slot = false;
    }
    if (r->counted) {
        r->pool->budget.active_requests--;
        r->counted = false;
    }
    r->terminal = true;
}

static void req_release_pool(tr_client_req_t *r)
{
    if (r->pool) pool_unref(r->pool);
    r->pool = NULL;
}

static void observe(tr_client_req_t *r, int status, int err)
{
    if (r->health) return;
    double seconds = (double)(uv_hrtime() - r->start_ns) / 1e9;
    tr__upstream_observe(r->up, status, status ? NULL : tr_client_error_name(err), seconds);
}

static void finish_error(tr_client_req_t *r, int err)
{
    req_detach(r);
    observe(r, 0, err);
    r->cb_depth++;
    r->cb->on_error(r, err, r->data);
    req_release_pool(r);
    req_free(r);
}

static void finish_done(tr_client_req_t *r)
{
    req_detach(r);
    observe(r, r->status, 0);
    r->cb_depth++;
    r->cb->on_done(r, r->data);
    req_release_pool(r);
    req_free(r);
}

static void req_abort(tr_client_req_t *r)
{
    /* The request was not finished on the wire (or its answer was not read
     * whole): reset the connection, so the upstream sees an abort and never
     * something that could pass for a complete request (a FIN right after a
     * Content-Length body's last byte would). The gateway relies on this
     * when a client's body turns out malformed midway (gateway/proxy.c). */
    if (r->conn && r->conn->state == C_ACTIVE) r->conn->reset_on_close = true;
    req_detach(r);
    req_release_pool(r);
    req_free(r);
}

void tr_client_cancel(tr_client_req_t *r)
{
    if (!r || r->terminal) return;
    if (r->cb_depth > 0) {
        r->cancel_requested = true;
        return;
    }
    req_abort(r);
}

/* ---- tries -------------------------------------------------------------- */

static void try_start(tr_client_req_t *r);

static void arm_try_timer(tr_client_req_t *r)
{
    uint64_t next = 0;
    if (r->conn && r->conn->state == C_CONNECTING && r->connect_deadline)
        next = r->connect_deadline;
    if (r->try_deadline && (!next || r->try_deadline < next)) next = r->try_deadline;
    if (!next) {
        uv_timer_stop(&r->timer);
        return;
    }
    uint64_t now = now_ms(r->client);
    uv_timer_start(&r->timer, on_timer, next > now ? next - now : 0, 0);
}

/* Reports a failure from the loop (the caller may be inside an API call
 * that must not call back). */
static void fail_later(tr_client_req_t *r, int err, fail_kind_t kind)
{
    r->state = R_FAIL_PENDING;
    r->pending_err = err;
    r->pending_kind = kind;
    uv_timer_start(&r->timer, on_timer, 0, 0);
}

static bool retry_plan(tr_client_req_t *r, fail_kind_t kind, uint64_t *delay)
{
    if (r->health || r->upgrade || r->tries > r->retry.max_retries) return false;
    unsigned bit;
    switch (kind) {
    case F_CONNECT:
        bit = TR_RETRY_ON_CONNECT_FAILURE;
        break;
    case F_RESET:
        bit = TR_RETRY_ON_RESET;
        break;
    case F_TIMEOUT:
        bit = TR_RETRY_ON_TIMEOUT;
        break;
    case F_STATUS:
        bit = (r->status >= 502 && r->status <= 504) ? (TR_RETRY_ON_GATEWAY_ERROR | TR_RETRY_ON_5XX)
                                                     : TR_RETRY_ON_5XX;
        break;
    default:
        return false;
    }
    if (!(r->retry.retry_on & bit)) return false;
    /* A failed connect sent nothing; anything else may have reached the
     * upstream, so only an idempotent request whose body we still hold. */
    if (kind != F_CONNECT && (!r->idempotent || r->body_sent)) return false;
    *delay = tr_retry_backoff_ms(&r->retry, r->tries, tr_retry_random());
    if (r->total_deadline && now_ms(r->client) + *delay >= r->total_deadline) return false;
    if (!r->retry_slot) {
        if (!tr_retry_budget_acquire(&r->pool->budget)) return false;
        r->retry_slot = true;
    }
    return true;
}

/* Breaker and outlier accounting for the end of a try. */
static void account(tr_client_req_t *r, bool failure)
{
    if (r->health || !r->has_inst) return;
    uint64_t now = now_ms(r->client);
    tr_breaker_t *b = tr__upstream_breaker(r->up);
    if (failure)
        tr_breaker_record_failure(b, now, r->probe);
    else
        tr_breaker_record_success(b, r->probe);
    r->probe = false;
    tr__upstream_record(r->up, r->inst, failure, now);
}

static void try_failed(tr_client_req_t *r, int err, fail_kind_t kind, bool stale)
{
    conn_t *cn = r->conn;
    if (cn) {
        unbind(r);
        conn_close(cn);
    }
    if (!r->health) {
        if (kind == F_CONNECT) tr__upstream_count_connect_error(r->up);
        if (kind == F_TIMEOUT) tr__upstream_count_timeout(r->up);
    }
    /* An idle pooled connection the upstream closed just as we reused it says
     * nothing about the upstream's health. */
    if (stale) {
        if (r->probe) tr_breaker_release_probe(tr__upstream_breaker(r->up));
        r->probe = false;
    } else {
        account(r, true);
    }
    uint64_t delay;
    if (retry_plan(r, kind, &delay)) {
        r->state = R_BACKOFF;
        uv_timer_start(&r->timer, on_timer, delay, 0);
        return;
    }
    finish_error(r, err);
}

/* Picks the instance and asks the breaker for one try. Returns 0 or a
 * TR_CLIENT_E* code. */
static int try_admit(tr_client_req_t *r)
{
    uint64_t now = now_ms(r->client);
    size_t inst;
    if (tr__upstream_pick(r->up, now, &r->pool->cursor, r->pool->outstanding, &inst) != 0)
        return TR_CLIENT_ENO_HEALTHY;
    tr_breaker_verdict_t v = tr_breaker_allow(tr__upstream_breaker(r->up), now);
    if (v == TR_BREAKER_REJECT) return TR_CLIENT_EBREAKER_OPEN;
    r->probe = v == TR_BREAKER_PROBE;
    r->inst = inst;
    r->has_inst = true;
    return 0;
}

static void try_next(tr_client_req_t *r)
{
    int err = try_admit(r);
    if (err != 0) {
        finish_error(r, err);
        return;
    }
    tr__upstream_count_retry(r->up);
    try_start(r);
}

static void on_timer(uv_timer_t *t)
{
    tr_client_req_t *r = t->data;
    uint64_t now = now_ms(r->client);
    switch (r->state) {
    case R_FAIL_PENDING:
        try_failed(r, r->pending_err, r->pending_kind, false);
        return;
    case R_BACKOFF:
        try_next(r);
        return;
    case R_TRY:
        if (r->conn && r->conn->state == C_CONNECTING && r->connect_deadline &&
            now >= r->connect_deadline) {
            try_failed(r, TR_CLIENT_ECONNECT_TIMEOUT, F_CONNECT, false);
            return;
        }
        if (r->try_deadline && now >= r->try_deadline) {
            try_failed(r, TR_CLIENT_ETRY_TIMEOUT, F_TIMEOUT, false);
            return;
        }
        arm_try_timer(r);
        return;
    case R_BODY:
        if (r->paused || !r->idle_timeout_ms) return;
        if (now - r->last_activity >= r->idle_timeout_ms) {
            finish_error(r, TR_CLIENT_EIDLE_TIMEOUT);
            return;
        }
        uv_timer_start(&r->timer, on_timer, r->last_activity + r->idle_timeout_ms - now, 0);
        return;
    }
}

static void on_deadline(uv_timer_t *t)
{
    tr_client_req_t *r = t->data;
    if (r->state == R_BODY) return;
    if (!r->health) tr__upstream_count_timeout(r->up);
    if (r->state == R_TRY) account(r, true);
    finish_error(r, TR_CLIENT_ETOTAL_TIMEOUT);
}

/* Starts the total and per-try clocks once the request is complete (at the
 * start for buffered bodies, at tr_client_end for streamed ones). */
static void arm_deadlines(tr_client_req_t *r)
{
    uint64_t now = now_ms(r->client);
    if (r->total_timeout_ms && !r->total_deadline) {
        r->total_deadline = now + r->total_timeout_ms;
        uv_timer_start(&r->deadline, on_deadline, r->total_timeout_ms, 0);
    }
    if (r->state == R_TRY && r->try_timeout_ms && !r->try_deadline) {
        r->try_deadline = now + r->try_timeout_ms;
        arm_try_timer(r);
    }
}

/* ---- writing ------------------------------------------------------------ */

static void conn_io_failed(conn_t *cn, int err, fail_kind_t kind);

static void chunk_write(conn_t *cn, chunk_t *ch);

static void on_chunk_written(uv_write_t *w, int status)
{
    chunk_t *ch = w->data;
    conn_t *cn = ch->conn;
    cn->writes_pending--;
    tr_client_req_t *r = cn->state == C_CLOSING ? NULL : cn->req;
    size_t len = ch->len;
    free(ch);
    if (!r) return;
    r->chunks_in_flight--;
    r->pending -= len;
    if (status < 0) {
        conn_io_failed(cn, TR_CLIENT_ECLOSED, F_RESET);
        return;
    }
    if (r->pending == 0 && !r->queue && r->cb->on_written && !r->terminal) {
        r->cb_depth++;
        r->cb->on_written(r, r->data);
        r->cb_depth--;
        if (r->cancel_requested) req_abort(r);
    }
}

static void chunk_write(conn_t *cn, chunk_t *ch)
{
    tr_client_req_t *r = cn->req;
    ch->conn = cn;
    ch->w.data = ch;
    r->body_sent = true;
    r->chunks_in_flight++;
    cn->writes_pending++;
    if (uv_write(&ch->w, (uv_stream_t *)cn->tcp, ch->bufs, ch->nbufs, on_chunk_written) != 0) {
        cn->writes_pending--;
        r->chunks_in_flight--;
        free(ch);
        fail_later(r, TR_CLIENT_ECLOSED, F_RESET);
    }
}

static void do_upgrade(conn_t *cn, const char *extra, size_t extra_len);

static void on_head_written(uv_write_t *w, int status)
{
    conn_t *cn = w->data;
    cn->writes_pending--;
    if (cn->state == C_CLOSING) return;
    tr_client_req_t *r = cn->req;
    if (!r) return;
    if (status < 0) {
        conn_io_failed(cn, TR_CLIENT_ECLOSED, F_RESET);
        return;
    }
    r->head_written = true;
    if (cn->upgrade_ready && cn->writes_pending == 0)
        do_upgrade(cn, cn->bbuf + cn->hold_off, cn->hold_len);
}

static void send_request(conn_t *cn)
{
    tr_client_req_t *r = cn->req;
    uv_buf_t bufs[4];
    unsigned n = 0;
    bufs[n++] = uv_buf_init(r->head.data, (unsigned)r->head.len);
    if (!r->has_host) {
        size_t len;
        const char *line = tr__upstream_host_line(r->up, cn->inst, &len);
        bufs[n++] = uv_buf_init((char *)line, (unsigned)len);
    }
    bufs[n++] = uv_buf_init("\r\n", 2);
    if (!r->stream && r->body_len) bufs[n++] = uv_buf_init((char *)r->body, (unsigned)r->body_len);
    cn->head_write.data = cn;
    cn->writes_pending++;
    if (uv_write(&cn->head_write, (uv_stream_t *)cn->tcp, bufs, n, on_head_written) != 0) {
        cn->writes_pending--;
        fail_later(r, TR_CLIENT_ECLOSED, F_RESET);
        return;
    }
    while (r->stream && r->queue) {
        chunk_t *ch = r->queue;
        r->queue = ch->next;
        if (!r->queue) r->queue_tail = NULL;
        chunk_write(cn, ch);
    }
    conn_read_start(cn);
}

static void on_connect(uv_connect_t *creq, int status)
{
    conn_t *cn = creq->data;
    if (cn->state == C_CLOSING) return;
    tr_client_req_t *r = cn->req;
    if (status < 0) {
        try_failed(r, TR_CLIENT_ECONNECT, F_CONNECT, false);
        return;
    }
    cn->state = C_ACTIVE;
    arm_try_timer(r);
    send_request(cn);
}

static void try_start(tr_client_req_t *r)
{
    pool_t *p = r->pool;
    tr_client_t *c = r->client;
    uint64_t now = now_ms(c);
    size_t inst = r->inst;
    r->tries++;
    r->state = R_TRY;
    r->head_written = false;
    r->status = 0;
    r->connect_deadline = 0;
    r->try_deadline = 0;
    if (r->try_timeout_ms && (!r->stream || r->ended)) r->try_deadline = now + r->try_timeout_ms;

    conn_t *cn = r->health ? NULL : p->idle[inst];
    if (cn) {
        idle_remove(cn);
        cn->state = C_ACTIVE;
        uv_ref((uv_handle_t *)cn->tcp);
    } else {
        cn = conn_new(p, inst);
        cn->state = C_CONNECTING;
        cn->connect_req.data = cn;
        int rc =
            uv_tcp_connect(&cn->connect_req, cn->tcp, tr__upstream_addr(r->up, inst), on_connect);
        if (rc != 0) {
            cn->req = r;
            r->conn = cn;
            p->outstanding[inst]++;
            fail_later(r, TR_CLIENT_ECONNECT, F_CONNECT);
            return;
        }
        if (r->connect_timeout_ms) r->connect_deadline = now + r->connect_timeout_ms;
    }
    cn->req = r;
    r->conn = cn;
    p->outstanding[inst]++;
    arm_try_timer(r);
    if (cn->state == C_ACTIVE) send_request(cn);
}

/* ---- reading ------------------------------------------------------------ */

static void pool_put(conn_t *cn)
{
    pool_t *p = cn->pool;
    if (p->dead || p->nidle[cn->inst] >= p->cfg->max_idle_per_instance) {
        conn_close(cn);
        return;
    }
    conn_reset_parser(cn);
    cn->state = C_IDLE;
    cn->reused = true;
    cn->got_bytes = false;
    cn->idle_since = now_ms(cn->client);
    cn->idle_prev = NULL;
    cn->idle_next = p->idle[cn->inst];
    if (cn->idle_next) cn->idle_next->idle_prev = cn;
    p->idle[cn->inst] = cn;
    p->nidle[cn->inst]++;
    conn_read_start(cn); /* notice the upstream closing it */
    uv_unref((uv_handle_t *)cn->tcp);
}

static const tr_header_t *collect_headers(conn_t *cn, size_t *n)
{
    tr_client_t *c = cn->client;
    const char *p = cn->hdr.data;
    size_t count = 0;
    for (size_t i = 0; i < cn->nheaders && p; i++) {
        const char *name = p;
        p += strlen(p) + 1;
        const char *value = p;
        p += strlen(p) + 1;
        c->hdrs[count++] = (tr_header_t){name, value};
    }
    *n = count;
    return c->hdrs;
}

/* The response head of the current try. Returns false when the request no
 * longer continues on this connection (retrying, cancelled). */
static bool handle_head(conn_t *cn)
{
    tr_client_req_t *r = cn->req;
    int status = llhttp_get_status_code(&cn->parser);
    r->status = status;
    bool failure = status >= 500;
    uint64_t delay;
    if (failure && retry_plan(r, F_STATUS, &delay)) {
        account(r, true);
        unbind(r);
        conn_close(cn);
        r->state = R_BACKOFF;
        uv_timer_start(&r->timer, on_timer, delay, 0);
        return false;
    }
    account(r, failure);
    r->state = R_BODY;
    r->head_delivered = true;
    uv_timer_stop(&r->deadline);
    r->last_activity = now_ms(r->client);
    if (r->idle_timeout_ms)
        uv_timer_start(&r->timer, on_timer, r->idle_timeout_ms, 0);
    else
        uv_timer_stop(&r->timer);
    if (r->cb->on_head) {
        size_t n;
        const tr_header_t *h = collect_headers(cn, &n);
        r->cb_depth++;
        r->cb->on_head(r, status, h, n, r->data);
        r->cb_depth--;
        if (r->cancel_requested) {
            req_abort(r);
            return false;
        }
    }
    return true;
}

static void handle_done(conn_t *cn, size_t rest)
{
    tr_client_req_t *r = cn->req;
    bool keep = llhttp_should_keep_alive(&cn->parser) && rest == 0 && r->head_written &&
                !(r->stream && (!r->ended || r->queue || r->chunks_in_flight)) &&
                cn->writes_pending == 0 && !r->upgrade && !r->health;
    unbind(r);
    if (keep)
        pool_put(cn);
    else
        conn_close(cn);
    finish_done(r);
}

static void do_upgrade(conn_t *cn, const char *extra, size_t extra_len)
{
    tr_client_req_t *r = cn->req;
    tr_client_t *c = cn->client;
    size_t n;
    const tr_header_t *h = collect_headers(cn, &n);
    conn_read_stop(cn);
    uv_tcp_t *tcp = cn->tcp;
    tcp->data = NULL;
    unbind(r);
    /* The connection object goes; its handle is the caller's now. */
    if (cn->all_prev)
        cn->all_prev->all_next = cn->all_next;
    else
        c->conns = cn->all_next;
    if (cn->all_next) cn->all_next->all_prev = cn->all_prev;
    c->live_handles--;
    /* extra may point into the body buffer and h into the header buffer:
     * both outlive the callback. */
    char *bbuf = cn->bbuf;
    tr_buf_t hdr = cn->hdr;
    pool_unref(cn->pool);
    free(cn);
    account(r, false);
    req_detach(r);
    observe(r, 101, 0);
    r->cb_depth++;
    r->cb->on_upgrade(r, h, n, tcp, extra, extra_len, r->data);
    body_buf_put(c, bbuf);
    tr_buf_free(&hdr);
    req_release_pool(r);
    req_free(r);
}

/* Keeps the unparsed rest for later in the body buffer, copying it there
 * when it is still in the shared read buffer. */
static void hold_rest(conn_t *cn, const char *pos, size_t rest)
{
    if (!cn->bbuf) cn->bbuf = body_buf_get(cn->client);
    if (pos < cn->bbuf || pos >= cn->bbuf + READ_BUF_BYTES) {
        if (rest) memcpy(cn->bbuf, pos, rest);
        pos = cn->bbuf;
    }
    cn->hold_off = (size_t)(pos - cn->bbuf);
    cn->hold_len = rest;
}

/* Runs the parser over data and acts on what it found (note 3). */
static void conn_feed(conn_t *cn, const char *data, size_t len)
{
    for (;;) {
        tr_client_req_t *r = cn->req;
        cn->ev = 0;
        cn->feeding = true;
        llhttp_errno_t e = llhttp_execute(&cn->parser, data, len);
        cn->feeding = false;
        const char *pos = e == HPE_OK ? data + len : llhttp_get_error_pos(&cn->parser);
        size_t rest = (size_t)(data + len - pos);
        if (r->cancel_requested) {
            req_abort(r);
            return;
        }
        if (e == HPE_OK) {
            cn->hold_len = 0;
            if (!r->paused) conn_read_start(cn);
            return;
        }
        if (e == HPE_PAUSED_UPGRADE && (cn->ev & EV_UPGRADE)) {
            if (cn->writes_pending == 0) {
                do_upgrade(cn, pos, rest);
            } else {
                conn_read_stop(cn);
                hold_rest(cn, pos, rest);
                cn->upgrade_ready = true;
            }
            return;
        }
        if (e != HPE_PAUSED) {
            conn_io_failed(cn, TR_CLIENT_EPROTOCOL, F_PROTOCOL);
            return;
        }
        llhttp_resume(&cn->parser);
        if (cn->ev & EV_HEAD) {
            if (!handle_head(cn)) return;
            /* The body is parsed from the connection's own buffer (note 4). */
            if (rest && !(cn->ev & EV_DONE)) {
                hold_rest(cn, pos, rest);
                pos = cn->bbuf + cn->hold_off;
            }
        }
        if (cn->ev & EV_DONE) {
            handle_done(cn, rest);
            return;
        }
        if (r->paused) {
            conn_read_stop(cn);
            hold_rest(cn, pos, rest);
            cn->held = true;
            return;
        }
        data = pos;
        len = rest;
    }
}

/* A failure of the connection bound to a request (I/O error, EOF, parse
 * error, failed write). */
static void conn_io_failed(conn_t *cn, int err, fail_kind_t kind)
{
    tr_client_req_t *r = cn->req;
    if (!r) {
        conn_close(cn);
        return;
    }
    if (r->head_delivered) {
        finish_error(r, err);
        return;
    }
    bool stale = kind == F_RESET && cn->reused && !cn->got_bytes;
    try_failed(r, err, kind, stale);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *cn = s->data;
    if (nread == 0) return;
    if (cn->state != C_ACTIVE || !cn->req) {
        /* An idle connection has nothing to say: EOF, error or stray bytes
         * all mean it cannot be reused. */
        conn_close(cn);
        return;
    }
    tr_client_req_t *r = cn->req;
    if (nread < 0) {
        if (nread == UV_EOF && r->head_delivered) {
            cn->ev = 0;
            llhttp_errno_t e = llhttp_finish(&cn->parser);
            if ((e == HPE_OK || e == HPE_PAUSED) && (cn->ev & EV_DONE)) {
                handle_done(cn, 0);
                return;
            }
        }
        conn_io_failed(cn, TR_CLIENT_ECLOSED, F_RESET);
        return;
    }
    cn->got_bytes = true;
    r->last_activity = now_ms(cn->client);
    conn_feed(cn, buf->base, (size_t)nread);
}

/* ---- parser callbacks --------------------------------------------------- */

static int hdr_end_value(conn_t *cn)
{
    if (cn->nheaders >= MAX_RESPONSE_HEADERS) return -1;
    if (tr_buf_append(&cn->hdr, "", 1) != 0) return -1;
    cn->nheaders++;
    cn->hstate = 0;
    return 0;
}

static int p_message_begin(llhttp_t *p)
{
    conn_t *cn = p->data;
    tr_buf_reset(&cn->hdr);
    cn->nheaders = 0;
    cn->hstate = 0;
    return 0;
}

static int p_header_field(llhttp_t *p, const char *at, size_t len)
{
    conn_t *cn = p->data;
    /* A field right after a completed field: the value was empty. */
    if (cn->hstate == 2 && hdr_end_value(cn) != 0) return -1;
    cn->hstate = 1;
    return tr_buf_append(&cn->hdr, at, len) == 0 ? 0 : -1;
}

static int p_header_field_complete(llhttp_t *p)
{
    conn_t *cn = p->data;
    cn->hstate = 2;
    return tr_buf_append(&cn->hdr, "", 1) == 0 ? 0 : -1;
}

static int p_header_value(llhttp_t *p, const char *at, size_t len)
{
    conn_t *cn = p->data;
    cn->hstate = 3;
    return tr_buf_append(&cn->hdr, at, len) == 0 ? 0 : -1;
}

static int p_header_value_complete(llhttp_t *p)
{
    return hdr_end_value(p->data);
}

static int p_headers_complete(llhttp_t *p)
{
    conn_t *cn = p->data;
    tr_client_req_t *r = cn->req;
    if (cn->hstate == 2 && hdr_end_value(cn) != 0) return -1;
    int status = p->status_code;
    if (status == 101) {
        if (!r->upgrade) return -1;
        cn->ev |= EV_UPGRADE;
        return 2;
    }
    if (status >= 100 && status < 200) {
        cn->interim = true;
        return 1;
    }
    cn->ev |= EV_HEAD;
    /* A HEAD answer, 204 and 304 never have a body (RFC 9110 §6.4.1), even
     * when an upstream sends a Content-Length with them: 1 tells llhttp so,
     * instead of waiting for bytes that will not come. */
    return r->is_head || status == 204 || status == 304 ? 1 : HPE_PAUSED;
}

static int p_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *cn = p->data;
    tr_client_req_t *r = cn->req;
    if (r->cb->on_body) {
        r->cb_depth++;
        r->cb->on_body(r, at, len, r->data);
        r->cb_depth--;
    }
    if (r->cancel_requested) return HPE_USER;
    if (r->paused) {
        cn->ev |= EV_PAUSE;
        return HPE_PAUSED;
    }
    return 0;
}

static int p_message_complete(llhttp_t *p)
{
    conn_t *cn = p->data;
    if (cn->interim) {
        cn->interim = false;
        return 0;
    }
    if (cn->ev & EV_UPGRADE) return 0;
    cn->ev |= EV_DONE;
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = p_message_begin,
    .on_header_field = p_header_field,
    .on_header_field_complete = p_header_field_complete,
    .on_header_value = p_header_value,
    .on_header_value_complete = p_header_value_complete,
    .on_headers_complete = p_headers_complete,
    .on_body = p_body,
    .on_message_complete = p_message_complete,
};

/* ---- pause / resume ----------------------------------------------------- */

void tr_client_pause(tr_client_req_t *r)
{
    if (!r || r->terminal || r->paused) return;
    r->paused = true;
    conn_t *cn = r->conn;
    /* Inside on_body the parser callback stops the feed itself; before the
     * head, the feed stops right after delivering it. */
    if (cn && !cn->feeding && r->state == R_BODY) conn_read_stop(cn);
}

static void on_resume_idle(uv_idle_t *h)
{
    tr_client_t *c = h->data;
    while (c->resume_head) {
        tr_client_req_t *r = c->resume_head;
        resume_queue_remove(r);
        conn_t *cn = r->conn;
        if (!cn || r->paused || !cn->held) continue;
        cn->held = false;
        conn_feed(cn, cn->bbuf + cn->hold_off, cn->hold_len);
    }
    uv_idle_stop(h);
}

void tr_client_resume(tr_client_req_t *r)
{
    if (!r || r->terminal || !r->paused) return;
    r->paused = false;
    conn_t *cn = r->conn;
    if (!cn || cn->feeding) return;
    if (r->state == R_BODY && r->idle_timeout_ms) {
        r->last_activity = now_ms(r->client);
        uv_timer_start(&r->timer, on_timer, r->idle_timeout_ms, 0);
    }
    if (cn->held) {
        tr_client_t *c = r->client;
        if (!r->in_resume_queue) {
            r->resume_prev = NULL;
            r->resume_next = c->resume_head;
            if (c->resume_head) c->resume_head->resume_prev = r;
            c->resume_head = r;
            r->in_resume_queue = true;
        }
        uv_idle_start(&c->resume_idle, on_resume_idle);
        return;
    }
    if (r->state == R_BODY) conn_read_start(cn);
}

/* ---- streamed bodies ---------------------------------------------------- */

static chunk_t *chunk_new(const tr_client_req_t *r, const void *data, size_t len, bool last)
{
    bool chunked = r->stream_length < 0;
    chunk_t *ch = tr_xmalloc(sizeof *ch + len);
    ch->next = NULL;
    ch->conn = NULL;
    ch->len = len;
    ch->nbufs = 0;
    if (len) memcpy(ch->data, data, len);
    if (chunked && last) {
        ch->bufs[ch->nbufs++] = uv_buf_init("0\r\n\r\n", 5);
    } else if (chunked) {
        int n = snprintf(ch->prefix, sizeof ch->prefix, "%zx\r\n", len);
        ch->bufs[ch->nbufs++] = uv_buf_init(ch->prefix, (unsigned)n);
        ch->bufs[ch->nbufs++] = uv_buf_init(ch->data, (unsigned)len);
        ch->bufs[ch->nbufs++] = uv_buf_init("\r\n", 2);
    } else {
        ch->bufs[ch->nbufs++] = uv_buf_init(ch->data, (unsigned)len);
    }
    return ch;
}

static void chunk_submit(tr_client_req_t *r, chunk_t *ch)
{
    conn_t *cn = r->conn;
    if (r->state == R_TRY && cn && cn->state == C_ACTIVE && !r->queue) {
        chunk_write(cn, ch);
        return;
    }
    if (r->state == R_BODY && cn) {
        chunk_write(cn, ch);
        return;
    }
    if (r->queue_tail)
        r->queue_tail->next = ch;
    else
        r->queue = ch;
    r->queue_tail = ch;
}

int tr_client_write(tr_client_req_t *r, const void *data, size_t len)
{
    if (!r || !r->stream || r->ended || r->terminal) return -EINVAL;
    if (len == 0) return 0;
    if (r->stream_length >= 0 && r->streamed + len > (uint64_t)r->stream_length) return -EINVAL;
    r->streamed += len;
    r->pending += len;
    chunk_submit(r, chunk_new(r, data, len, false));
    return 0;
}

int tr_client_end(tr_client_req_t *r)
{
    if (!r || !r->stream || r->ended || r->terminal) return -EINVAL;
    if (r->stream_length >= 0 && r->streamed != (uint64_t)r->stream_length) return -EINVAL;
    r->ended = true;
    if (r->stream_length < 0) chunk_submit(r, chunk_new(r, NULL, 0, true));
    if (r->state == R_TRY || r->state == R_BACKOFF) arm_deadlines(r);
    return 0;
}

size_t tr_client_write_pending(const tr_client_req_t *r)
{
    return r ? r->pending : 0;
}

/* ---- starting requests -------------------------------------------------- */

static int build_head(tr_client_req_t *r, const tr_client_opts_t *o)
{
    tr_buf_t *b = &r->head;
    int rc = tr_buf_printf(b, "%s %s HTTP/1.1\r\n", o->method, o->target);
    bool has_key = false;
    for (size_t i = 0; i < o->nheaders && rc == 0; i++) {
        const tr_header_t *h = &o->headers[i];
        if (!is_token(h->name) || !h->value || !is_field_value(h->value)) return -EINVAL;
        if (strcasecmp(h->name, "Content-Length") == 0 ||
            strcasecmp(h->name, "Transfer-Encoding") == 0 || strcasecmp(h->name, "Connection") == 0)
            continue;
        if (strcasecmp(h->name, "Host") == 0) r->has_host = true;
        if (strcasecmp(h->name, "Idempotency-Key") == 0) has_key = true;
        if ((rc = tr_buf_append_str(b, h->name)) == 0 && (rc = tr_buf_append(b, ": ", 2)) == 0 &&
            (rc = tr_buf_append_str(b, h->value)) == 0)
            rc = tr_buf_append(b, "\r\n", 2);
    }
    r->idempotent = tr_retry_method_allowed(o->method, has_key);
    if (rc == 0 && o->stream_body) {
        if (o->stream_length >= 0)
            rc = tr_buf_printf(b, "Content-Length: %lld\r\n", (long long)o->stream_length);
        else
            rc = tr_buf_append_str(b, "Transfer-Encoding: chunked\r\n");
    } else if (rc == 0) {
        static const char *const bodyless[] = {"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"};
        bool needs_length = o->body_len > 0;
        if (!needs_length) {
            needs_length = true;
            for (size_t i = 0; i < sizeof bodyless / sizeof bodyless[0]; i++)
                if (strcmp(o->method, bodyless[i]) == 0) needs_length = false;
        }
        if (needs_length) rc = tr_buf_printf(b, "Content-Length: %zu\r\n", o->body_len);
    }
    if (rc == 0 && o->upgrade) rc = tr_buf_append_str(b, "Connection: Upgrade\r\n");
    if (rc == 0 && r->health) rc = tr_buf_append_str(b, "Connection: close\r\n");
    return rc == 0 ? 0 : -EINVAL;
}

/* The shared part of tr_client_request and health checks. pinned >= 0 skips
 * balancing and the breaker (health checks). */
static int request_start(tr_client_t *c, tr_upstream_t *up, const tr_client_opts_t *o, bool health,
                         size_t pinned, tr_client_req_t **out)
{
    int rc = 0;
    if (!o || !o->cb || !o->cb->on_done || !o->cb->on_error || !is_token(o->method) ||
        !is_target(o->target) || (o->upgrade && !o->cb->on_upgrade) || (o->body_len && !o->body) ||
        (o->stream_body && o->upgrade) || c->closing)
        return -EINVAL;
    pool_t *p = pool_get(c, up);
    tr_client_req_t *r = req_alloc(c);
    r->pool = p;
    p->refs++;
    r->up = up;
    r->cb = o->cb;
    r->data = o->data;
    r->health = health;
    r->upgrade = o->upgrade;
    r->is_head = strcmp(o->method, "HEAD") == 0;
    r->stream = o->stream_body;
    r->stream_length = o->stream_body ? o->stream_length : -1;
    r->body = o->stream_body ? NULL : o->body;
    r->body_len = o->stream_body ? 0 : o->body_len;
    r->connect_timeout_ms = o->connect_timeout_ms;
    r->try_timeout_ms = o->try_timeout_ms;
    r->total_timeout_ms = o->total_timeout_ms;
    r->idle_timeout_ms = o->idle_timeout_ms;
    r->retry = o->retry;
    r->start_ns = uv_hrtime();
    if ((rc = build_head(r, o)) != 0) goto fail;

    if (health) {
        r->inst = pinned;
        r->has_inst = true;
    } else if ((rc = try_admit(r)) != 0) {
        observe(r, 0, rc);
        goto fail;
    }
    if (!health) {
        r->counted = true;
        p->budget.active_requests++;
    }
    r->state = R_TRY;
    if (!r->stream) arm_deadlines(r);
    try_start(r);
    if (out) *out = r;
    return 0;
fail:
    req_detach(r);
    req_release_pool(r);
    req_free(r);
    return rc;
}

int tr_client_request(tr_client_t *c, tr_upstream_t *up, const tr_client_opts_t *o,
                      tr_client_req_t **out)
{
    return request_start(c, up, o, false, 0, out);
}

const char *tr_client_req_instance(const tr_client_req_t *r)
{
    return r->has_inst ? tr__upstream_address(r->up, r->inst) : "";
}

unsigned tr_client_req_tries(const tr_client_req_t *r)
{
    return r->tries;
}

/* ---- health checks ------------------------------------------------------ */

static void health_on_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n,
                           void *data)
{
    (void)r;
    (void)h;
    (void)n;
    ((health_check_t *)data)->status = status;
}

static void health_on_done(tr_client_req_t *r, void *data)
{
    (void)r;
    health_check_t *hc = data;
    hc->req = NULL;
    tr__upstream_health_report(hc->pool->up, hc->inst, hc->status >= 200 && hc->status < 300);
}

static void health_on_error(tr_client_req_t *r, int err, void *data)
{
    (void)r;
    (void)err;
    health_check_t *hc = data;
    hc->req = NULL;
    tr__upstream_health_report(hc->pool->up, hc->inst, false);
}

static const tr_client_callbacks_t health_callbacks = {
    .on_head = health_on_head, .on_done = health_on_done, .on_error = health_on_error};

static void on_health_timer(uv_timer_t *t)
{
    pool_t *p = t->data;
    if (p->dead) return;
    tr_client_opts_t o;
    tr_client_opts_init(&o);
    o.target = p->cfg->health_path;
    o.connect_timeout_ms = p->cfg->health_timeout_ms;
    o.total_timeout_ms = p->cfg->health_timeout_ms;
    o.idle_timeout_ms = p->cfg->health_timeout_ms;
    o.retry.max_retries = 0;
    o.cb = &health_callbacks;
    for (size_t i = 0; i < p->n; i++) {
        health_check_t *hc = &p->checks[i];
        if (hc->req) continue; /* the previous check is still running */
        hc->status = 0;
        o.data = hc;
        tr_client_req_t *r;
        if (request_start(p->client, p->up, &o, true, i, &r) == 0) hc->req = r;
    }
}

static void on_health_timer_closed(uv_handle_t *h)
{
    pool_t *p = h->data;
    tr_client_t *c = p->client;
    free(h);
    pool_unref(p);
    handle_closed(c);
}

int tr_client_run_health_checks(tr_client_t *c, tr_upstream_t *up)
{
    const tr_upstream_config_t *cfg = tr_upstream_config(up);
    if (!cfg->health_path || !cfg->health_path[0] || cfg->health_interval_ms == 0 ||
        !is_target(cfg->health_path))
        return -EINVAL;
    pool_t *p = pool_get(c, up);
    if (p->health_timer) return -EALREADY;
    p->checks = tr_xcalloc(p->n, sizeof *p->checks);
    for (size_t i = 0; i < p->n; i++) {
        p->checks[i].pool = p;
        p->checks[i].inst = i;
    }
    p->health_timer = tr_xmalloc(sizeof *p->health_timer);
    uv_timer_init(c->loop, p->health_timer);
    p->health_timer->data = p;
    c->live_handles++;
    p->refs++;
    uv_timer_start(p->health_timer, on_health_timer, 0, cfg->health_interval_ms);
    uv_unref((uv_handle_t *)p->health_timer);
    return 0;
}

/* ---- client ------------------------------------------------------------- */

/* Drops a pool from the client: idle connections close, health checks stop;
 * requests still using it keep it alive through their references. */
static void pool_retire(pool_t *p)
{
    tr_client_t *c = p->client;
    p->dead = true;
    for (pool_t **pp = &c->pools; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    for (size_t i = 0; i < p->n; i++)
        while (p->idle[i])
            conn_close(p->idle[i]);
    if (p->checks)
        for (size_t i = 0; i < p->n; i++)
            if (p->checks[i].req) {
                tr_client_req_t *r = p->checks[i].req;
                p->checks[i].req = NULL;
                tr_client_cancel(r);
            }
    if (p->health_timer) {
        uv_close((uv_handle_t *)p->health_timer, on_health_timer_closed);
        p->health_timer = NULL;
    }
    pool_unref(p);
}

static void on_sweep(uv_timer_t *t)
{
    tr_client_t *c = t->data;
    uint64_t now = now_ms(c);
    pool_t *next;
    for (pool_t *p = c->pools; p; p = next) {
        next = p->next;
        if (tr__upstream_retired(p->up)) {
            pool_retire(p);
            continue;
        }
        for (size_t i = 0; i < p->n; i++) {
            conn_t *cn = p->idle[i], *cn_next;
            for (; cn; cn = cn_next) {
                cn_next = cn->idle_next;
                if (now - cn->idle_since >= p->cfg->idle_timeout_ms) conn_close(cn);
            }
        }
    }
}

static void handle_closed(tr_client_t *c)
{
    if (--c->live_handles == 0 && c->closing) free(c);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

int tr_client_new(uv_loop_t *loop, tr_client_t **out)
{
    tr_client_t *c = tr_xcalloc(1, sizeof *c);
    c->loop = loop;
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    uv_timer_start(&c->sweep, on_sweep, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
    uv_unref((uv_handle_t *)&c->sweep);
    uv_idle_init(loop, &c->resume_idle);
    c->resume_idle.data = c;
    c->live_handles = 2;
    *out = c;
    return 0;
}

void tr_client_free(tr_client_t *c)
{
    if (!c || c->closing) return;
    /* Pools first: that cancels their health checks through the pointers the
     * pools keep, before the generic sweep of the active list. */
    while (c->pools)
        pool_retire(c->pools);
    while (c->active)
        req_abort(c->active);
    c->closing = true;
    while (c->free_bufs) {
        char *b = c->free_bufs;
        memcpy(&c->free_bufs, b, sizeof(char *));
        free(b);
    }
    c->nfree_bufs = 0;
    while (c->free_reqs) {
        tr_client_req_t *r = c->free_reqs;
        c->free_reqs = r->next;
        req_close_handles(r);
    }
    c->nfree = 0;
    uv_close((uv_handle_t *)&c->sweep, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->resume_idle, on_client_handle_closed);
}

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
 *   READING --request ready--> HANDLING --answered--> WRITING --written--+
 *      ^                                   (try_write done: skip WRITING)|
 *      +--- keep-alive ---+--- body complete --- DISCARDING <-- body left+
 *                         +--------------------------------- body done --+
 *   READING     parsing a head; or a buffered body before dispatch.
 *   HANDLING    a request is with its handler and its answer is not
 *               complete; a streamed body may flow to the handler.
 *   WRITING     the answer is complete and being written (the single
 *               write of a whole answer, or a streamed answer's last ones).
 *   DISCARDING  the answer is out; the rest of a body it did not need is
 *               read and dropped before the next request (server.h, EARLY
 *               ANSWERS).
 *   last answer (close decided) -> LINGERING: FIN sent, the peer's remaining
 *   bytes are read and dropped until it closes or a short timer fires, so a
 *   client still sending (a 413'd body) reads our answer instead of a reset.
 *   Anything -> CLOSED (uv_close on the socket and the timer).
 *
 * REQUEST BODY (conn->body), orthogonal to the state, for the request the
 * connection carries:
 *   RB_NONE     nothing left to read (complete, buffered, or none at all);
 *   RB_HELD     streamed mode, the handler has not started reading: nothing
 *               is parsed, reading stops once the stash is full;
 *   RB_STREAM   parsed as it arrives and handed to the handler (unless it
 *               paused: then as under RB_HELD);
 *   RB_DISCARD  the request was answered first: parsed and dropped;
 *   RB_FAILED   will never be complete (limit, framing, timeout, client
 *               gone): the connection closes after the answer.
 * The parser is fed exactly when conn_wants_input() says so.
 *
 * Invariants:
 *   1. At most one request per connection is active; the tr_req_t embedded
 *      in the connection is reused by the next one only after it was
 *      released. A request is released once its answer ended AND every
 *      write of it called back, so the bytes a streamed write references
 *      and the req its callback gets stay valid (req_seq tells requests of
 *      one connection apart where a callback may have moved on).
 *   2. Bytes that arrive while the parser is not fed are stashed (inbuf)
 *      and parsed later, in order: pipelined requests are answered in
 *      order, a paused body resumes where it stopped. Reading goes on
 *      meanwhile, to notice a client that leaves (tr_req_cancelled), until
 *      the stash holds max_header_bytes, which bounds what a client can
 *      make us hold (one read of at most READ_SLAB_BYTES beyond that).
 *   3. A connection is freed only when both handles are closed AND no
 *      request is active AND it is not queued for or inside a pump, so a
 *      handler that answers after the client left still holds valid
 *      memory; its answer is discarded.
 *   4. No recursion into the parser: conn_run() does not nest (in_process),
 *      so an answer written synchronously inside dispatch or a body
 *      callback does not parse the next request from inside the handler's
 *      stack frame; the outer conn_run()'s loop does.
 *   5. Handler callbacks for bodies run only from loop callbacks (read,
 *      timer, pump, handle close), never from inside a tr_*() call the
 *      handler made: tr_req_body_start()/resume() queue the connection on
 *      the worker's pump (a uv_idle handle) instead.
 *
 * TIMERS (one uv_timer per connection, in one of these modes):
 *   HEADER  from accept (first request) or from the first byte of a later
 *           request until the headers are complete; 408 when bytes were
 *           received, else a silent close;
 *   BODY    idle_timeout_ms without a byte while reading a body: 408 for a
 *           buffered body, -ETIMEDOUT to a streaming handler (not while it
 *           is paused), a close while discarding;
 *   The request's deadline caps HEADER and BODY: the whole request, head
 *   and body, must arrive within request_timeout_ms of its first byte, so a
 *   client dripping bytes cannot hold a request open (a per-byte idle timer
 *   alone would let it, one byte per idle_timeout_ms). Time a streaming
 *   handler spends paused counts too: the deadline is the client's budget
 *   for the whole upload, as Envoy's request_timeout is;
 *   IDLE    idle_timeout_ms between keep-alive requests -> silent close;
 *   WRITE   idle_timeout_ms without the peer taking any byte of the answer
 *           -> close (a slow reader that keeps reading is not cut off);
 *   LINGER  see LINGERING above.
 *   A timeout of 0 in the config disables that timer (not the drain one).
 *
 * STREAMED ANSWERS. tr_respond_start() only builds the head (in conn->out);
 * it goes out with the first write or the end, in one writev. Each write is
 * one uv_write of [head][chunk-size line][data][CRLF] whose request record
 * (out_write_t) is freed in its callback; the handler's bytes are referenced,
 * not copied, and its callback is the write's, so "written" means handed to
 * the kernel. libuv calls write callbacks in order, and with UV_ECANCELED
 * when the socket is closed, always before the handle's close callback.
 *
 * UPGRADE. The client socket is dup()ed and the server's handle closed as
 * for any other connection, so the server's bookkeeping does not change;
 * libuv removes the fd from epoll before closing it, so the duplicate is
 * not haunted by the old registration.
 *
 * TLS (tls.h). A TLS connection differs from a plain one at three points
 * only, so plain connections run exactly the code they ran before: on_read
 * hands ciphertext to tls_input(), which decrypts it and calls conn_input()
 * (the plain read path) with each piece of plaintext; conn_write() encrypts
 * and queues the ciphertext as one uv_write whose callback calls the
 * caller's, so "written" keeps its meaning and libuv's ordering; and
 * conn_try_write() declines (the record layer takes all the plaintext at
 * once, so a partial try_write would leave nothing to resume from), which
 * sends whole answers down the queued path. Every flush takes all pending
 * ciphertext, handshake messages included, so records leave in the order
 * they were made. The handshake rides on the HEADER timer (silent close).
 * The plaintext a single read yields can exceed the ciphertext read by a
 * record the engine held back, hence the stash's larger maximum. The 503
 * for a connection over the limit is not sent over TLS (no handshake yet):
 * the connection is closed. Lingering and closing send close_notify first.
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
#include "kit/metrics.h"
#include "kit/server_internal.h"
#include "kit/tls.h"
#include "kit/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SLAB_BYTES    (64 * 1024)
#define LINGER_MS          2000
#define RESPONSE_MAX_BYTES (256u * 1024 * 1024)
#define KEEP_BUFFER_BYTES  (64 * 1024)
#define LISTEN_BACKLOG     4096
/* An early-answered body with more than this still announced is not worth
 * reading to keep the connection (server.h, EARLY ANSWERS). */
#define DISCARD_MAX_BYTES (64 * 1024)
/* One tr_respond_write() at most; uv_buf_t lengths are 32-bit. */
#define WRITE_MAX_BYTES (1024u * 1024 * 1024)
/* Plaintext a TLS read can yield beyond the ciphertext read (see TLS). */
#define TLS_STASH_SLACK (32 * 1024)
/* Writes of several small buffers are joined into one TLS record. */
#define TLS_GATHER_BYTES (16 * 1024)

typedef struct worker worker_t;

typedef enum conn_state {
    CONN_READING,
    CONN_HANDLING,
    CONN_WRITING,
    CONN_DISCARDING,
    CONN_LINGERING,
    CONN_CLOSED
} conn_state_t;

typedef enum body_state { RB_NONE, RB_HELD, RB_STREAM, RB_DISCARD, RB_FAILED } body_state_t;

typedef enum timer_mode {
    TIMER_OFF,
    TIMER_HEADER,
    TIMER_BODY,
    TIMER_IDLE,
    TIMER_WRITE,
    TIMER_LINGER
} timer_mode_t;

/* How a response head announces its body. */
typedef enum framing { FRAME_NONE, FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE } framing_t;

/* The handler's side of a streamed request body (tr_req_body_start). */
typedef struct body_reader {
    tr_body_data_cb on_data;
    tr_body_end_cb on_end;
    void *arg;
    int end_status;        /* for end_pending */
    bool started;          /* tr_req_body_start() was called */
    bool paused;           /* tr_req_body_pause() in effect */
    bool ended;            /* on_end was called */
    bool end_pending;      /* on_end is due from the pump or the close callback */
    bool buffered_pending; /* req->body is still to be given to on_data */
} body_reader_t;

/* A streamed answer (tr_respond_start .. end). */
typedef struct res_stream {
    int status;
    int64_t length;    /* announced Content-Length, -1 for chunked / close-delimited */
    uint64_t written;  /* body bytes accepted */
    size_t sent;       /* bytes queued on the wire, head and framing included */
    size_t copied;     /* bytes of copied writes not yet written */
    unsigned pending;  /* writes whose callback has not run */
    bool chunked;      /* body bytes are framed as chunks */
    bool nobody;       /* HEAD, 204, 304: body bytes are dropped */
    bool head_pending; /* the head in conn->out is not queued yet */
    bool ended;        /* tr_respond_end() or tr_respond_abort() was called */
    bool in_callback;  /* a write callback is running: release later */
} res_stream_t;

struct tr__conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_write_t continue_req;
    uv_shutdown_t shutdown_req;
    worker_t *w;
    tr__conn_t *prev, *next; /* the worker's list of connections not yet freed */
    tr__conn_t *pump_next;   /* the worker's pump queue */
    conn_state_t state;
    timer_mode_t timer_mode;
    body_state_t body;
    int body_error; /* why the body failed (RB_FAILED), for a reader yet to start */
    int closes_pending;
    bool counted;     /* counts toward max_connections */
    bool reading;     /* uv_read_start is in effect */
    bool close_after; /* the answer being prepared is the last one */
    bool peer_eof;
    bool in_process;
    bool req_prepared;     /* the request was made at headers time (on_headers) */
    bool continue_sent;    /* "100 Continue" went out for this request */
    bool continue_writing; /* ... and is still being written */
    bool pump_queued;
    bool pumping;
    bool cancel_due; /* cancel_cb is to run from the socket's close callback */
    tr_req_cancel_cb cancel_cb;
    void *cancel_arg;
    uint64_t start_ns;
    size_t write_queued; /* bytes libuv still held when the WRITE timer was armed */
    uint64_t req_seq;    /* bumped for every request the connection carries */
    tr_http_parser_t parser;
    tr_buf_t inbuf; /* bytes from inpos on wait to be parsed */
    size_t inpos;
    const char *run_rest; /* input conn_run() has not consumed yet, while it runs */
    size_t run_rest_len;
    tr_buf_t out;
    tr_match_result_t match_result;
    tr_match_t match;
    body_reader_t rd;
    res_stream_t rs;
    tr__tls_t *tls; /* NULL on a plain connection */
    char client_ip[64];
    tr_req_t req;
    tr_req_impl_t impl;
};

/* One queued write of a streamed answer; freed in its callback. */
typedef struct out_write {
    uv_write_t uv;
    tr__conn_t *c;
    tr_write_cb cb;
    void *arg;
    size_t copied; /* bytes in data[] */
    char frame[24];
    char data[]; /* the copy when the caller gave no callback */
} out_write_t;

struct worker {
    tr_worker_t pub;
    tr_server_t *srv;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    uv_timer_t drain_timer;
    uv_check_t log_flush; /* flushes this thread's batched log lines */
    uv_idle_t pump;       /* runs queued connections' body work (invariant 5) */
    tr__conn_t *pump_head, *pump_tail;
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
    char tls_plain[16 * 1024];  /* decrypted bytes on their way to conn_input */
    char tls_gather[TLS_GATHER_BYTES];
};

struct tr_server {
    tr_server_config_t cfg;
    int nworkers;
    worker_t **workers;
    int port;
    tr__tls_ctx_t *tls_ctx; /* NULL: plain TCP */
    atomic_bool stop_requested;
    uv_mutex_t lock;
    uv_cond_t cond;
    int nreported;
};

static void conn_close(tr__conn_t *c);
static void respond_whole(tr_req_t *req, int status, const char *content_type, const void *body,
                          size_t len);
static void process_inbuf(tr__conn_t *c);
static void after_response(tr__conn_t *c);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *t);
static void check_finish(worker_t *w);
static void server_error(tr__conn_t *c, int status);
static void deliver_end(tr__conn_t *c, int status);
static void conn_pump(tr__conn_t *c);

/* How http.c reaches this server (http_internal.h, DIRECTION). */
static const tr__req_ops_t req_ops = {.respond = respond_whole, .abort = tr_respond_abort};

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

/* Milliseconds left of the request's deadline (request_timeout_ms from its
 * first byte, c->start_ns), at least 1; UINT64_MAX when there is none. */
static uint64_t deadline_left_ms(const tr__conn_t *c)
{
    uint64_t limit = cfg_of(c)->request_timeout_ms;
    if (limit == 0) return UINT64_MAX;
    uint64_t elapsed = (uv_hrtime() - c->start_ns) / 1000000;
    return elapsed >= limit ? 1 : limit - elapsed;
}

/* Arms the BODY timer (see TIMERS): idle_timeout_ms without a byte, but
 * never past the request's deadline. */
static void body_timer(tr__conn_t *c)
{
    uint64_t ms = cfg_of(c)->idle_timeout_ms;
    uint64_t left = deadline_left_ms(c);
    if (ms == 0 || left < ms) ms = left == UINT64_MAX ? 0 : left;
    timer_set(c, TIMER_BODY, ms);
}

/* Bytes of answers not yet taken by the peer: those libuv still holds plus
 * those in the kernel's send queue (SIOCOUTQ: not yet acknowledged). */
static size_t unsent_bytes(const tr__conn_t *c)
{
    size_t n = uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
    uv_os_fd_t fd;
    int outq = 0;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &outq) == 0 &&
        outq > 0)
        n += (size_t)outq;
    return n;
}

/* Arms the WRITE timer: idle_timeout_ms without progress. A whole answer is
 * one uv_write with no callback until its end, so progress is seen in the
 * bytes still unsent (libuv's and the kernel's, which can hold megabytes):
 * when the timer fires and they shrank, the peer is reading, slowly, and
 * the timer starts again (on_timer). */
static void write_timer(tr__conn_t *c)
{
    c->write_queued = unsent_bytes(c);
    timer_set(c, TIMER_WRITE, cfg_of(c)->idle_timeout_ms);
}

/* Arms the HEADER timer, the request's deadline included. */
static void header_timer(tr__conn_t *c)
{
    uint64_t ms = cfg_of(c)->header_timeout_ms;
    uint64_t left = deadline_left_ms(c);
    if (ms == 0 || left < ms) ms = left == UINT64_MAX ? 0 : left;
    timer_set(c, TIMER_HEADER, ms);
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

/* Ciphertext on its way to a TLS client. The caller's request and callback
 * ride along, so the caller sees its write complete as for plain TCP. */
typedef struct tls_write {
    uv_write_t uv;
    uv_write_t *user;
    uv_write_cb cb;
    char data[];
} tls_write_t;

static void on_tls_written(uv_write_t *uw, int status)
{
    tls_write_t *tw = uw->data;
    if (tw->cb) tw->cb(tw->user, status);
    free(tw);
}

/* Queues all pending ciphertext; cb(user) runs once it is written (with cb,
 * even when there is none). Returns 0 or a libuv error (cb not called). */
static int tls_send(tr__conn_t *c, uv_write_t *user, uv_write_cb cb)
{
    size_t n = tr__tls_pending(c->tls);
    if (n == 0 && !cb) return 0;
    if (n > UINT_MAX) return UV_ENOBUFS;
    tls_write_t *tw = tr_xmalloc(sizeof(*tw) + n);
    n = tr__tls_take(c->tls, tw->data, n);
    tw->uv.data = tw;
    tw->user = user;
    tw->cb = cb;
    uv_buf_t b = uv_buf_init(tw->data, (unsigned)n);
    int rc = uv_write(&tw->uv, (uv_stream_t *)&c->tcp, &b, 1, on_tls_written);
    if (rc != 0) free(tw);
    return rc;
}

/* uv_write on the connection, through TLS when it has it (see TLS). */
static int conn_write(tr__conn_t *c, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                      uv_write_cb cb)
{
    if (!c->tls) return uv_write(req, (uv_stream_t *)&c->tcp, bufs, n, cb);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (n > 1 && total <= TLS_GATHER_BYTES) {
        char *g = c->w->tls_gather;
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            if (bufs[i].len) memcpy(g + off, bufs[i].base, bufs[i].len);
            off += bufs[i].len;
        }
        if (tr__tls_write(c->tls, g, total) != 0) return UV_EPROTO;
    } else {
        for (unsigned i = 0; i < n; i++)
            if (tr__tls_write(c->tls, bufs[i].base, bufs[i].len) != 0) return UV_EPROTO;
    }
    return tls_send(c, req, cb);
}

/* uv_try_write on the connection; TLS always declines (see TLS). */
static int conn_try_write(tr__conn_t *c, const uv_buf_t *b)
{
    if (c->tls) return UV_EAGAIN;
    return uv_try_write((uv_stream_t *)&c->tcp, b, 1);
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
    tr_metrics_in_flight(delta);
}

/* Whether the parser is to be fed now (see REQUEST BODY above). */
static bool conn_wants_input(const tr__conn_t *c)
{
    switch (c->state) {
    case CONN_READING:
        return true;
    case CONN_HANDLING:
        return c->body == RB_STREAM && !c->rd.paused;
    case CONN_WRITING:
    case CONN_DISCARDING:
        return c->body == RB_DISCARD;
    default:
        return false;
    }
}

/* The active request's answer is complete (or the request was released). */
static bool req_answered(const tr__conn_t *c)
{
    return !c->impl.active || c->rs.ended;
}

/* Picks the timer while a request is with its handler or its streamed
 * answer is being written: a write the peer does not take, else a body that
 * does not come. */
static void stream_timer(tr__conn_t *c)
{
    if (c->rs.pending > 0)
        write_timer(c);
    else if (conn_wants_input(c))
        body_timer(c);
    else
        timer_stop(c);
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
    c->impl.ops = &req_ops;
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
    tr__tls_free(c->tls);
    free(c);
}

static void maybe_free(tr__conn_t *c)
{
    if (c->state != CONN_CLOSED || c->closes_pending > 0 || c->impl.active || c->pump_queued ||
        c->pumping)
        return;
    worker_t *w = c->w;
    conn_free(c);
    check_finish(w);
}

/* Tells the handler its client left (tr_req_on_cancel), once. */
static void notify_cancel(tr__conn_t *c)
{
    tr_req_cancel_cb cb = c->cancel_cb;
    c->cancel_due = false;
    c->cancel_cb = NULL;
    if (cb && !req_answered(c)) cb(&c->req, c->cancel_arg);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    tr__conn_t *c = h->data;
    /* Pending writes were called back before this (libuv cancels them
     * first); now a streaming handler learns that its body is over, then
     * that its client left. */
    if (h == (uv_handle_t *)&c->tcp) {
        if (c->rd.end_pending && c->rd.end_status != 0 && !c->rd.buffered_pending && !c->rd.ended &&
            !req_answered(c))
            deliver_end(c, c->rd.end_status);
        if (c->cancel_due) notify_cancel(c);
    }
    c->closes_pending--;
    maybe_free(c);
}

static void release_req(tr__conn_t *c);

static void conn_close(tr__conn_t *c)
{
    if (c->state == CONN_CLOSED) return;
    if (c->impl.active) {
        c->impl.cancelled = true;
        if (c->state == CONN_READING && !c->impl.dispatched) {
            /* Claimed by on_headers, its body still being buffered: the
             * handler never had it. */
            release_req(c);
        } else {
            if (c->body == RB_HELD || c->body == RB_STREAM) {
                c->body = RB_FAILED;
                c->body_error = -ECONNRESET;
                if (c->rd.started && !c->rd.ended) {
                    c->rd.end_pending = true;
                    c->rd.end_status = -ECONNRESET;
                }
            }
            c->cancel_due = !req_answered(c);
        }
    }
    if (c->counted) {
        c->w->nconns--;
        c->counted = false;
        tr_metrics_connections(-1);
    }
    if (c->tls) {
        /* Best effort: uv_try_write declines while writes are queued, so
         * nothing overtakes them, and those are cancelled anyway. */
        tr__tls_close_notify(c->tls);
        size_t n = tr__tls_pending(c->tls);
        char *g = c->w->tls_gather; /* tls_plain may be being parsed */
        if (n > 0 && n <= TLS_GATHER_BYTES) {
            uv_buf_t b = uv_buf_init(g, (unsigned)tr__tls_take(c->tls, g, n));
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
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
    if (c->tls) {
        tr__tls_close_notify(c->tls);
        if (tls_send(c, NULL, NULL) != 0) {
            conn_close(c);
            return;
        }
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

/* ---- the pump (invariant 5) ------------------------------------------- */

static void on_pump(uv_idle_t *h)
{
    worker_t *w = h->data;
    tr__conn_t *list = w->pump_head;
    w->pump_head = w->pump_tail = NULL;
    uv_idle_stop(h);
    while (list) {
        tr__conn_t *c = list;
        list = c->pump_next;
        c->pump_next = NULL;
        c->pump_queued = false;
        c->pumping = true;
        conn_pump(c);
        c->pumping = false;
        maybe_free(c);
    }
}

static void pump_soon(tr__conn_t *c)
{
    worker_t *w = c->w;
    if (c->pump_queued || w->finished) return;
    c->pump_queued = true;
    c->pump_next = NULL;
    if (w->pump_tail) {
        w->pump_tail->pump_next = c;
    } else {
        w->pump_head = c;
        uv_idle_start(&w->pump, on_pump);
    }
    w->pump_tail = c;
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

/* Writes the status line and headers into conn->out (emptied first). */
static void build_head(tr__conn_t *c, const tr_req_t *req, int status, const char *content_type,
                       framing_t framing, uint64_t len)
{
    tr_buf_t *o = &c->out;
    unsigned omit = c->impl.omit;

    tr_buf_reset(o);
    PUT_LIT(o, "HTTP/1.1 ");
    put_uint(o, (uint64_t)status);
    put(o, " ", 1);
    put_str(o, tr_http_reason(status));
    PUT_LIT(o, "\r\n");
    if (!(omit & TR_RES_OMIT_DATE)) {
        PUT_LIT(o, "Date: ");
        put_str(o, http_date(c->w));
        PUT_LIT(o, "\r\n");
    }
    if (content_type) {
        PUT_LIT(o, "Content-Type: ");
        put_str(o, content_type);
        PUT_LIT(o, "\r\n");
    }
    if (framing == FRAME_LENGTH) {
        PUT_LIT(o, "Content-Length: ");
        put_uint(o, len);
        PUT_LIT(o, "\r\n");
    } else if (framing == FRAME_CHUNKED) {
        PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
    }
    if (!(omit & TR_RES_OMIT_REQUEST_ID)) {
        PUT_LIT(o, "X-Request-Id: ");
        put_str(o, req->request_id);
        PUT_LIT(o, "\r\n");
    }
    if (c->close_after)
        PUT_LIT(o, "Connection: close\r\n");
    else if (req->http_minor == 0)
        PUT_LIT(o, "Connection: keep-alive\r\n");
    put(o, c->impl.res_headers.data ? c->impl.res_headers.data : "", c->impl.res_headers.len);
    PUT_LIT(o, "\r\n");
}

static void build_response(tr__conn_t *c, const tr_req_t *req, int status, const char *content_type,
                           const void *body, size_t len)
{
    bool bodiless = status < 200 || status == 204 || status == 304;
    bool head = strcmp(req->method, "HEAD") == 0;
    const char *type = NULL;

    if (!bodiless && len > 0) type = content_type ? content_type : "application/octet-stream";
    build_head(c, req, status, type, bodiless ? FRAME_NONE : FRAME_LENGTH, len);
    if (!bodiless && !head && len > 0) put(&c->out, body, len);
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
    int n = conn_try_write(c, &b);
    if (n >= 0 && (size_t)n == c->out.len) return 1;
    if (n < 0 && n != UV_EAGAIN) return n;
    if (n < 0) n = 0;
    b = uv_buf_init(c->out.data + n, (unsigned)(c->out.len - (size_t)n));
    c->write_req.data = c;
    int rc = conn_write(c, &c->write_req, &b, 1, on_write);
    if (rc != 0) return rc;
    c->state = CONN_WRITING;
    write_timer(c);
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
    c->req_prepared = false;
}

static void report_complete(tr__conn_t *c, int status, size_t sent)
{
    const tr_server_config_t *cfg = cfg_of(c);
    if (cfg->on_complete)
        cfg->on_complete(&c->req, status, sent, (double)(uv_hrtime() - c->impl.start_ns) / 1e9);
}

/* The active request is answered before its body was read completely
 * (server.h, EARLY ANSWERS): from now on the rest is dropped, and the
 * connection survives only when reading it is cheap. */
static void plan_unread_body(tr__conn_t *c)
{
    tr_http_parser_t *p = &c->parser;
    if (tr__http_parser_complete(p)) {
        c->body = RB_NONE;
        return;
    }
    if (p->failed || c->body == RB_FAILED || !p->headers_done) {
        c->close_after = true;
        return;
    }
    bool unanswered_continue = p->expect_continue && !c->continue_sent;
    uint64_t left = p->has_content_length ? p->content_length - p->body_seen : 0;
    if (unanswered_continue || left > DISCARD_MAX_BYTES) c->close_after = true;
    c->body = RB_DISCARD;
    p->body_mode = TR_HTTP_BODY_DISCARD;
}

static void respond_whole(tr_req_t *req, int status, const char *content_type, const void *body,
                          size_t len)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    worker_t *w = c->w;
    size_t sent = 0;
    int wrote = 0;
    bool deliver = c->state == CONN_HANDLING;

    if (!impl->active || c->rs.ended) {
        tr_log_error("tr_respond called twice for one request (status %d)", status);
        return;
    }
    if (impl->res_started) {
        tr_log_error("whole answer (status %d) after tr_respond_start: aborted", status);
        tr_respond_abort(req);
        return;
    }
    if (status < 100 || status > 599 || len > RESPONSE_MAX_BYTES) {
        status = 500;
        body = NULL;
        len = 0;
    }
    if (deliver) {
        if (!tr__http_parser_complete(&c->parser)) plan_unread_body(c);
        c->close_after = c->close_after || !c->parser.keep_alive || w->stopping || c->peer_eof;
        build_response(c, req, status, content_type, body, len);
        sent = c->out.len;
        wrote = write_out(c);
    }
    report_complete(c, status, sent);
    release_req(c);
    if (!deliver)
        maybe_free(c);
    else if (wrote == 1)
        after_response(c);
    else if (wrote < 0)
        conn_close(c);
}

static void next_request(tr__conn_t *c)
{
    c->state = CONN_READING;
    c->body = RB_NONE;
    c->continue_sent = false;
    tr__http_parser_next(&c->parser);
    timer_set(c, TIMER_IDLE, cfg_of(c)->idle_timeout_ms);
    process_inbuf(c);
}

/* The answer has been written completely. */
static void after_response(tr__conn_t *c)
{
    if (c->out.cap > KEEP_BUFFER_BYTES) tr_buf_free(&c->out);
    if (c->close_after || c->peer_eof || c->w->stopping) {
        begin_linger(c);
        return;
    }
    if (c->body == RB_DISCARD) {
        c->state = CONN_DISCARDING;
        body_timer(c);
        process_inbuf(c);
        return;
    }
    next_request(c);
}

/* ---- streamed answers --------------------------------------------------- */

/* The streamed answer ended and every write called back (invariant 1). */
static void stream_finished(tr__conn_t *c)
{
    if (!c->impl.active || !c->rs.ended) return;
    release_req(c);
    if (c->state == CONN_CLOSED)
        maybe_free(c);
    else
        after_response(c);
}

static void on_stream_written(uv_write_t *uw, int status)
{
    out_write_t *ow = uw->data;
    tr__conn_t *c = ow->c;
    res_stream_t *rs = &c->rs;

    rs->pending--;
    rs->copied -= ow->copied;
    if (status < 0 && c->state != CONN_CLOSED) conn_close(c);
    if (ow->cb) {
        rs->in_callback = true;
        ow->cb(&c->req, status < 0 ? -ECONNRESET : 0, ow->arg);
        rs->in_callback = false;
    }
    free(ow);
    if (rs->pending == 0 && rs->ended)
        stream_finished(c);
    else if (c->state == CONN_HANDLING || c->state == CONN_WRITING)
        stream_timer(c);
}

/* Queues one write; the head goes first when it has not been sent. */
static int queue_write(tr__conn_t *c, out_write_t *ow, uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    ow->uv.data = ow;
    int rc = conn_write(c, &ow->uv, bufs, n, on_stream_written);
    if (rc != 0) return rc;
    c->rs.head_pending = false;
    c->rs.copied += ow->copied;
    c->rs.sent += total;
    /* The write timer measures the peer's progress: it restarts when a
     * write completes, not each time one is queued. */
    if (c->rs.pending++ == 0) stream_timer(c);
    return 0;
}

static out_write_t *out_write_new(tr__conn_t *c, size_t copy_len, tr_write_cb cb, void *arg)
{
    out_write_t *ow = tr_xmalloc(sizeof(*ow) + copy_len);
    ow->c = c;
    ow->cb = cb;
    ow->arg = arg;
    ow->copied = copy_len;
    return ow;
}

int tr_respond_start(tr_req_t *req, int status, const char *content_type, int64_t content_length)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    res_stream_t *rs = &c->rs;
    framing_t framing;
    bool bodiless = status == 204 || status == 304;

    if (!impl->active || impl->res_started || rs->ended || status < 200 || status > 599 ||
        content_length < -1 || (content_type && content_type[strcspn(content_type, "\r\n")]))
        return -EINVAL;
    impl->res_started = true;
    rs->status = status;
    rs->length = content_length;
    rs->nobody = bodiless || strcmp(req->method, "HEAD") == 0;
    if (c->state != CONN_HANDLING) return 0; /* the client is gone */

    c->close_after = c->close_after || !c->parser.keep_alive || c->w->stopping || c->peer_eof;
    if (bodiless) {
        framing = FRAME_NONE;
    } else if (content_length >= 0) {
        framing = FRAME_LENGTH;
    } else if (req->http_minor >= 1) {
        framing = FRAME_CHUNKED;
        rs->chunked = !rs->nobody;
    } else {
        framing = FRAME_CLOSE;
        c->close_after = true;
    }
    build_head(c, req, status, bodiless ? NULL : content_type, framing,
               content_length < 0 ? 0 : (uint64_t)content_length);
    rs->head_pending = true;
    return 0;
}

int tr_respond_write(tr_req_t *req, const void *data, size_t len, tr_write_cb cb, void *arg)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    res_stream_t *rs = &c->rs;
    uv_buf_t bufs[4];
    unsigned n = 0;

    if (!impl->active || !impl->res_started || rs->ended || len > WRITE_MAX_BYTES) return -EINVAL;
    bool send_body = !rs->nobody && len > 0;
    if (send_body && rs->length >= 0 && len > (uint64_t)rs->length - rs->written) return -EINVAL;
    if (c->state != CONN_HANDLING) return -ECONNRESET;
    bool copy = send_body && !cb;
    if (copy && len > RESPONSE_MAX_BYTES - rs->copied) return TR_ETOOBIG;

    out_write_t *ow = out_write_new(c, copy ? len : 0, cb, arg);
    if (rs->head_pending) bufs[n++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
    if (send_body) {
        const char *src = data;
        if (copy) {
            memcpy(ow->data, data, len);
            src = ow->data;
        }
        if (rs->chunked) {
            int k = snprintf(ow->frame, sizeof(ow->frame), "%zx\r\n", len);
            bufs[n++] = uv_buf_init(ow->frame, (unsigned)k);
        }
        bufs[n++] = uv_buf_init((char *)src, (unsigned)len);
        if (rs->chunked) bufs[n++] = uv_buf_init((char *)"\r\n", 2);
    }
    /* Nothing to send still goes through libuv, so the callback keeps its
     * place in the order. */
    if (n == 0) bufs[n++] = uv_buf_init(ow->frame, 0);
    if (queue_write(c, ow, bufs, n) != 0) {
        free(ow);
        return -ECONNRESET;
    }
    if (send_body) rs->written += len;
    return 0;
}

void tr_respond_abort(tr_req_t *req)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    res_stream_t *rs = &c->rs;

    if (!impl->active || rs->ended) {
        tr_log_error("tr_respond_abort on a request already answered");
        return;
    }
    rs->ended = true;
    c->close_after = true;
    if (c->state == CONN_HANDLING) {
        if (!tr__http_parser_complete(&c->parser)) plan_unread_body(c);
        c->state = CONN_WRITING;
    }
    report_complete(c, impl->res_started ? rs->status : 499, rs->sent);
    if (rs->pending == 0 && !rs->in_callback) stream_finished(c);
}

int tr_respond_end(tr_req_t *req)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    res_stream_t *rs = &c->rs;

    if (!impl->active || !impl->res_started || rs->ended) return -EINVAL;
    if (rs->length >= 0 && !rs->nobody && rs->written < (uint64_t)rs->length) {
        tr_log_error("streamed answer ended after %llu of %lld announced bytes: aborted",
                     (unsigned long long)rs->written, (long long)rs->length);
        tr_respond_abort(req);
        return 0;
    }
    rs->ended = true;
    if (c->state == CONN_HANDLING) {
        if (!tr__http_parser_complete(&c->parser)) plan_unread_body(c);
        if (rs->chunked || rs->head_pending) {
            static const char last_chunk[] = "0\r\n\r\n";
            uv_buf_t bufs[2];
            unsigned n = 0;
            out_write_t *ow = out_write_new(c, 0, NULL, NULL);
            if (rs->head_pending) bufs[n++] = uv_buf_init(c->out.data, (unsigned)c->out.len);
            if (rs->chunked) bufs[n++] = uv_buf_init((char *)last_chunk, sizeof(last_chunk) - 1);
            if (queue_write(c, ow, bufs, n) != 0) {
                free(ow);
                conn_close(c);
            }
        }
        if (c->state == CONN_HANDLING) c->state = CONN_WRITING;
    }
    report_complete(c, rs->status, rs->sent);
    if (rs->pending == 0 && !rs->in_callback) stream_finished(c);
    return 0;
}

/* ---- connection hand-off ------------------------------------------------ */

int tr_req_upgrade(tr_req_t *req, int status, tr_upgrade_t *out)
{
    tr_req_impl_t *impl = req->impl;
    tr__conn_t *c = impl->conn;
    const char *rest;
    size_t rest_len;
    uv_os_fd_t fd;
    int rc = 0;

    if (!impl->active || impl->res_started || c->rs.ended || c->body != RB_NONE ||
        !tr__http_parser_complete(&c->parser) || c->continue_writing ||
        (c->state != CONN_HANDLING && c->state != CONN_CLOSED)) {
        rc = -EINVAL;
        goto out;
    }
    if (c->tls) {
        rc = -ENOTSUP; /* the TLS session cannot travel with the socket */
        goto out;
    }
    if (c->state != CONN_HANDLING || c->peer_eof) {
        rc = -ECONNRESET;
        goto out;
    }
    if ((rc = uv_fileno((uv_handle_t *)&c->tcp, &fd)) != 0) goto out;
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        rc = -errno;
        goto out;
    }
    /* Inside conn_run() the bytes after the request are still in its input
     * (the stash, if any, is that input); otherwise all are in the stash. */
    if (c->in_process) {
        rest = c->run_rest;
        rest_len = c->run_rest_len;
    } else {
        rest = c->inbuf.data ? c->inbuf.data + c->inpos : NULL;
        rest_len = c->inbuf.len - c->inpos;
    }
    out->fd = dup_fd;
    out->pending = NULL;
    out->pending_len = rest_len;
    if (rest_len > 0) {
        out->pending = tr_xmalloc(rest_len + 1);
        memcpy(out->pending, rest, rest_len);
        out->pending[rest_len] = '\0';
    }
    report_complete(c, status, 0);
    release_req(c);
    c->inpos = c->inbuf.len;
    conn_close(c);
out:
    return rc;
}

/* ---- requests ----------------------------------------------------------- */

/* Fills the connection's tr_req_t from what the parser knows (everything for
 * a complete request, the head at headers time, less for one the server
 * rejects early) and marks it active. */
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
    r->tls = c->tls != NULL;
    r->local_port = c->w->srv->port;
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

    c->req_seq++;
    c->body = RB_NONE;
    c->body_error = 0;
    memset(&c->rd, 0, sizeof(c->rd));
    memset(&c->rs, 0, sizeof(c->rs));
    c->cancel_cb = NULL;
    c->cancel_due = false;
    c->impl.omit = 0;
    c->impl.res_started = false;
    c->impl.active = true;
    c->impl.cancelled = false;
    c->impl.dispatched = false;
    c->impl.start_ns = p->started ? c->start_ns : uv_hrtime();
    c->state = CONN_HANDLING;
    timer_stop(c);
    return r;
}

/* The error code whose status is status (the first one for 409). */
static bool err_for_status(int status, tr_err_t *out)
{
    for (int e = 0; e < TR_ERR__COUNT; e++) {
        if (tr_err_status((tr_err_t)e) == status) {
            *out = (tr_err_t)e;
            return true;
        }
    }
    return false;
}

/* Answers with the error envelope for status, on the request the hook saw
 * when there is one, else on a fresh one. */
static void server_error(tr__conn_t *c, int status)
{
    tr_err_t err = TR_ERR_INTERNAL;
    const char *message;
    tr_req_t *r;

    if (status < 400 || status > 599) status = 500;
    switch (status) {
    case 404:
        message = "no route matches this path";
        break;
    case 405:
        message = "method not allowed for this path";
        break;
    case 408:
        message = "request not received in time";
        break;
    case 413:
        message = "request body too large";
        break;
    case 414:
        message = "request-target too long";
        break;
    case 431:
        message = c->parser.error_reason && strstr(c->parser.error_reason, "fields")
                      ? c->parser.error_reason
                      : "request line and headers too large";
        break;
    case 501:
        message = "transfer coding not implemented";
        break;
    case 503:
        message = c->req_prepared ? tr_http_reason(status) : "too many connections";
        break;
    case 400:
        message = "malformed request";
        break;
    default:
        message = tr_http_reason(status);
        break;
    }
    if (c->req_prepared && c->impl.active) {
        r = &c->req;
        c->state = CONN_HANDLING;
        timer_stop(c);
    } else {
        r = prepare_req(c);
    }
    if (status == 405 && c->match_result == TR_MATCH_METHOD_NOT_ALLOWED)
        tr_res_header(r, "Allow", c->match.allow);
    if (err_for_status(status, &err)) {
        tr_respond_error(r, err, message, NULL);
        return;
    }
    /* A status without a code of its own keeps its number; the envelope
     * says what class of error it is. */
    err = status >= 500 ? TR_ERR_INTERNAL : TR_ERR_INVALID_ARGUMENT;
    tr_respond_json(r, status, tr_error_envelope(err, message, r->request_id, NULL));
}

/* Hands a request made at headers time (on_headers) to dispatch. */
static void dispatch_prepared(tr__conn_t *c)
{
    c->state = CONN_HANDLING;
    timer_stop(c);
    c->impl.dispatched = true;
    in_flight_add(c->w, 1);
    cfg_of(c)->dispatch(&c->req);
}

/* A request whose body is complete: routed, or buffered for the hook. */
static void dispatch_request(tr__conn_t *c)
{
    const tr_server_config_t *cfg = cfg_of(c);
    tr_req_t *r;

    if (c->req_prepared) {
        c->req.body = c->parser.body;
        c->req.body_len = c->parser.body_len;
        dispatch_prepared(c);
        return;
    }
    r = prepare_req(c);
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
    tr__conn_t *c = req->data;
    (void)status; /* a failed write shows up on the read side */
    c->continue_writing = false;
}

static void send_continue(tr__conn_t *c)
{
    uv_buf_t b = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
    c->continue_sent = true;
    int n = conn_try_write(c, &b);
    if (n >= 0 && (size_t)n == b.len) return;
    if (n < 0 && n != UV_EAGAIN) return;
    if (n < 0) n = 0;
    b = uv_buf_init((char *)continue_line + n, (unsigned)(sizeof(continue_line) - 1 - (size_t)n));
    c->continue_req.data = c;
    if (conn_write(c, &c->continue_req, &b, 1, on_continue_written) == 0)
        c->continue_writing = true;
}

/* Headers complete: route now, so the body limit is the route's and a
 * client waiting on "Expect: 100-continue" learns the verdict before it
 * sends the body. What the router does not know goes to the on_headers hook,
 * outside the parser (TR_HTTP_HEAD_DEFER, then on_headers_ready). */
static int on_head(tr_http_parser_t *p, void *ctx, size_t *max_body)
{
    tr__conn_t *c = ctx;
    const tr_server_config_t *cfg = cfg_of(c);

    c->match_result = cfg->router
                          ? tr_router_match(cfg->router, p->method, p->path, p->path_len, &c->match)
                          : TR_MATCH_NOT_FOUND;
    if (c->match_result != TR_MATCH_OK && cfg->on_headers) return TR_HTTP_HEAD_DEFER;
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

/* The headers of a request for the on_headers hook are complete and the
 * parser stopped after them (server.h, HEADER-TIME HOOK). */
static void on_headers_ready(tr__conn_t *c)
{
    const tr_server_config_t *cfg = cfg_of(c);
    tr_http_parser_t *p = &c->parser;
    tr_body_mode_t mode = TR_BODY_BUFFER;
    size_t max_body = cfg->max_body_bytes;

    tr_req_t *r = prepare_req(c);
    uint64_t seq = c->req_seq;
    c->req_prepared = true;
    /* A request without a body is complete now, whatever the hook says. */
    if (!p->chunked && p->content_length == 0)
        (void)tr__http_parser_set_body(p, TR_HTTP_BODY_BUFFER, max_body);
    int status = cfg->on_headers(r, &mode, &max_body);
    if (c->req_seq != seq || req_answered(c)) return; /* the hook answered */
    if (c->impl.res_started) {
        tr_log_error("on_headers started a streamed answer: aborted");
        tr_respond_abort(r);
        return;
    }
    if (status != 0) {
        server_error(c, status);
        return;
    }
    if (!tr__http_parser_complete(p) &&
        tr__http_parser_set_body(
            p, mode == TR_BODY_STREAM ? TR_HTTP_BODY_STREAM : TR_HTTP_BODY_BUFFER, max_body) != 0) {
        c->close_after = true;
        server_error(c, 413);
        return;
    }
    if (tr__http_parser_complete(p)) {
        r->body = p->body;
        r->body_len = p->body_len;
        dispatch_prepared(c);
        return;
    }
    if (mode == TR_BODY_STREAM) {
        c->body = RB_HELD;
        dispatch_prepared(c);
        return;
    }
    /* Buffered: read the body as for a routed request, then dispatch. */
    if (p->expect_continue && p->http_minor >= 1) send_continue(c);
    c->state = CONN_READING;
    body_timer(c);
}

/* ---- streamed request bodies -------------------------------------------- */

static void deliver_end(tr__conn_t *c, int status)
{
    c->rd.ended = true;
    c->rd.end_pending = false;
    c->rd.on_end(&c->req, status, c->rd.arg);
}

/* The parser's STREAM sink; runs inside llhttp_execute (invariant 4 keeps
 * an answer given here from parsing further). */
static int on_body_data(void *ctx, const char *data, size_t len)
{
    tr__conn_t *c = ctx;
    uint64_t seq = c->req_seq;
    if (c->rd.on_data) c->rd.on_data(&c->req, data, len, c->rd.arg);
    /* Stop the feed when the handler paused or answered, so conn_run()
     * looks at the new state before the next byte is parsed. */
    return c->req_seq != seq || c->state != CONN_HANDLING || c->body != RB_STREAM || c->rd.paused;
}

/* The message ended while its body was streamed or discarded. */
static void body_complete(tr__conn_t *c)
{
    body_state_t was = c->body;
    c->body = RB_NONE;
    if (was == RB_STREAM) {
        stream_timer(c);
        if (c->rd.started && !c->rd.ended) deliver_end(c, 0);
    } else if (c->state == CONN_DISCARDING) {
        if (c->w->stopping)
            begin_linger(c);
        else
            next_request(c);
    }
    /* WRITING: after_response() goes on once the answer is out. */
}

/* The body will never be complete; err as for tr_body_end_cb. */
static void body_failed(tr__conn_t *c, int err)
{
    body_state_t was = c->body;
    c->body = RB_FAILED;
    c->body_error = err;
    c->close_after = true;
    if (c->state == CONN_DISCARDING) {
        begin_linger(c);
        return;
    }
    if (c->state != CONN_HANDLING || (was != RB_STREAM && was != RB_HELD)) return;
    stream_timer(c);
    if (c->rd.started && !c->rd.ended) deliver_end(c, err);
}

/* The client half-closed: once all it sent is parsed, a body still
 * incomplete never will be. */
static void check_body_eof(tr__conn_t *c)
{
    if (!c->peer_eof || c->state != CONN_HANDLING) return;
    if (c->body != RB_STREAM && c->body != RB_HELD) return;
    if (c->inpos < c->inbuf.len || c->parser.paused) return;
    body_failed(c, -ECONNRESET);
}

/* Body work queued by tr_req_body_start()/resume(), run from the pump. */
static void conn_pump(tr__conn_t *c)
{
    body_reader_t *rd = &c->rd;
    uint64_t seq = c->req_seq;

    if (!req_answered(c) && rd->started && !rd->ended && rd->buffered_pending && !rd->paused) {
        rd->buffered_pending = false;
        if (rd->on_data) rd->on_data(&c->req, c->req.body, c->req.body_len, rd->arg);
    }
    if (c->req_seq == seq && !req_answered(c) && rd->started && !rd->ended && rd->end_pending &&
        !rd->buffered_pending && (!rd->paused || rd->end_status != 0))
        deliver_end(c, rd->end_status);
    if (c->state == CONN_CLOSED) return;
    process_inbuf(c);
    if (c->state == CONN_HANDLING) stream_timer(c);
}

int tr_req_body_start(tr_req_t *req, tr_body_data_cb on_data, tr_body_end_cb on_end, void *arg)
{
    tr__conn_t *c = req->impl->conn;
    tr_http_parser_t *p = &c->parser;
    body_reader_t *rd = &c->rd;

    if (req_answered(c) || !req->impl->dispatched || rd->started || !on_end ||
        (c->state != CONN_HANDLING && c->state != CONN_CLOSED))
        return -EINVAL;
    rd->started = true;
    rd->on_data = on_data;
    rd->on_end = on_end;
    rd->arg = arg;
    switch (c->body) {
    case RB_NONE:
        rd->buffered_pending = req->body_len > 0;
        rd->end_pending = true;
        rd->end_status = 0;
        break;
    case RB_HELD:
        c->body = RB_STREAM;
        /* A started answer whose head is not out yet may still follow it. */
        if (p->expect_continue && !c->continue_sent && p->http_minor >= 1 && c->rs.sent == 0 &&
            c->state == CONN_HANDLING)
            send_continue(c);
        break;
    case RB_FAILED:
        rd->end_pending = true;
        rd->end_status = c->body_error;
        break;
    default:
        break;
    }
    pump_soon(c);
    return 0;
}

void tr_req_body_pause(tr_req_t *req)
{
    tr__conn_t *c = req->impl->conn;
    if (req_answered(c)) return;
    c->rd.paused = true;
    if (c->state == CONN_HANDLING) stream_timer(c);
}

void tr_req_body_resume(tr_req_t *req)
{
    tr__conn_t *c = req->impl->conn;
    if (req_answered(c) || !c->rd.paused) return;
    c->rd.paused = false;
    pump_soon(c);
}

void tr_req_on_cancel(tr_req_t *req, tr_req_cancel_cb cb, void *arg)
{
    tr__conn_t *c = req->impl->conn;
    if (req_answered(c)) return;
    c->cancel_cb = cb;
    c->cancel_arg = arg;
}

size_t tr__req_held_bytes(const tr_req_t *req)
{
    const tr__conn_t *c = req->impl->conn;
    return c->inbuf.len - c->inpos;
}

int64_t tr_req_body_length(const tr_req_t *req)
{
    const tr_http_parser_t *p = &req->impl->conn->parser;
    if (p->chunked) return -1;
    return p->has_content_length ? (int64_t)p->content_length : 0;
}

/* ---- reading ------------------------------------------------------------ */

/* Parses data while conn_wants_input(); returns the bytes used. */
static size_t conn_run(tr__conn_t *c, const char *data, size_t len)
{
    size_t off = 0;

    c->in_process = true;
    while (conn_wants_input(c) && (off < len || c->parser.paused)) {
        size_t used = 0;
        bool was_started = c->parser.started;
        tr_http_parse_result_t r = tr__http_parser_feed(&c->parser, data + off, len - off, &used);
        off += used;
        c->run_rest = data + off;
        c->run_rest_len = len - off;
        if (!was_started && c->parser.started) {
            c->start_ns = uv_hrtime();
            if (c->timer_mode == TIMER_IDLE) header_timer(c);
        }
        switch (r) {
        case TR_HTTP_NEED_MORE:
            if (c->state != CONN_READING)
                stream_timer(c);
            else if (c->parser.headers_done)
                body_timer(c);
            goto out;
        case TR_HTTP_HEADERS:
            on_headers_ready(c);
            break;
        case TR_HTTP_PAUSED:
            break;
        case TR_HTTP_REQUEST:
            if (c->state == CONN_READING)
                dispatch_request(c);
            else
                body_complete(c);
            break;
        case TR_HTTP_FAILED:
            if (c->state == CONN_READING) {
                c->close_after = true;
                server_error(c, c->parser.error_status);
            } else {
                body_failed(c, c->parser.error_status == 413 ? -EMSGSIZE : -EBADMSG);
            }
            goto out;
        }
    }
out:
    c->in_process = false;
    c->run_rest = NULL;
    c->run_rest_len = 0;
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
    if (conn_wants_input(c) && (c->inpos < c->inbuf.len || c->parser.paused)) {
        const char *data = c->inbuf.data ? c->inbuf.data + c->inpos : "";
        c->inpos += conn_run(c, data, c->inbuf.len - c->inpos);
    }
    if (c->inpos >= c->inbuf.len) {
        if (c->inbuf.cap > KEEP_BUFFER_BYTES) tr_buf_free(&c->inbuf);
        tr_buf_reset(&c->inbuf);
        c->inpos = 0;
    }
    check_body_eof(c);
    if (conn_wants_input(c)) read_start(c);
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
        if (err != UV_EOF) {
            conn_close(c);
        } else {
            check_body_eof(c);
            if (c->state == CONN_HANDLING) notify_cancel(c);
        }
        break;
    case CONN_WRITING:
        if (err != UV_EOF)
            conn_close(c);
        else if (c->body == RB_DISCARD)
            c->close_after = true; /* the rest of the body will not come */
        break;
    default:
        conn_close(c);
        break;
    }
}

/* Bytes of the request stream (plaintext) from the client. */
static void conn_input(tr__conn_t *c, const char *data, size_t len)
{
    if (c->inpos < c->inbuf.len) {
        /* Older bytes are waiting: keep the order. */
        stash(c, data, len);
        process_inbuf(c);
        return;
    }
    size_t used = conn_wants_input(c) ? conn_run(c, data, len) : 0;
    if (used < len && c->state != CONN_LINGERING && c->state != CONN_CLOSED)
        stash(c, data + used, len - used);
}

/* Ciphertext from a TLS client: everything it decrypts to goes to
 * conn_input() now, so nothing waits inside the engine when reading stops. */
static void tls_input(tr__conn_t *c, const char *data, size_t len)
{
    worker_t *w = c->w;
    int rc = tr__tls_feed(c->tls, data, len);
    while (rc == 0) {
        size_t n = 0;
        rc = tr__tls_read(c->tls, w->tls_plain, sizeof(w->tls_plain), &n);
        if (rc != 0 || n == 0) break;
        conn_input(c, w->tls_plain, n);
        if (c->state == CONN_LINGERING || c->state == CONN_CLOSED) return;
    }
    if (rc != -EPROTO && tls_send(c, NULL, NULL) != 0) rc = -EPROTO;
    if (rc == -ESHUTDOWN) {
        /* close_notify: the client will send nothing more, as with EOF. */
        read_stop(c);
        on_peer_gone(c, UV_EOF);
    } else if (rc != 0) {
        conn_close(c); /* sends the alert, if any, best effort */
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
    if (c->state == CONN_LINGERING || c->state == CONN_CLOSED) return; /* dropped */
    if (c->tls)
        tls_input(c, buf->base, (size_t)nread);
    else
        conn_input(c, buf->base, (size_t)nread);
}

static void on_timer(uv_timer_t *t)
{
    tr__conn_t *c = t->data;
    timer_mode_t mode = c->timer_mode;
    c->timer_mode = TIMER_OFF;
    if (mode == TIMER_WRITE && unsent_bytes(c) < c->write_queued) {
        write_timer(c); /* progress since it was armed */
        return;
    }
    if (c->state == CONN_READING &&
        (mode == TIMER_BODY || (mode == TIMER_HEADER && c->parser.started))) {
        c->close_after = true;
        server_error(c, 408);
        return;
    }
    if (c->state == CONN_HANDLING && mode == TIMER_BODY && c->body == RB_STREAM) {
        read_stop(c);
        body_failed(c, -ETIMEDOUT);
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
    tr__http_parser_set_max_header_fields(&c->parser, cfg->max_header_fields);
    c->parser.on_data = on_body_data;
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

    if (w->srv->tls_ctx) {
        c->tls = tr__tls_new(w->srv->tls_ctx);
        c->inbuf.max_len += TLS_STASH_SLACK;
    }

    if (w->nconns >= cfg->max_connections) {
        /* Under a flood even the 503s are capped, then connections are
         * simply closed; so are TLS ones (no handshake to answer on). */
        if (w->nconns_all > 2 * cfg->max_connections + 16 || c->tls) {
            conn_close(c);
            return;
        }
        c->close_after = true;
        server_error(c, 503);
        return;
    }
    c->counted = true;
    w->nconns++;
    tr_metrics_connections(1);
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
    uv_close((uv_handle_t *)&w->pump, NULL);
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
        if (idle)
            conn_close(c);
        else if (c->state == CONN_DISCARDING)
            begin_linger(c); /* its answer is out: the rest of the body is moot */
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

    w->listener.data = w->async.data = w->drain_timer.data = w->pump.data = w;
    if ((rc = uv_async_init(&w->loop, &w->async, on_async)) != 0) goto out;
    uv_timer_init(&w->loop, &w->drain_timer);
    uv_idle_init(&w->loop, &w->pump);
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
    cfg->max_header_fields = 100;
    cfg->request_timeout_ms = 60000;
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
    tr__tls_ctx_free(srv->tls_ctx);
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
    if (!cfg || !cfg->host || (!cfg->router && !cfg->on_headers) ||
        (cfg->on_headers && !cfg->dispatch) || cfg->workers < 1 || cfg->max_header_bytes == 0 ||
        cfg->port < 0 || cfg->port > 65535 || !cfg->tls_cert_file != !cfg->tls_key_file)
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
    if (cfg->tls_cert_file &&
        (rc = tr__tls_ctx_new(cfg->tls_cert_file, cfg->tls_key_file, &srv->tls_ctx)) != 0)
        goto fail;

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

bool tr_server_stopping(const tr_server_t *srv)
{
    return atomic_load(&srv->stop_requested);
}

size_t tr_server_in_flight(const tr_server_t *srv)
{
    size_t n = 0;
    for (int i = 0; i < srv->nworkers; i++)
        n += atomic_load_explicit(&srv->workers[i]->in_flight, memory_order_relaxed);
    return n;
}

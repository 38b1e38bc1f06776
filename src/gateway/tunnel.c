/*
 * tunnel.c - WebSocket pass-through: once the upstream answered 101 and the
 * client connection was taken from the HTTP server (tr_req_upgrade), the
 * gateway only copies bytes between the two sockets; the WebSocket framing
 * is the endpoints' business.
 *
 * Each direction reads from one side and writes to the other. Backpressure:
 * when more than HIGH_WATER bytes wait to be written to a side, reading from
 * its peer stops, and restarts once the queue drained below LOW_WATER, so a
 * slow reader makes TCP push back on the fast writer instead of growing
 * memory. An end of stream from one side is passed on as a shutdown of the
 * other's write half (after what is queued), so a closing handshake
 * finishes; the tunnel closes when both directions ended or on any error.
 *
 * A tunnel belongs to its worker loop. Workers close their tunnels when they
 * stop; the memory goes in the handles' close callbacks.
 */
#include "gateway/state.h"
#include "gateway/tunnel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kit/alloc.h"
#include "kit/log.h"

#define READ_SIZE  (64 * 1024)
#define HIGH_WATER (1024 * 1024)
#define LOW_WATER  (256 * 1024)

typedef struct side side_t;

struct side {
    uv_tcp_t *tcp;
    gw_tunnel_t *t;
    side_t *peer;
    size_t queued; /* bytes queued for writing to this side */
    bool paused;   /* reading from this side is stopped for backpressure */
    bool eof;      /* this side ended its sending */
    bool shut;     /* this side's write half was shut down */
};

struct gw_tunnel {
    gw_worker_t *gw; /* NULL once the worker let go of it */
    gw_state_t *st;
    side_t client, upstream;
    gw_tunnel_t *prev, *next;
    int open_handles;
    bool closing;
};

typedef struct write_req {
    uv_write_t w;
    side_t *to;
    char *data;
    size_t len;
} write_req_t;

static void tunnel_close(gw_tunnel_t *t);

static void on_handle_closed(uv_handle_t *h)
{
    gw_tunnel_t *t = ((side_t *)h->data)->t;
    free(h);
    if (--t->open_handles > 0) return;
    if (t->gw) {
        if (t->prev)
            t->prev->next = t->next;
        else
            t->gw->tunnels = t->next;
        if (t->next) t->next->prev = t->prev;
    }
    tr_gauge_add(t->st->m.websockets, -1);
    free(t);
}

static void tunnel_close(gw_tunnel_t *t)
{
    if (t->closing) return;
    t->closing = true;
    uv_close((uv_handle_t *)t->client.tcp, on_handle_closed);
    uv_close((uv_handle_t *)t->upstream.tcp, on_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = malloc(READ_SIZE);
    buf->len = buf->base ? READ_SIZE : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    side_t *to = wr->to;
    gw_tunnel_t *t = to->t;
    to->queued -= wr->len;
    free(wr->data);
    free(wr);
    if (t->closing) return;
    if (status != 0) {
        tunnel_close(t);
        return;
    }
    side_t *from = to->peer;
    if (from->paused && to->queued <= LOW_WATER) {
        from->paused = false;
        uv_read_start((uv_stream_t *)from->tcp, on_alloc, on_read);
    }
}

/* Queues data (taking ownership) for writing to side to. */
static int send_to(side_t *to, char *data, size_t len)
{
    write_req_t *wr = tr_xcalloc(1, sizeof(*wr));
    wr->to = to;
    wr->data = data;
    wr->len = len;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int rc = uv_write(&wr->w, (uv_stream_t *)to->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(data);
        free(wr);
        return rc;
    }
    to->queued += len;
    return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    side_t *side = req->data;
    free(req);
    if (side->t->closing) return;
    if (status != 0 || (side->eof && side->peer->eof)) tunnel_close(side->t);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    side_t *from = s->data;
    gw_tunnel_t *t = from->t;
    side_t *to = from->peer;
    if (nread > 0 && !t->closing) {
        if (send_to(to, buf->base, (size_t)nread) != 0) {
            tunnel_close(t);
            return;
        }
        if (to->queued > HIGH_WATER) {
            from->paused = true;
            uv_read_stop(s);
        }
        return;
    }
    free(buf->base);
    if (nread == 0 || t->closing) return;
    if (nread != UV_EOF) {
        tunnel_close(t);
        return;
    }
    /* The sender is done: finish the other direction's writes, then shut
     * its write half; close once both directions ended. */
    from->eof = true;
    uv_read_stop(s);
    if (!to->shut) {
        to->shut = true;
        uv_shutdown_t *req = tr_xcalloc(1, sizeof(*req));
        req->data = to;
        if (uv_shutdown(req, (uv_stream_t *)to->tcp, on_shutdown) != 0) {
            free(req);
            tunnel_close(t);
            return;
        }
    }
    if (to->eof) tunnel_close(t);
}

static char *copy(const char *data, size_t len)
{
    char *c = tr_xmalloc(len ? len : 1);
    memcpy(c, data, len);
    return c;
}

int gw_tunnel_start(gw_worker_t *gw, int client_fd, uv_tcp_t *upstream, const char *head,
                    size_t head_len, const char *client_extra, size_t client_extra_len,
                    const char *client_pending, size_t client_pending_len)
{
    gw_tunnel_t *t = tr_xcalloc(1, sizeof(*t));
    uv_tcp_t *client = tr_xcalloc(1, sizeof(*client));
    int rc;

    t->gw = gw;
    t->st = gw->st;
    t->client.tcp = client;
    t->upstream.tcp = upstream;
    t->client.t = t->upstream.t = t;
    t->client.peer = &t->upstream;
    t->upstream.peer = &t->client;
    client->data = &t->client;
    upstream->data = &t->upstream;
    t->open_handles = 2;
    tr_gauge_add(t->st->m.websockets, 1);
    t->next = gw->tunnels;
    if (t->next) t->next->prev = t;
    gw->tunnels = t;

    uv_tcp_init(gw->w->loop, client);
    if ((rc = uv_tcp_open(client, client_fd)) != 0) {
        close(client_fd);
        tunnel_close(t);
        return rc;
    }
    uv_tcp_nodelay(client, 1);
    if ((rc = send_to(&t->client, copy(head, head_len), head_len)) != 0 ||
        (client_extra_len &&
         (rc = send_to(&t->client, copy(client_extra, client_extra_len), client_extra_len)) != 0) ||
        (client_pending_len && (rc = send_to(&t->upstream, copy(client_pending, client_pending_len),
                                             client_pending_len)) != 0) ||
        (rc = uv_read_start((uv_stream_t *)client, on_alloc, on_read)) != 0 ||
        (rc = uv_read_start((uv_stream_t *)upstream, on_alloc, on_read)) != 0) {
        tunnel_close(t);
        return rc;
    }
    return 0;
}

void gw_tunnels_close_all(gw_worker_t *gw)
{
    gw_tunnel_t *t = gw->tunnels;
    gw->tunnels = NULL;
    while (t) {
        gw_tunnel_t *next = t->next;
        t->gw = NULL;
        t->prev = t->next = NULL;
        tunnel_close(t);
        t = next;
    }
}

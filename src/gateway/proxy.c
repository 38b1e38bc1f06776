/*
 * proxy.c - what happens to a request after its head: the asynchronous
 * stages, then the reverse proxy.
 *
 * STAGES, each of which may answer and end the call:
 *   1. table    take the worker's current table for the life of the call;
 *               decide again if it changed since the head (gateway.c)
 *   2. api key  an X-API-Key credential is checked with auth (apikeys.c,
 *               cached), then the route's roles
 *   3. limit    the route's rate-limit policy: RateLimit-* headers on every
 *               answer, 429 with Retry-After over the limit
 *   4. proxy    the kit's HTTP client (pooled keep-alive connections,
 *               balancing, breaker, retries, timeouts) to the upstream
 * At most one asynchronous step is pending at a time; the call remembers
 * it, and a client that goes away cancels it (tr_req_on_cancel), which is
 * how a disconnect cancels the upstream request.
 *
 * STREAMING both ways, with backpressure and bounded memory:
 *   request body  read from the client piece by piece (when on_headers chose
 *                 TR_BODY_STREAM), written to the upstream; reading pauses
 *                 while more than BODY_HIGH_WATER bytes wait for the
 *                 upstream and resumes when it took them (on_written).
 *   response      each piece from the upstream is queued to the client
 *                 (copied by the server); every FENCE_BYTES a zero-length
 *                 write with a callback marks the spot, and while two fences
 *                 are pending the upstream is paused, so at most about
 *                 3 x FENCE_BYTES wait for a slow client.
 * Framing is the upstream's: a Content-Length is kept, anything else goes
 * out chunked.
 *
 * REQUEST FRAMING. A request reaches the upstream only once its framing is
 * known to be sound, and one whose body framing turns out bad midway never
 * reaches it whole:
 *   - everything the head says about framing (Host, Transfer-Encoding,
 *     Content-Length, their conflicts, obs-fold) is checked by the kit's
 *     parser before the on_headers hook runs (http_parser.h, FRAMING): a
 *     request refused there is answered 400/501 by the server and no
 *     upstream request is started;
 *   - the body is forwarded as the parser de-chunks it, never as the client
 *     framed it: the kit client frames it again (chunked, or the
 *     Content-Length), so bad framing cannot pass through to the upstream;
 *   - when the body fails midway (a chunk without its CRLF, a bad size, the
 *     limit, the request deadline, the client leaving), on_req_end cancels
 *     the upstream request and answers 400/413/408. Cancelling a request
 *     that is not finished on the wire closes its upstream connection with
 *     a TCP reset (client.c, req_abort), and the terminating chunk (or the
 *     last Content-Length byte) was never sent, so the upstream sees an
 *     aborted request, never a complete one.
 * Buffering the first chunk before connecting was the other way; it would
 * only move the problem to the second chunk and delay every upload by one
 * round trip, while the reset covers every point of failure alike.
 *
 * HEADERS. Hop-by-hop headers (RFC 9110 §7.6.1: Connection and what it
 * names, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) are
 * not forwarded in either direction, except Upgrade for a WebSocket. The
 * identity headers X-User-Id, X-User-Role, X-Session-Id and the internal
 * token are always removed from what the client sent; the first three are
 * set from the identity verified at the edge. X-Forwarded-For/-Proto/-Host
 * and Via are set, and X-Request-Id and a child traceparent propagated.
 *
 * ERRORS before the response head map to the envelope through
 * tr_client_error_public (503 unavailable for refused connections, an open
 * breaker or no healthy instance -- fast; 504 deadline_exceeded for
 * timeouts; 502 bad_gateway for resets and garbage); after the head the
 * answer can only be cut short (tr_respond_abort).
 */
#include "kit/authn.h"
#include "gateway/call.h"
#include "gateway/headers.h"
#include "gateway/proxy.h"
#include "gateway/state.h"
#include "gateway/static.h"
#include "gateway/table.h"
#include "gateway/tunnel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kit/alloc.h"
#include "kit/log.h"

#define BODY_HIGH_WATER (256 * 1024)
#define FENCE_BYTES     (64 * 1024)
#define MAX_FENCES      2
#define EXTRA_HEADERS   10

static void stage_rate_limit(gw_call_t *call);
static void stage_proxy(gw_call_t *call);

/* ---- ending a call ----------------------------------------------------------- */

/* Every path that answers the call goes through here or end_streamed: the
 * call's memory is the request's and goes with the answer, so what is
 * needed afterwards is copied first. */
static void end_error(gw_call_t *call, tr_err_t err, const char *message)
{
    gw_worker_t *gw = call->gw;
    gw_hold_t *h = call->hold;
    call->ended = true;
    tr_respond_error(call->req, err, message, NULL);
    gw_call_release(gw, h);
}

static void end_streamed(gw_call_t *call, bool complete)
{
    gw_worker_t *gw = call->gw;
    gw_hold_t *h = call->hold;
    call->ended = true;
    if (!complete || tr_respond_end(call->req) != 0) tr_respond_abort(call->req);
    gw_call_release(gw, h);
}

static void on_cancel(tr_req_t *req, void *arg)
{
    gw_call_t *call = arg;
    (void)req;
    if (call->ended) return;
    if (call->api_key_lookup) tr_authn_cancel(call->api_key_lookup);
    if (call->rl_pending) tr_ratelimit_cancel(call->rl_pending);
    if (call->creq) tr_client_cancel(call->creq);
    call->api_key_lookup = NULL;
    call->rl_pending = NULL;
    call->creq = NULL;
    /* The client is gone: whatever is answered is discarded; abort reports
     * 499 (or the started status) to the access log. */
    end_streamed(call, false);
}

/* ---- stage 2: API key --------------------------------------------------------- */

static void api_key_decided(tr_req_t *req, tr_authn_result_t result, const char *why, void *arg)
{
    gw_call_t *call = arg;
    call->api_key_lookup = NULL;
    switch (result) {
    case TR_AUTHN_OK:
        break;
    case TR_AUTHN_NO_CREDENTIALS:
    case TR_AUTHN_INVALID:
        end_error(call, TR_ERR_UNAUTHENTICATED, why ? why : "invalid API key");
        return;
    case TR_AUTHN_UNAVAILABLE:
        end_error(call, TR_ERR_UNAVAILABLE, "the API key cannot be checked right now");
        return;
    }
    if (call->route->roles && !tr_role_allowed(call->route->roles, req->identity.role)) {
        end_error(call, TR_ERR_PERMISSION_DENIED, "your role does not allow this operation");
        return;
    }
    stage_rate_limit(call);
}

static void stage_api_key(gw_call_t *call)
{
    if (!call->need_api_key) {
        stage_rate_limit(call);
        return;
    }
    tr_authn_api_key(call->req, tr_req_header(call->req, "X-API-Key"), api_key_decided, call,
                     &call->api_key_lookup);
}

/* ---- stage 3: rate limit ---------------------------------------------------------- */

static void rate_decided(gw_call_t *call, const tr_ratelimit_decision_t *d)
{
    tr_req_t *req = call->req;
    char v[16];
    call->rl_pending = NULL;
    snprintf(v, sizeof(v), "%u", d->limit);
    tr_res_header(req, "RateLimit-Limit", v);
    snprintf(v, sizeof(v), "%u", d->remaining);
    tr_res_header(req, "RateLimit-Remaining", v);
    snprintf(v, sizeof(v), "%u", d->reset_s);
    tr_res_header(req, "RateLimit-Reset", v);
    if (d->result == TR_RATELIMIT_LIMITED) {
        snprintf(v, sizeof(v), "%u", d->retry_after_s ? d->retry_after_s : 1);
        tr_res_header(req, "Retry-After", v);
        const char *labels[] = {call->route_name};
        tr_counter_inc(call->gw->st->m.rate_limited, labels);
        end_error(call, TR_ERR_RATE_LIMITED, "rate limit exceeded; retry later");
        return;
    }
    stage_proxy(call);
}

static void on_rate(const tr_ratelimit_decision_t *d, void *arg)
{
    rate_decided(arg, d);
}

/* The key the policy counts by. Callers without the identity the policy
 * wants are counted by address, in a namespace of their own. */
static const char *limit_key(gw_call_t *call, tr_ratelimit_key_kind_t kind)
{
    tr_req_t *req = call->req;
    const char *ip = req->client_ip ? req->client_ip : "";
    if (kind == TR_RATELIMIT_KEY_USER && req->authenticated) return req->identity.user_id;
    if (kind == TR_RATELIMIT_KEY_API_KEY) {
        const char *key = tr_req_header(req, "X-API-Key");
        if (key && *key) return key;
    }
    if (kind == TR_RATELIMIT_KEY_IP) return ip;
    size_t n = strlen(ip);
    char *k = tr_req_alloc(req, n + 4);
    memcpy(k, "ip:", 3);
    memcpy(k + 3, ip, n + 1);
    return k;
}

static void stage_rate_limit(gw_call_t *call)
{
    const gw_route_t *r = call->route;
    if (r->limit < 0) {
        stage_proxy(call);
        return;
    }
    const tr_ratelimit_policy_t *p = call->hold->live->policies[r->limit];
    tr_ratelimit_decision_t d;
    int rc = tr_ratelimit_check(call->gw->rl, p, limit_key(call, tr_ratelimit_policy_key_kind(p)),
                                &d, on_rate, call, &call->rl_pending);
    if (rc == TR_RATELIMIT_DECIDED) {
        rate_decided(call, &d);
    } else if (rc != TR_RATELIMIT_PENDING) {
        call->rl_pending = NULL;
        end_error(call, TR_ERR_UNAVAILABLE, "shutting down");
    }
}

/* ---- stage 4: proxy: headers -------------------------------------------------------- */

static const char *join2(tr_req_t *req, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = tr_req_alloc(req, la + lb + 3);
    memcpy(s, a, la);
    memcpy(s + la, ", ", 2);
    memcpy(s + la + 2, b, lb + 1);
    return s;
}

/* Builds the upstream request headers in the request's arena. */
static size_t build_request_headers(gw_call_t *call, tr_header_t **out,
                                    tr_client_propagation_t *prop)
{
    tr_req_t *req = call->req;
    bool websocket = call->kind == GW_CALL_WEBSOCKET;
    const char *connection = tr_req_header(req, "Connection");
    const char *host = NULL, *via = NULL, *xff = NULL;
    tr_header_t *h = tr_req_alloc(req, (req->nheaders + EXTRA_HEADERS) * sizeof(tr_header_t));
    size_t n = 0;

    for (size_t i = 0; i < req->nheaders; i++) {
        const tr_header_t *in = &req->headers[i];
        gw_header_action_t action = gw_request_header_action(in->name, websocket);
        if (action == GW_HDR_KEEP && connection && gw_header_has_token(connection, in->name))
            action = GW_HDR_DROP;
        switch (action) {
        case GW_HDR_KEEP:
        case GW_HDR_UPGRADE:
            h[n++] = *in;
            break;
        case GW_HDR_HOST:
            if (!host) host = in->value;
            break;
        case GW_HDR_VIA:
            if (!via) via = in->value;
            break;
        case GW_HDR_XFF:
            if (!xff) xff = in->value;
            break;
        case GW_HDR_DROP:
            break;
        }
    }
    n += tr_client_propagate(req, prop, h + n);
    const char *ip = req->client_ip ? req->client_ip : "";
    h[n++] = (tr_header_t){"X-Forwarded-For",
                           xff && call->gw->st->trust_forwarded ? join2(req, xff, ip) : ip};
    h[n++] = (tr_header_t){"X-Forwarded-Proto", req->tls ? "https" : "http"};
    if (host) h[n++] = (tr_header_t){"X-Forwarded-Host", host};
    h[n++] = (tr_header_t){"Via", via ? join2(req, via, "1.1 trellis") : "1.1 trellis"};
    if (req->authenticated) {
        h[n++] = (tr_header_t){"X-User-Id", req->identity.user_id};
        h[n++] = (tr_header_t){"X-User-Role", req->identity.role};
        if (req->identity.session_id[0])
            h[n++] = (tr_header_t){"X-Session-Id", req->identity.session_id};
    }
    *out = h;
    return n;
}

/* ---- stage 4: proxy: the response ---------------------------------------------------- */

static void note_upstream(gw_call_t *call, tr_client_req_t *r)
{
    call->tries = tr_client_req_tries(r);
    const char *inst = tr_client_req_instance(r);
    if (inst && *inst) call->instance = tr_req_strdup(call->req, inst);
}

static void on_head(tr_client_req_t *r, int status, const tr_header_t *headers, size_t n,
                    void *data)
{
    gw_call_t *call = data;
    tr_req_t *req = call->req;
    const char *connection = NULL, *ctype = NULL, *via = NULL;
    int64_t length = -1;
    bool cors = gw_cors_enabled(&call->gw->st->cors);

    call->upstream_status = status;
    call->upstream_head_ns = uv_hrtime();
    note_upstream(call, r);
    for (size_t i = 0; i < n; i++) {
        const char *name = headers[i].name;
        if (!connection && strcasecmp(name, "Connection") == 0)
            connection = headers[i].value;
        else if (!ctype && strcasecmp(name, "Content-Type") == 0)
            ctype = headers[i].value;
        else if (!via && strcasecmp(name, "Via") == 0)
            via = headers[i].value;
        else if (length < 0 && strcasecmp(name, "Content-Length") == 0) {
            char *end = NULL;
            long long v = strtoll(headers[i].value, &end, 10);
            if (end != headers[i].value && *end == '\0' && v >= 0) length = v;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = headers[i].name;
        if (gw_response_header_dropped(name, cors)) continue;
        if (connection && gw_header_has_token(connection, name)) continue;
        tr_res_header(req, name, headers[i].value);
    }
    tr_res_header(req, "Via", via ? join2(req, via, "1.1 trellis") : "1.1 trellis");
    if (tr_respond_start(req, status, (status == 204 || status == 304) ? NULL : ctype,
                         (status == 204 || status == 304) ? -1 : length) != 0) {
        tr_client_cancel(r);
        call->creq = NULL;
        end_error(call, TR_ERR_BAD_GATEWAY, "the upstream answered with an unusable status");
        return;
    }
    call->head_started = true;
    /* 204 and 304 have no body whatever length they announce (RFC 9110
     * §8.6). With a stray Content-Length the rest of that connection cannot
     * be trusted: answer now and drop the upstream request, which closes
     * its connection instead of waiting for bytes that must not come. */
    if ((status == 204 || status == 304) && length > 0) {
        tr_client_cancel(r);
        call->creq = NULL;
        end_streamed(call, true);
    }
}

static void on_fence(tr_req_t *req, int status, void *arg)
{
    gw_call_t *call = arg;
    (void)req;
    if (call->ended) return;
    call->fences--;
    if (status == 0 && call->upstream_paused && call->fences < MAX_FENCES && call->creq) {
        call->upstream_paused = false;
        tr_client_resume(call->creq);
    }
}

static void on_body(tr_client_req_t *r, const char *chunk, size_t len, void *data)
{
    gw_call_t *call = data;
    tr_req_t *req = call->req;
    /* A failed write means the client is gone; its cancel callback ends
     * the call. */
    if (tr_respond_write(req, chunk, len, NULL, NULL) != 0) return;
    call->since_fence += len;
    if (call->since_fence < FENCE_BYTES) return;
    call->since_fence = 0;
    if (tr_respond_write(req, "", 0, on_fence, call) != 0) return;
    if (++call->fences >= MAX_FENCES && !call->upstream_paused) {
        call->upstream_paused = true;
        tr_client_pause(r);
    }
}

static void on_done(tr_client_req_t *r, void *data)
{
    gw_call_t *call = data;
    (void)r;
    call->creq = NULL;
    end_streamed(call, true);
}

static void on_error(tr_client_req_t *r, int err, void *data)
{
    gw_call_t *call = data;
    call->creq = NULL;
    note_upstream(call, r);
    if (call->head_started) {
        end_streamed(call, false);
        return;
    }
    char message[160];
    snprintf(message, sizeof(message), "upstream %s: %s", call->upstream_name,
             tr_client_strerror(err));
    end_error(call, tr_client_error_public(err), message);
}

static void on_written(tr_client_req_t *r, void *data)
{
    gw_call_t *call = data;
    (void)r;
    if (call->req_body_paused) {
        call->req_body_paused = false;
        tr_req_body_resume(call->req);
    }
}

static void free_stream(uv_handle_t *h)
{
    free(h);
}

static void on_upgrade(tr_client_req_t *r, const tr_header_t *headers, size_t n, uv_tcp_t *stream,
                       const char *extra, size_t extra_len, void *data)
{
    gw_call_t *call = data;
    gw_worker_t *gw = call->gw;
    gw_hold_t *h = call->hold;
    tr_upgrade_t up;
    tr_buf_t head;

    call->creq = NULL;
    call->upstream_status = 101;
    call->upstream_head_ns = uv_hrtime();
    note_upstream(call, r);
    tr_buf_init(&head, 0);
    tr_buf_append_str(&head, "HTTP/1.1 101 Switching Protocols\r\n");
    for (size_t i = 0; i < n; i++)
        tr_buf_printf(&head, "%s: %s\r\n", headers[i].name, headers[i].value);
    tr_buf_append_str(&head, "\r\n");

    call->ended = true;
    int rc = tr_req_upgrade(call->req, 101, &up);
    if (rc != 0) {
        /* The client went away (or cannot be taken over): the request is
         * still ours to answer. */
        call->ended = false;
        tr_buf_free(&head);
        uv_close((uv_handle_t *)stream, free_stream);
        end_error(call, TR_ERR_BAD_GATEWAY, "the connection could not be upgraded");
        return;
    }
    /* The request is released: only copies are used from here on. */
    gw_tunnel_start(gw, up.fd, stream, head.data, head.len, extra, extra_len, up.pending,
                    up.pending_len);
    free(up.pending);
    tr_buf_free(&head);
    gw_call_release(gw, h);
}

static const tr_client_callbacks_t proxy_callbacks = {
    .on_head = on_head,
    .on_body = on_body,
    .on_done = on_done,
    .on_error = on_error,
    .on_written = on_written,
    .on_upgrade = on_upgrade,
};

/* ---- stage 4: proxy: the request body ---------------------------------------------- */

static void on_req_data(tr_req_t *req, const char *data, size_t len, void *arg)
{
    gw_call_t *call = arg;
    if (!call->creq) return;
    if (tr_client_write(call->creq, data, len) != 0) return;
    if (!call->req_body_paused && tr_client_write_pending(call->creq) > BODY_HIGH_WATER) {
        call->req_body_paused = true;
        tr_req_body_pause(req);
    }
}

static void on_req_end(tr_req_t *req, int status, void *arg)
{
    gw_call_t *call = arg;
    if (status == 0) {
        if (call->creq) tr_client_end(call->creq);
        return;
    }
    if (call->creq) tr_client_cancel(call->creq);
    call->creq = NULL;
    gw_worker_t *gw = call->gw;
    gw_hold_t *h = call->hold;
    call->ended = true;
    tr_respond_body_error(req, status);
    gw_call_release(gw, h);
}

static void stage_proxy(gw_call_t *call)
{
    tr_req_t *req = call->req;
    const gw_route_t *route = call->route;
    tr_client_propagation_t *prop = tr_req_alloc(req, sizeof(*prop));
    size_t path_len = strlen(req->path), qlen = strlen(req->query);
    size_t max = gw_route_target_max(route, path_len, qlen);
    char *target = tr_req_alloc(req, max);
    tr_client_opts_t o;

    /* The kit cannot hand a TLS connection over as a raw byte pipe
     * (tr_req_upgrade is -ENOTSUP there), so refuse before the upstream
     * is asked to switch protocols. */
    if (call->kind == GW_CALL_WEBSOCKET && req->tls) {
        end_error(call, TR_ERR_UNAVAILABLE,
                  "WebSocket over TLS is not supported here; use the plain listener");
        return;
    }
    if (gw_route_target(route, &call->match, req->path, path_len, req->query, target, max) < 0) {
        end_error(call, TR_ERR_INVALID_ARGUMENT, "invalid escape in a path parameter");
        return;
    }
    tr_client_opts_init(&o);
    o.method = req->method;
    o.target = target;
    o.nheaders = build_request_headers(call, (tr_header_t **)&o.headers, prop);
    o.connect_timeout_ms = call->up->connect_timeout_ms;
    o.try_timeout_ms = route->try_timeout_ms;
    o.total_timeout_ms = route->timeout_ms;
    o.retry = route->retry;
    o.cb = &proxy_callbacks;
    o.data = call;
    if (call->kind == GW_CALL_WEBSOCKET) {
        o.upgrade = true;
    } else if (call->streamed_body) {
        o.stream_body = true;
        o.stream_length = tr_req_body_length(req);
    } else {
        o.body = req->body;
        o.body_len = req->body_len;
    }
    call->upstream_start_ns = uv_hrtime();
    int rc = tr_client_request(call->gw->client, call->up->up, &o, &call->creq);
    if (rc != 0) {
        call->creq = NULL;
        char message[160];
        snprintf(message, sizeof(message), "upstream %s: %s", call->upstream_name,
                 tr_client_strerror(rc));
        /* The options are the gateway's own; what the client library can
         * refuse is a header the client sent (e.g. a name with a space). */
        if (rc == -EINVAL)
            end_error(call, TR_ERR_INVALID_ARGUMENT, "malformed request header");
        else
            end_error(call, tr_client_error_public(rc), message);
        return;
    }
    if (o.stream_body && tr_req_body_start(req, on_req_data, on_req_end, call) != 0) {
        tr_client_cancel(call->creq);
        call->creq = NULL;
        end_error(call, TR_ERR_INTERNAL, "request body unavailable");
    }
}

/* ---- dispatch -------------------------------------------------------------------------- */

void gw_dispatch(tr_req_t *req)
{
    gw_call_t *call = req->handler_data;
    if (call->kind == GW_CALL_STATIC) {
        gw_static_serve(req);
        return;
    }
    gw_worker_t *gw = call->gw;
    gw_hold_t *h = gw_hold_current(gw);
    gw_hold_acquire(h);
    call->hold = h;
    if (h->live->generation != call->generation) {
        /* The table changed while the body was read: decide again. */
        if (gw_decide(call, h->live) != 0) {
            gw_call_release(gw, h);
            return;
        }
        if (call->kind == GW_CALL_STATIC) {
            gw_call_release(gw, h);
            call->hold = NULL;
            gw_static_serve(req);
            return;
        }
    }
    tr_req_on_cancel(req, on_cancel, call);
    if (tr_req_cancelled(req)) {
        on_cancel(req, call);
        return;
    }
    stage_api_key(call);
}

/*
 * auth_edge.c - the internal endpoints the gateway (the edge) calls. They
 * are under /internal/, so the kit admits only callers holding the internal
 * service token (kit/service.h, INTERNAL ROUTES), and the gateway never
 * routes them from outside.
 *
 * REVOCATION FEED. GET /internal/revocations?since=<unix ms>&known=<n>&
 * wait=<ms> lists the sessions revoked at or after `since`, oldest first, at
 * most AUTH_REVOCATIONS_PAGE of them ("more": true when the page is full;
 * ask again from the last revoked_at). It is a long poll: while there are
 * no more than `known` such revocations (the caller has them already), the
 * answer is held for up to `wait` ms and re-checked every
 * AUTH_REVOCATIONS_RECHECK_MS, so every service (kit/revfeed.c) learns of a
 * revocation within a fraction of a second at the cost of one request per
 * service every 25 s while nothing happens. A held poll is answered at once
 * when the server begins to stop. Only revocations younger than the access-token
 * lifetime matter -- an older revocation can have no live access token left
 * -- so `since` is clamped to now - access TTL, which also bounds the first
 * load. The answer carries auth's clock ("now") and the access TTL, so the
 * gateway needs neither synchronised clocks nor a copy of auth's settings.
 * revoked_at is stamped before the revoking transaction commits, so a poller
 * must overlap its windows by a little (the kit re-asks from now - 2 s, with
 * `known` counting what it already has of that overlap); duplicates are
 * harmless.
 *
 * API KEY CHECK. POST /internal/api-keys/verify {"key": "trk_..."} answers
 * 200 {"valid": true, "user_id", "role", "key_id"} or 200 {"valid": false,
 * "reason"} -- a well-formed question always gets 200, so the gateway can
 * cache negative answers as easily as positive ones. It applies the same
 * rules as the authenticator in auth.c (unrevoked key, unbanned owner, the
 * owner's current role) and records use at most once a minute.
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/store_job.h"
#include "kit/validate.h"

#define AUTH_REVOCATIONS_PAGE 5000
/* How often a held poll looks for revocations written by other processes
 * (another auth replica, `trellis admin`): one indexed range query per
 * waiting service, logged nowhere. */
#define AUTH_REVOCATIONS_RECHECK_MS  200
#define AUTH_REVOCATIONS_MAX_WAIT_MS 60000
#define API_KEY_TOUCH_MS             60000

/* One long poll of the revocation feed. The context is malloc'ed, not from
 * the request's arena, because its timer handle must outlive the request
 * until its close callback has run. */
typedef struct feed_poll {
    tr_req_t *req; /* NULL once answered */
    uv_timer_t timer;
    int64_t since;     /* clamped to the access-token horizon */
    int64_t known;     /* revocations at or after since the caller has */
    uint64_t deadline; /* loop ms after which the poll answers whatever it has */
    int64_t access_ttl_s;
    /* the job's result (rewritten by each run) */
    json_t *list;
    int64_t count;
    int64_t now;
} feed_poll_t;

static void poll_closed(uv_handle_t *h)
{
    feed_poll_t *p = h->data;
    json_decref(p->list);
    free(p);
}

static int list_revocations(tr_store_t *db, void *arg)
{
    feed_poll_t *p = arg;
    tr_rows_t *rows = NULL;
    json_decref(p->list);
    p->list = json_array();
    p->count = 0;
    p->now = tr_now_ms();
    int rc = tr_store_query(db, &rows,
                            "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1 "
                            "ORDER BY revoked_at LIMIT $2",
                            "ii", p->since, (int64_t)AUTH_REVOCATIONS_PAGE);
    if (rc != 0) return rc;
    while ((rc = tr_rows_next(rows)) == 1) {
        json_array_append_new(p->list, json_pack("{s:s, s:I}", "session_id", tr_rows_text(rows, 0),
                                                 "revoked_at", (json_int_t)tr_rows_int(rows, 1)));
        p->count++;
    }
    tr_rows_free(rows);
    return rc < 0 ? rc : 0;
}

static void poll_answer(feed_poll_t *p)
{
    tr_req_t *req = p->req;
    json_t *body = json_object();
    json_object_set_new(body, "now", json_integer(p->now));
    json_object_set_new(body, "since", json_integer(p->since));
    json_object_set_new(body, "access_ttl_s", json_integer(p->access_ttl_s));
    json_object_set_new(body, "revocations", p->list);
    json_object_set_new(body, "more", json_boolean(p->count == AUTH_REVOCATIONS_PAGE));
    p->list = NULL;
    p->req = NULL;
    tr_req_on_cancel(req, NULL, NULL);
    tr_respond_json(req, 200, body);
    uv_close((uv_handle_t *)&p->timer, poll_closed);
}

static void poll_listed(tr_req_t *req, void *arg, int rc);

static void poll_again(uv_timer_t *t)
{
    feed_poll_t *p = t->data;
    tr_store_run(p->req, 0, list_revocations, poll_listed, p);
}

static void poll_listed(tr_req_t *req, void *arg, int rc)
{
    feed_poll_t *p = arg;
    if (rc != 0) {
        p->req = NULL;
        tr_req_on_cancel(req, NULL, NULL);
        tr_store_respond_error(req, rc, "list revocations");
        uv_close((uv_handle_t *)&p->timer, poll_closed);
        return;
    }
    uint64_t now = uv_now(req->worker->loop);
    if (p->count > p->known || p->count == AUTH_REVOCATIONS_PAGE || now >= p->deadline ||
        tr_server_stopping(req->worker->server) || tr_req_cancelled(req)) {
        poll_answer(p);
        return;
    }
    uint64_t left = p->deadline - now;
    uv_timer_start(&p->timer, poll_again,
                   left < AUTH_REVOCATIONS_RECHECK_MS ? left : AUTH_REVOCATIONS_RECHECK_MS, 0);
}

static void poll_cancelled(tr_req_t *req, void *arg)
{
    (void)req;
    feed_poll_t *p = arg;
    /* Answer at the next re-check (the answer is discarded); a run of the
     * job may be under way and must find the poll intact. */
    if (uv_is_active((uv_handle_t *)&p->timer)) {
        uv_timer_stop(&p->timer);
        poll_answer(p);
    }
}

/* Parses a non-negative decimal query parameter; absent gives dflt. */
static int query_int(tr_req_t *req, const char *name, int64_t dflt, int64_t *out)
{
    const char *text = tr_req_query(req, name);
    char *end = NULL;
    if (!text) {
        *out = dflt;
        return 0;
    }
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!*text || errno != 0 || *end != '\0' || v < 0) return -EINVAL;
    *out = (int64_t)v;
    return 0;
}

void auth_handle_internal_revocations(tr_req_t *req)
{
    const auth_state_t *st = auth_state_of(req);
    int64_t since = 0, known = 0, wait = 0;
    tr_fields_t f;

    tr_fields_init(&f);
    if (!tr_req_query(req, "since") || query_int(req, "since", 0, &since) != 0)
        tr_fields_add(&f, "since", "must be a unix time in milliseconds (>= 0)");
    if (query_int(req, "known", 0, &known) != 0)
        tr_fields_add(&f, "known", "must be a count (>= 0)");
    if (query_int(req, "wait", 0, &wait) != 0 || wait > AUTH_REVOCATIONS_MAX_WAIT_MS)
        tr_fields_add(&f, "wait", "must be milliseconds from 0 to 60000");
    if (tr_fields_respond(&f, req)) return;

    int64_t horizon = tr_now_ms() - st->cfg.access_ttl_s * 1000;
    feed_poll_t *p = tr_xcalloc(1, sizeof(*p));
    p->req = req;
    p->since = since < horizon ? horizon : since;
    /* Entries before the horizon are not in the answer: the caller's count
     * of what it has no longer applies. */
    p->known = since < horizon ? 0 : known;
    p->deadline = uv_now(req->worker->loop) + (uint64_t)wait;
    p->access_ttl_s = st->cfg.access_ttl_s;
    uv_timer_init(req->worker->loop, &p->timer);
    p->timer.data = p;
    tr_req_on_cancel(req, poll_cancelled, p);
    tr_store_run(req, 0, list_revocations, poll_listed, p);
}

static void respond_invalid(tr_req_t *req, const char *reason)
{
    tr_respond_json(req, 200, json_pack("{s:b, s:s}", "valid", 0, "reason", reason));
}

typedef struct key_verify_ctx {
    char hash[TR_SHA256_HEX];
    /* written by the job */
    bool found;
    auth_user_t user;
    char key_id[TR_UUID_LEN + 1];
} key_verify_ctx_t;

static int key_verify_job(tr_store_t *db, void *arg)
{
    key_verify_ctx_t *ctx = arg;
    tr_rows_t *rows = NULL;
    int64_t last_used = 0, now = tr_now_ms();

    ctx->found = false;
    int rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS_U ", k.id, k.last_used_at FROM api_keys k "
                            "JOIN users u ON u.id = k.user_id "
                            "WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
                            "t", ctx->hash);
    if (rc != 0) return rc;
    if ((rc = tr_rows_next(rows)) == 1) {
        ctx->found = true;
        auth_user_from_row(rows, &ctx->user);
        snprintf(ctx->key_id, sizeof(ctx->key_id), "%s", tr_rows_text(rows, AUTH_USER_NCOLUMNS));
        last_used = tr_rows_int(rows, AUTH_USER_NCOLUMNS + 1);
        rc = 0;
    }
    tr_rows_free(rows);
    if (rc != 0 || !ctx->found || ctx->user.banned) return rc;
    /* Best effort: a failed touch must not refuse a valid key. */
    if (now - last_used >= API_KEY_TOUCH_MS &&
        tr_store_exec(db, NULL, "UPDATE api_keys SET last_used_at = $1 WHERE id = $2", "it", now,
                      ctx->key_id) != 0)
        tr_log_warn("verify API key: could not record its use");
    return 0;
}

static void key_verified(tr_req_t *req, void *arg, int rc)
{
    key_verify_ctx_t *ctx = arg;
    if (rc != 0)
        tr_store_respond_error(req, rc, "verify API key");
    else if (!ctx->found)
        respond_invalid(req, "invalid API key");
    else if (ctx->user.banned)
        respond_invalid(req, "account banned");
    else
        tr_respond_json(req, 200,
                        json_pack("{s:b, s:s, s:s, s:s}", "valid", 1, "user_id", ctx->user.id,
                                  "role", ctx->user.role, "key_id", ctx->key_id));
}

void auth_handle_internal_api_key_verify(tr_req_t *req)
{
    key_verify_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    tr_fields_t f;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *key = body ? tr_field_string(&f, body, "key", true, 1, 256) : NULL;
    if (tr_fields_respond(&f, req)) goto out;
    if (!auth_api_key_well_formed(key)) {
        respond_invalid(req, "invalid API key");
        goto out;
    }
    tr_sha256_hex(key, strlen(key), ctx->hash);
    tr_store_run(req, 0, key_verify_job, key_verified, ctx);
out:
    json_decref(body);
}

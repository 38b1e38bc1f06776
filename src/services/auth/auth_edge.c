/*
 * auth_edge.c - the internal endpoints the gateway (the edge) calls. They
 * are under /internal/, so the kit admits only callers holding the internal
 * service token (kit/service.h, INTERNAL ROUTES), and the gateway never
 * routes them from outside.
 *
 * REVOCATION FEED. GET /internal/revocations?since=<unix ms> lists the
 * sessions revoked at or after `since`, oldest first, at most
 * AUTH_REVOCATIONS_PAGE of them ("more": true when the page is full; ask
 * again from the last revoked_at). The gateway polls it a few times a second
 * and rejects access tokens of those sessions at the edge, so it never has
 * to call auth per request. Only revocations younger than the access-token
 * lifetime matter -- an older revocation can have no live access token left
 * -- so `since` is clamped to now - access TTL, which also bounds the first
 * load. The answer carries auth's clock ("now") and the access TTL, so the
 * gateway needs neither synchronised clocks nor a copy of auth's settings.
 * revoked_at is stamped before the revoking transaction commits, so a poller
 * must overlap its windows by a little (the gateway re-asks from now - 2 s);
 * duplicates are harmless.
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

#include "kit/log.h"
#include "kit/store_job.h"
#include "kit/validate.h"

#define AUTH_REVOCATIONS_PAGE 5000
#define API_KEY_TOUCH_MS      60000

void auth_handle_internal_revocations(tr_req_t *req)
{
    const auth_state_t *st = auth_state_of(req);
    const char *text = tr_req_query(req, "since");
    tr_rows_t *rows = NULL;
    json_t *list = NULL;
    int64_t since = 0, last = 0, count = 0;
    char *end = NULL;
    int rc;

    if (text && *text) {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno != 0 || *end != '\0' || v < 0) text = NULL;
        since = (int64_t)v;
    }
    if (!text || !*text) {
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT,
                         "since must be a unix time in milliseconds (>= 0)", NULL);
        return;
    }
    int64_t now = tr_now_ms();
    int64_t horizon = now - st->cfg.access_ttl_s * 1000;
    if (since < horizon) since = horizon;

    rc = tr_store_query(tr_req_store(req), &rows,
                        "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1 "
                        "ORDER BY revoked_at LIMIT $2",
                        "ii", since, (int64_t)AUTH_REVOCATIONS_PAGE);
    if (rc != 0) goto fail;
    list = json_array();
    while ((rc = tr_rows_next(rows)) == 1) {
        last = tr_rows_int(rows, 1);
        json_array_append_new(list, json_pack("{s:s, s:I}", "session_id", tr_rows_text(rows, 0),
                                              "revoked_at", (json_int_t)last));
        count++;
    }
    tr_rows_free(rows);
    if (rc < 0) goto fail;
    json_t *body = json_object();
    json_object_set_new(body, "now", json_integer(now));
    json_object_set_new(body, "since", json_integer(since));
    json_object_set_new(body, "access_ttl_s", json_integer(st->cfg.access_ttl_s));
    json_object_set_new(body, "revocations", list);
    json_object_set_new(body, "more", json_boolean(count == AUTH_REVOCATIONS_PAGE));
    tr_respond_json(req, 200, body);
    return;
fail:
    json_decref(list);
    tr_store_respond_error(req, rc, "list revocations");
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

/*
 * auth_apikeys.c - API keys for bots and integrations.
 *
 * A key is shown once, in the answer that creates it; the database keeps
 * its SHA-256 (the key is 256 random bits, so a fast hash cannot be
 * searched) and its first characters, so a user can tell keys apart. A key
 * acts as its owner with the owner's current role (see auth.c). Keys are
 * revoked, never deleted, so a revoked key's id stays meaningful.
 */
#include "services/auth/auth_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "kit/log.h"
#include "kit/store_job.h"
#include "kit/validate.h"

/* Live keys one user may hold, which bounds the table per user. */
#define AUTH_MAX_API_KEYS 100

static json_t *key_json(const char *id, const char *name, const char *prefix, int64_t created_at,
                        int64_t last_used_at)
{
    json_t *k = json_object();
    json_object_set_new(k, "id", json_string(id));
    json_object_set_new(k, "name", json_string(name));
    json_object_set_new(k, "prefix", json_string(prefix));
    json_object_set_new(k, "created_at", tr_time_json(created_at));
    json_object_set_new(k, "last_used_at", tr_time_json(last_used_at));
    return k;
}

typedef struct key_create_ctx {
    const auth_state_t *st;
    char user_id[TR_UUID_LEN + 1];
    char *name; /* request arena */
    int64_t now;
    /* written by the job */
    bool too_many;
    char key[AUTH_API_KEY_LEN + 1];
    char id[TR_UUID_LEN + 1];
    char prefix[AUTH_API_KEY_PREFIX_LEN + 1];
} key_create_ctx_t;

static int key_create_job(tr_store_t *db, void *arg)
{
    key_create_ctx_t *ctx = arg;
    char hash[TR_SHA256_HEX];
    tr_rows_t *rows = NULL;
    int64_t live = 0;

    char key[TR_UUID_LEN + 16];
    ctx->too_many = false;
    /* The count of live keys and the insert are one step per user. */
    snprintf(key, sizeof(key), "api-keys:%s", ctx->user_id);
    int rc = tr_store_lock(db, key);
    if (rc != 0) return rc;
    rc = tr_store_query(db, &rows,
                        "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL",
                        "t", ctx->user_id);
    if ((rc = tr_rows_first_int(rc, rows, &live)) != 0) return rc;
    if (live >= AUTH_MAX_API_KEYS) {
        ctx->too_many = true;
        return 0;
    }
    auth_api_key_generate(ctx->key);
    tr_sha256_hex(ctx->key, AUTH_API_KEY_LEN, hash);
    memcpy(ctx->prefix, ctx->key, AUTH_API_KEY_PREFIX_LEN);
    ctx->prefix[AUTH_API_KEY_PREFIX_LEN] = '\0';
    tr_uuid7(ctx->id);
    return tr_store_exec(db, NULL,
                         "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6)",
                         "ttttti", ctx->id, ctx->user_id, ctx->name, ctx->prefix, hash, ctx->now);
}

static void key_created(tr_req_t *req, void *arg, int rc)
{
    key_create_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_store_respond_error(req, rc, "create API key");
    } else if (ctx->too_many) {
        tr_respond_error(req, TR_ERR_CONFLICT, "too many API keys; revoke one first", NULL);
    } else {
        json_t *k = key_json(ctx->id, ctx->name, ctx->prefix, ctx->now, 0);
        json_object_set_new(k, "key", json_string(ctx->key));
        tr_counter_inc(ctx->st->m.api_keys_created, NULL);
        tr_res_header(req, "Cache-Control", "no-store");
        sodium_memzero(ctx->key, sizeof(ctx->key));
        tr_respond_json(req, 201, k);
        return;
    }
    sodium_memzero(ctx->key, sizeof(ctx->key));
}

void auth_handle_api_key_create(tr_req_t *req)
{
    key_create_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    tr_fields_t f;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *name = body ? tr_field_string(&f, body, "name", true, 1, AUTH_KEY_NAME_MAX) : NULL;
    if (tr_fields_respond(&f, req)) goto out;
    ctx->st = auth_state_of(req);
    auth_copy_id(ctx->user_id, req->identity.user_id);
    ctx->name = tr_req_strdup(req, name);
    ctx->now = tr_now_ms();
    tr_store_run(req, TR_STORE_TX, key_create_job, key_created, ctx);
out:
    json_decref(body);
}

typedef struct keys_ctx {
    char user_id[TR_UUID_LEN + 1];
    tr_page_t page;
    tr_page_result_t result;
} keys_ctx_t;

static json_t *key_row_json(tr_rows_t *rows, void *arg)
{
    (void)arg;
    return key_json(tr_rows_text(rows, 0), tr_rows_text(rows, 1), tr_rows_text(rows, 2),
                    tr_rows_int(rows, 3), tr_rows_int(rows, 4));
}

static int keys_job(tr_store_t *db, void *arg)
{
    keys_ctx_t *ctx = arg;
    tr_rows_t *rows = NULL;
    int64_t fetch = (int64_t)ctx->page.limit + 1;
    int rc;
    if (ctx->page.after[0])
        rc = tr_store_query(db, &rows,
                            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys "
                            "WHERE user_id = $1 AND revoked_at IS NULL AND id < $2 "
                            "ORDER BY id DESC LIMIT $3",
                            "tti", ctx->user_id, ctx->page.after, fetch);
    else
        rc = tr_store_query(db, &rows,
                            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys "
                            "WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT $2",
                            "ti", ctx->user_id, fetch);
    return tr_page_collect(rc, rows, &ctx->page, key_row_json, NULL, &ctx->result);
}

static void keys_done(tr_req_t *req, void *arg, int rc)
{
    keys_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_page_result_clear(&ctx->result);
        tr_store_respond_error(req, rc, "list API keys");
        return;
    }
    tr_respond_page(req, &ctx->result);
}

void auth_handle_api_keys_list(tr_req_t *req)
{
    keys_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    if (!tr_page_from_query(req, &ctx->page, auth_page_key_ok)) return;
    auth_copy_id(ctx->user_id, req->identity.user_id);
    tr_store_run(req, 0, keys_job, keys_done, ctx);
}

typedef struct key_revoke_ctx {
    char user_id[TR_UUID_LEN + 1];
    char *id; /* request arena */
    int64_t changes;
} key_revoke_ctx_t;

static int key_revoke_job(tr_store_t *db, void *arg)
{
    key_revoke_ctx_t *ctx = arg;
    ctx->changes = 0;
    return tr_store_exec(db, &ctx->changes,
                         "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 "
                         "AND revoked_at IS NULL",
                         "itt", tr_now_ms(), ctx->id, ctx->user_id);
}

static void key_revoked(tr_req_t *req, void *arg, int rc)
{
    key_revoke_ctx_t *ctx = arg;
    if (rc != 0)
        tr_store_respond_error(req, rc, "revoke API key");
    else if (ctx->changes != 1)
        tr_respond_error(req, TR_ERR_NOT_FOUND, "API key not found", NULL);
    else
        tr_respond_json(req, 204, NULL);
}

void auth_handle_api_key_revoke(tr_req_t *req)
{
    key_revoke_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    auth_copy_id(ctx->user_id, req->identity.user_id);
    ctx->id = tr_req_strdup(req, tr_req_param(req, "id"));
    tr_store_run(req, 0, key_revoke_job, key_revoked, ctx);
}

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
    json_object_set_new(k, "created_at", auth_time_json(created_at));
    json_object_set_new(k, "last_used_at", auth_time_json(last_used_at));
    return k;
}

void auth_handle_api_key_create(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    char key[AUTH_API_KEY_LEN + 1], hash[TR_SHA256_HEX], prefix[AUTH_API_KEY_PREFIX_LEN + 1];
    char id[TR_UUID_LEN + 1];
    tr_rows_t *rows = NULL;
    int64_t live = 0;
    tr_fields_t f;
    int rc;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *name = body ? tr_field_string(&f, body, "name", true, 1, AUTH_KEY_NAME_MAX) : NULL;
    if (tr_fields_respond(&f, req)) goto out;

    int64_t now = tr_now_ms();
    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = tr_store_query(db, &rows,
                        "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL",
                        "t", req->identity.user_id);
    rc = auth_rows_first_int(rc, rows, &live);
    if (rc == 0 && live >= AUTH_MAX_API_KEYS) {
        tr_store_rollback(db);
        tr_respond_error(req, TR_ERR_CONFLICT, "too many API keys; revoke one first", NULL);
        goto out;
    }
    auth_api_key_generate(key);
    tr_sha256_hex(key, AUTH_API_KEY_LEN, hash);
    memcpy(prefix, key, AUTH_API_KEY_PREFIX_LEN);
    prefix[AUTH_API_KEY_PREFIX_LEN] = '\0';
    tr_uuid7(id);
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) "
                           "VALUES ($1, $2, $3, $4, $5, $6)",
                           "ttttti", id, req->identity.user_id, name, prefix, hash, now);
    if ((rc = auth_tx_finish(db, rc)) != 0) goto fail;
    json_t *k = key_json(id, name, prefix, now, 0);
    json_object_set_new(k, "key", json_string(key));
    sodium_memzero(key, sizeof(key));
    tr_counter_inc(st->m.api_keys_created, NULL);
    tr_res_header(req, "Cache-Control", "no-store");
    tr_respond_json(req, 201, k);
    goto out;
fail:
    auth_respond_store_error(req, rc, "create API key");
out:
    json_decref(body);
}

static json_t *key_row_json(tr_req_t *req, tr_rows_t *rows)
{
    (void)req;
    return key_json(tr_rows_text(rows, 0), tr_rows_text(rows, 1), tr_rows_text(rows, 2),
                    tr_rows_int(rows, 3), tr_rows_int(rows, 4));
}

void auth_handle_api_keys_list(tr_req_t *req)
{
    tr_store_t *db = tr_req_store(req);
    const char *cursor;
    int limit, rc;
    tr_rows_t *rows = NULL;

    if (!auth_page_from_query(req, &limit, &cursor)) return;
    if (cursor)
        rc = tr_store_query(db, &rows,
                            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys "
                            "WHERE user_id = $1 AND revoked_at IS NULL AND id < $2 "
                            "ORDER BY id DESC LIMIT $3",
                            "tti", req->identity.user_id, cursor, (int64_t)limit + 1);
    else
        rc = tr_store_query(db, &rows,
                            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys "
                            "WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT $2",
                            "ti", req->identity.user_id, (int64_t)limit + 1);
    auth_respond_page(req, rc, rows, limit, key_row_json, "list API keys");
}

void auth_handle_api_key_revoke(tr_req_t *req)
{
    int64_t changes = 0;
    int rc = tr_store_exec(tr_req_store(req), &changes,
                           "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 "
                           "AND revoked_at IS NULL",
                           "itt", tr_now_ms(), tr_req_param(req, "id"), req->identity.user_id);
    if (rc != 0) {
        auth_respond_store_error(req, rc, "revoke API key");
        return;
    }
    if (changes != 1) {
        tr_respond_error(req, TR_ERR_NOT_FOUND, "API key not found", NULL);
        return;
    }
    tr_respond_json(req, 204, NULL);
}

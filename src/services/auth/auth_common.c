/*
 * auth_common.c - pieces every auth handler file uses: loading users, the
 * public JSON shapes, the client of a request, error answers and session
 * revocation.
 *
 * Revoking a session also deletes its refresh tokens: the revoked session
 * row alone already rejects its access tokens and makes any of its refresh
 * tokens answer 401, so keeping the token chain would only grow the table.
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/authn.h"
#include "kit/log.h"
#include "kit/revocations.h"
#include "kit/validate.h"

void auth_user_from_row(tr_rows_t *rows, auth_user_t *u)
{
    const char *name = tr_rows_text(rows, 2);
    snprintf(u->id, sizeof(u->id), "%s", tr_rows_text(rows, 0));
    snprintf(u->email, sizeof(u->email), "%s", tr_rows_text(rows, 1));
    snprintf(u->name, sizeof(u->name), "%s", name ? name : "");
    snprintf(u->password_hash, sizeof(u->password_hash), "%s", tr_rows_text(rows, 3));
    snprintf(u->role, sizeof(u->role), "%s", tr_rows_text(rows, 4));
    u->banned = tr_rows_int(rows, 5) != 0;
    u->approved = tr_rows_int(rows, 6) != 0;
    u->created_at = tr_rows_int(rows, 7);
    u->updated_at = tr_rows_int(rows, 8);
}

static int user_load(tr_store_t *db, const char *sql, const char *value, auth_user_t *u)
{
    tr_rows_t *rows = NULL;
    int rc = tr_store_query(db, &rows, sql, "t", value);
    if (rc != 0) return rc;
    rc = tr_rows_next(rows);
    if (rc == 1) {
        auth_user_from_row(rows, u);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    tr_rows_free(rows);
    return rc;
}

int auth_user_by_id(tr_store_t *db, const char *id, auth_user_t *u)
{
    return user_load(db, "SELECT " AUTH_USER_COLUMNS " FROM users WHERE id = $1", id, u);
}

int auth_user_by_email(tr_store_t *db, const char *email, auth_user_t *u)
{
    return user_load(db, "SELECT " AUTH_USER_COLUMNS " FROM users WHERE email = $1", email, u);
}

json_t *auth_user_json(const auth_user_t *u)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(u->id));
    json_object_set_new(o, "email", json_string(u->email));
    json_object_set_new(o, "name", json_string(u->name));
    json_object_set_new(o, "role", json_string(u->role));
    json_object_set_new(o, "approved", json_boolean(u->approved));
    json_object_set_new(o, "banned", json_boolean(u->banned));
    json_object_set_new(o, "created_at", tr_time_json(u->created_at));
    json_object_set_new(o, "updated_at", tr_time_json(u->updated_at));
    return o;
}

int auth_caller_load(tr_store_t *db, const char *user_id, auth_user_t *u)
{
    int rc = auth_user_by_id(db, user_id, u);
    if (rc == -ENOENT || (rc == 0 && u->banned)) rc = -EACCES;
    return rc;
}

void auth_respond_internal_error(tr_req_t *req, const char *what, int rc)
{
    tr_log_error("%s (%d)", what, rc);
    tr_respond_error(req, TR_ERR_INTERNAL, "internal error", NULL);
}

void auth_respond_caller_gone(tr_req_t *req)
{
    tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "account no longer available", NULL);
}

bool auth_page_key_ok(const char *key)
{
    return strlen(key) == TR_UUID_LEN && tr_uuid_valid(key);
}

void auth_client_from_req(const tr_req_t *req, auth_client_t *out)
{
    const char *ua = tr_req_header(req, "User-Agent");
    size_t n = 0;
    /* Kept printable ASCII and bounded, for storing and listing. */
    for (; ua && *ua && n < AUTH_USER_AGENT_MAX; ua++)
        out->user_agent[n++] = (*ua >= 0x20 && *ua < 0x7f) ? *ua : '?';
    out->user_agent[n] = '\0';
    snprintf(out->ip, sizeof(out->ip), "%s", req->client_ip ? req->client_ip : "");
}

/* This process's set of revoked sessions (kit/authn.h) and how long an
 * entry must stay in it, bound once by auth_init. */
static tr_revocations_t *local_revocations;
static int64_t local_keep_ms;

void auth_revocations_bind(tr_revocations_t *set, int64_t access_ttl_ms)
{
    local_revocations = set;
    local_keep_ms = access_ttl_ms + AUTH_REVOCATION_SKEW_MS;
}

/* Marks sessions revoked here at once. This runs inside the revoking
 * transaction, before it commits: should the commit fail, the sessions stay
 * refused by this process (the safe side) until their tokens expire, and
 * nobody else learns of them. */
static void revoke_locally(const char (*ids)[TR_UUID_LEN + 1], size_t n, int64_t now_ms)
{
    uint8_t(*raw)[16] = tr_xcalloc(n ? n : 1, 16);
    int64_t *until = tr_xcalloc(n ? n : 1, sizeof(int64_t));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (tr_uuid_parse(ids[i], raw[k]) != 0) continue;
        until[k++] = now_ms + local_keep_ms;
    }
    if (local_revocations && k > 0)
        tr_revocations_merge(local_revocations, (const uint8_t(*)[16])raw, until, k, tr_now_ms());
    free(raw);
    free(until);
}

int auth_session_revoke(tr_store_t *db, const char *session_id, int64_t now_ms, int64_t *changes)
{
    char id[1][TR_UUID_LEN + 1];
    int rc = tr_store_exec(
        db, changes, "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        "it", now_ms, session_id);
    if (rc == 0)
        rc = tr_store_exec(db, NULL, "DELETE FROM refresh_tokens WHERE session_id = $1", "t",
                           session_id);
    if (rc == 0) {
        snprintf(id[0], sizeof(id[0]), "%s", session_id);
        revoke_locally((const char(*)[TR_UUID_LEN + 1]) id, 1, now_ms);
    }
    return rc;
}

int auth_sessions_revoke_all(tr_store_t *db, const char *user_id, const char *except_sid,
                             int64_t now_ms)
{
    /* The empty string never matches a session id, so one statement serves
     * both "all" and "all but one". */
    const char *keep = except_sid ? except_sid : "";
    tr_rows_t *rows = NULL;
    char(*ids)[TR_UUID_LEN + 1] = NULL;
    size_t n = 0, cap = 0;
    int rc = tr_store_query(db, &rows,
                            "SELECT id FROM sessions "
                            "WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
                            "tt", user_id, keep);
    while (rc == 0 && (rc = tr_rows_next(rows)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            ids = tr_xrealloc(ids, cap * sizeof(*ids));
        }
        snprintf(ids[n++], sizeof(ids[0]), "%s", tr_rows_text(rows, 0));
        rc = 0;
    }
    tr_rows_free(rows);
    if (rc < 0) goto out;
    rc = tr_store_exec(db, NULL,
                       "UPDATE sessions SET revoked_at = $1 "
                       "WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
                       "itt", now_ms, user_id, keep);
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "DELETE FROM refresh_tokens WHERE session_id IN "
                           "(SELECT id FROM sessions WHERE user_id = $1 AND id <> $2)",
                           "tt", user_id, keep);
    if (rc == 0) revoke_locally((const char(*)[TR_UUID_LEN + 1]) ids, n, now_ms);
out:
    free(ids);
    return rc;
}

/*
 * auth_common.c - pieces every auth handler file uses: loading users, the
 * public JSON shapes, list paging, error answers, transaction endings and
 * session revocation.
 *
 * Revoking a session also deletes its refresh tokens: the revoked session
 * row alone already rejects its access tokens and makes any of its refresh
 * tokens answer 401, so keeping the token chain would only grow the table.
 */
#include "services/auth/auth_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kit/log.h"
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

json_t *auth_time_json(int64_t ms)
{
    char text[32];
    if (ms == 0) return json_null();
    tr_time_format(ms, text);
    return json_string(text);
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
    json_object_set_new(o, "created_at", auth_time_json(u->created_at));
    json_object_set_new(o, "updated_at", auth_time_json(u->updated_at));
    return o;
}

void *auth_req_zalloc(tr_req_t *req, size_t size)
{
    return memset(tr_req_alloc(req, size), 0, size);
}

void auth_respond_store_error(tr_req_t *req, int rc, const char *what)
{
    tr_log_error("%s: database error %d: %s", what, rc, tr_store_errmsg(tr_req_store(req)));
    if (rc == TR_STORE_EBUSY)
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "database busy, try again", NULL);
    else
        tr_respond_error(req, TR_ERR_INTERNAL, "internal error", NULL);
}

void auth_respond_internal_error(tr_req_t *req, const char *what, int rc)
{
    tr_log_error("%s (%d)", what, rc);
    tr_respond_error(req, TR_ERR_INTERNAL, "internal error", NULL);
}

int auth_tx_finish(tr_store_t *db, int rc)
{
    if (rc == 0) rc = tr_store_commit(db);
    if (rc != 0) tr_store_rollback(db);
    return rc;
}

int auth_rows_first_int(int rc, tr_rows_t *rows, int64_t *out)
{
    if (rc != 0) return rc;
    if ((rc = tr_rows_next(rows)) == 1) {
        *out = tr_rows_int(rows, 0);
        rc = 0;
    }
    tr_rows_free(rows);
    return rc;
}

bool auth_page_from_query(tr_req_t *req, int *limit, const char **cursor)
{
    tr_fields_t f;
    tr_fields_init(&f);
    if (auth_parse_limit(tr_req_query(req, "limit"), limit) != 0)
        tr_fields_add(&f, "limit", "must be an integer from 1 to 100");
    const char *c = tr_req_query(req, "cursor");
    *cursor = NULL;
    if (c && *c) {
        if (strlen(c) != TR_UUID_LEN || !tr_uuid_valid(c)) {
            tr_fields_add(&f, "cursor", "is not a cursor returned by this list");
        } else {
            char *lower = tr_req_strdup(req, c);
            for (char *p = lower; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            *cursor = lower;
        }
    }
    return !tr_fields_respond(&f, req);
}

void auth_respond_list(tr_req_t *req, json_t *data, const char *next_cursor)
{
    json_t *body = json_object();
    json_object_set_new(body, "data", data);
    json_object_set_new(body, "next_cursor", next_cursor ? json_string(next_cursor) : json_null());
    tr_respond_json(req, 200, body);
}

void auth_respond_page(tr_req_t *req, int rc, tr_rows_t *rows, int limit,
                       auth_row_json_fn *row_json, const char *what)
{
    char next[TR_UUID_LEN + 1] = "";
    json_t *data = NULL;
    int count = 0;

    if (rc != 0) goto fail;
    data = json_array();
    /* The extra row only tells that another page exists. */
    while ((rc = tr_rows_next(rows)) == 1 && ++count <= limit) {
        snprintf(next, sizeof(next), "%s", tr_rows_text(rows, 0));
        json_array_append_new(data, row_json(req, rows));
    }
    tr_rows_free(rows);
    if (rc < 0) goto fail;
    auth_respond_list(req, data, count > limit ? next : NULL);
    return;
fail:
    json_decref(data);
    auth_respond_store_error(req, rc, what);
}

int auth_session_revoke(tr_store_t *db, const char *session_id, int64_t now_ms, int64_t *changes)
{
    int rc = tr_store_exec(
        db, changes, "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        "it", now_ms, session_id);
    if (rc == 0)
        rc = tr_store_exec(db, NULL, "DELETE FROM refresh_tokens WHERE session_id = $1", "t",
                           session_id);
    return rc;
}

int auth_sessions_revoke_all(tr_store_t *db, const char *user_id, const char *except_sid,
                             int64_t now_ms)
{
    /* The empty string never matches a session id, so one statement serves
     * both "all" and "all but one". */
    const char *keep = except_sid ? except_sid : "";
    int rc = tr_store_exec(db, NULL,
                           "UPDATE sessions SET revoked_at = $1 "
                           "WHERE user_id = $2 AND id <> $3 AND revoked_at IS NULL",
                           "itt", now_ms, user_id, keep);
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "DELETE FROM refresh_tokens WHERE session_id IN "
                           "(SELECT id FROM sessions WHERE user_id = $1 AND id <> $2)",
                           "tt", user_id, keep);
    return rc;
}

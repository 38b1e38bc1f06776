/*
 * auth_admin.c - administration: listing and changing users, reading the
 * outbox; and the same operations for `trellis admin`, which works on the
 * database file directly (with or without the service running: SQLite's WAL
 * and busy timeout serialise the writers).
 *
 * A ban revokes every session of the user in the same transaction; the
 * authenticator also refuses banned users' tokens and API keys, so a ban
 * acts on the next request. Role changes act at once inside this service
 * (the authenticator reads the role from the database); other services that
 * trust the token's "role" claim see it at the next refresh.
 */
#include "services/auth/auth_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/validate.h"

/* ---- users ------------------------------------------------------------------ */

static json_t *user_row_json(tr_req_t *req, tr_rows_t *rows)
{
    auth_user_t u;
    (void)req;
    auth_user_from_row(rows, &u);
    return auth_user_json(&u);
}

void auth_handle_users_list(tr_req_t *req)
{
    tr_store_t *db = tr_req_store(req);
    const char *cursor;
    int limit, rc;
    tr_rows_t *rows = NULL;

    if (!auth_page_from_query(req, &limit, &cursor)) return;
    /* Oldest first: UUIDv7 ids sort by creation time. */
    if (cursor)
        rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS " FROM users WHERE id > $1 "
                            "ORDER BY id LIMIT $2",
                            "ti", cursor, (int64_t)limit + 1);
    else
        rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS " FROM users ORDER BY id LIMIT $1", "i",
                            (int64_t)limit + 1);
    auth_respond_page(req, rc, rows, limit, user_row_json, "list users");
}

void auth_handle_user_patch(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    const char *id = tr_req_param(req, "id");
    const char *role = NULL;
    int banned = -1, approved = -1, rc;
    bool newly_banned = false;
    auth_user_t u;
    tr_fields_t f;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        role = tr_field_string(&f, body, "role", false, 1, sizeof(u.role) - 1);
        if (role && !auth_role_valid(role)) {
            tr_fields_add(&f, "role", "must be one of admin, moderator, verified_user, user");
            role = NULL;
        }
        banned = tr_field_bool(&f, body, "banned", false);
        approved = tr_field_bool(&f, body, "approved", false);
    }
    if (tr_fields_respond(&f, req)) goto out;
    if (!role && banned < 0 && approved < 0) {
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT,
                         "give at least one of role, banned, approved", NULL);
        goto out;
    }
    if (strlen(id) != TR_UUID_LEN || !tr_uuid_valid(id)) {
        tr_respond_error(req, TR_ERR_NOT_FOUND, "user not found", NULL);
        goto out;
    }

    int64_t now = tr_now_ms();
    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = auth_user_by_id(db, id, &u);
    if (rc == -ENOENT) {
        tr_store_rollback(db);
        tr_respond_error(req, TR_ERR_NOT_FOUND, "user not found", NULL);
        goto out;
    }
    if (rc == 0) {
        newly_banned = banned == 1 && !u.banned;
        if (role) snprintf(u.role, sizeof(u.role), "%s", role);
        if (banned >= 0) u.banned = banned;
        if (approved >= 0) u.approved = approved;
        u.updated_at = now;
        rc = tr_store_exec(db, NULL,
                           "UPDATE users SET role = $1, banned = $2, approved = $3, "
                           "updated_at = $4 WHERE id = $5",
                           "tiiit", u.role, (int64_t)u.banned, (int64_t)u.approved, now, u.id);
    }
    if (rc == 0 && newly_banned) rc = auth_sessions_revoke_all(db, u.id, NULL, now);
    if ((rc = auth_tx_finish(db, rc)) != 0) goto fail;
    if (newly_banned) tr_counter_inc(st->m.bans, NULL);
    tr_respond_json(req, 200, auth_user_json(&u));
    goto out;
fail:
    auth_respond_store_error(req, rc, "update user");
out:
    json_decref(body);
}

/* ---- outbox ------------------------------------------------------------------- */

int auth_outbox_pending(tr_store_t *db, const char *recipient, int limit, const char *cursor,
                        json_t **items, char **next_cursor)
{
    static const char *const sql[4] = {
        "SELECT id, kind, recipient, payload, created_at FROM outbox "
        "WHERE delivered_at IS NULL ORDER BY id DESC LIMIT $1",
        "SELECT id, kind, recipient, payload, created_at FROM outbox "
        "WHERE delivered_at IS NULL AND recipient = $2 ORDER BY id DESC LIMIT $1",
        "SELECT id, kind, recipient, payload, created_at FROM outbox "
        "WHERE delivered_at IS NULL AND id < $2 ORDER BY id DESC LIMIT $1",
        "SELECT id, kind, recipient, payload, created_at FROM outbox "
        "WHERE delivered_at IS NULL AND recipient = $2 AND id < $3 ORDER BY id DESC LIMIT $1",
    };
    char lowered[AUTH_EMAIL_MAX + 1], last[TR_UUID_LEN + 1] = "";
    tr_rows_t *rows = NULL;
    int count = 0, rc;

    *items = NULL;
    if (next_cursor) *next_cursor = NULL;
    if (limit < 1 || limit > 1000) return -EINVAL;
    if (recipient) {
        /* Emails are stored trimmed and lowercased. */
        while (isspace((unsigned char)*recipient))
            recipient++;
        size_t n = 0;
        for (; recipient[n] && n < sizeof(lowered) - 1; n++)
            lowered[n] = (char)tolower((unsigned char)recipient[n]);
        while (n > 0 && isspace((unsigned char)lowered[n - 1]))
            n--;
        lowered[n] = '\0';
        recipient = lowered;
    }
    int64_t fetch = (int64_t)limit + 1;
    if (recipient && cursor)
        rc = tr_store_query(db, &rows, sql[3], "itt", fetch, recipient, cursor);
    else if (cursor)
        rc = tr_store_query(db, &rows, sql[2], "it", fetch, cursor);
    else if (recipient)
        rc = tr_store_query(db, &rows, sql[1], "it", fetch, recipient);
    else
        rc = tr_store_query(db, &rows, sql[0], "i", fetch);
    if (rc != 0) return rc;

    json_t *list = json_array();
    while ((rc = tr_rows_next(rows)) == 1 && ++count <= limit) {
        const char *payload_text = tr_rows_text(rows, 3);
        json_t *payload = json_loads(payload_text, 0, NULL);
        snprintf(last, sizeof(last), "%s", tr_rows_text(rows, 0));
        json_t *m = json_object();
        json_object_set_new(m, "id", json_string(last));
        json_object_set_new(m, "kind", json_string(tr_rows_text(rows, 1)));
        json_object_set_new(m, "recipient", json_string(tr_rows_text(rows, 2)));
        json_object_set_new(m, "payload", payload ? payload : json_string(payload_text));
        json_object_set_new(m, "created_at", auth_time_json(tr_rows_int(rows, 4)));
        json_array_append_new(list, m);
    }
    tr_rows_free(rows);
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    if (next_cursor && count > limit) *next_cursor = tr_xstrdup(last);
    *items = list;
    return 0;
}

void auth_handle_outbox_list(tr_req_t *req)
{
    const char *cursor;
    char *next = NULL;
    json_t *items = NULL;
    int limit;

    if (!auth_page_from_query(req, &limit, &cursor)) return;
    int rc = auth_outbox_pending(tr_req_store(req), tr_req_query(req, "recipient"), limit, cursor,
                                 &items, &next);
    if (rc != 0) {
        auth_respond_store_error(req, rc, "outbox");
        return;
    }
    tr_res_header(req, "Cache-Control", "no-store");
    auth_respond_list(req, items, next);
    free(next);
}

/* ---- creating users without the API ------------------------------------------- */

/* The first field problem recorded in f, as "field: issue". */
static void first_issue(const tr_fields_t *f, char *err, size_t errlen)
{
    json_t *d = json_array_get(f->details, 0);
    if (d)
        snprintf(err, errlen, "%s: %s", json_string_value(json_object_get(d, "field")),
                 json_string_value(json_object_get(d, "issue")));
    else
        snprintf(err, errlen, "%s", f->message ? f->message : "invalid input");
}

int auth_create_user(tr_store_t *db, const tr_pwhash_params_t *params, const char *email,
                     const char *password, const char *name, const char *role, json_t **user,
                     char *err, size_t errlen)
{
    auth_user_t u = {.approved = true};
    tr_fields_t f;
    int rc = -EINVAL;

    *user = NULL;
    tr_fields_init(&f);
    /* Through the same validators as the API, so the CLI cannot create an
     * account the API would have refused or normalised differently. */
    json_t *input =
        json_pack("{s:s*, s:s*, s:s*}", "email", email, "password", password, "name", name);
    tr_field_email(&f, input, "email", true, u.email, sizeof(u.email));
    tr_field_string(&f, input, "password", true, AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX);
    tr_field_string(&f, input, "name", false, 0, AUTH_NAME_MAX);
    if (role && !auth_role_valid(role))
        tr_fields_add(&f, "role", "must be one of admin, moderator, verified_user, user");
    json_decref(input);
    if (tr_fields_failed(&f)) {
        first_issue(&f, err, errlen);
        goto out;
    }
    snprintf(u.name, sizeof(u.name), "%s", name ? name : "");
    snprintf(u.role, sizeof(u.role), "%s", role ? role : "user");

    auth_user_t existing;
    rc = auth_user_by_email(db, u.email, &existing);
    if (rc == 0) rc = -EEXIST;
    if (rc != -ENOENT) goto store_error;
    if ((rc = tr_password_hash(password, strlen(password), params, u.password_hash)) != 0) {
        snprintf(err, errlen, "password hashing failed (%d)", rc);
        goto out;
    }
    tr_uuid7(u.id);
    u.created_at = u.updated_at = tr_now_ms();
    rc = tr_store_exec(db, NULL,
                       "INSERT INTO users (id, email, name, password_hash, role, banned, approved, "
                       "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, 1, $6, $6)",
                       "ttttti", u.id, u.email, u.name, u.password_hash, u.role, u.created_at);
    if (rc == TR_STORE_ECONSTRAINT) rc = -EEXIST;
    if (rc != 0) goto store_error;
    *user = auth_user_json(&u);
    goto out;
store_error:
    if (rc == -EEXIST)
        snprintf(err, errlen, "a user with email %s already exists", u.email);
    else
        snprintf(err, errlen, "database error: %s", tr_store_errmsg(db));
out:
    tr_fields_free(&f);
    return rc;
}

/*
 * auth_admin.c - administration: listing and changing users, reading the
 * outbox; and the same operations for `trellis admin`, which works on the
 * database file directly (with or without the service running: SQLite's WAL
 * and busy timeout serialise the writers).
 *
 * A ban revokes every session of the user in the same transaction; the
 * authenticator also refuses banned users' tokens and API keys, so a ban
 * acts on the next request. The HTTP handlers do their database work in
 * store jobs (auth_internal.h, DATABASE WORK); the CLI paths run outside
 * any loop and call the store directly. Role changes act at once inside this service
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

typedef struct users_ctx {
    tr_page_t page;
    tr_page_result_t result;
} users_ctx_t;

static json_t *user_row_json(tr_rows_t *rows, void *arg)
{
    auth_user_t u;
    (void)arg;
    auth_user_from_row(rows, &u);
    return auth_user_json(&u);
}

static int users_job(tr_store_t *db, void *arg)
{
    users_ctx_t *ctx = arg;
    tr_rows_t *rows = NULL;
    int64_t fetch = (int64_t)ctx->page.limit + 1;
    int rc;
    /* Oldest first: UUIDv7 ids sort by creation time. */
    if (ctx->page.after[0])
        rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS " FROM users WHERE id > $1 "
                            "ORDER BY id LIMIT $2",
                            "ti", ctx->page.after, fetch);
    else
        rc = tr_store_query(
            db, &rows, "SELECT " AUTH_USER_COLUMNS " FROM users ORDER BY id LIMIT $1", "i", fetch);
    return tr_page_collect(rc, rows, &ctx->page, user_row_json, NULL, &ctx->result);
}

static void users_done(tr_req_t *req, void *arg, int rc)
{
    users_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_page_result_clear(&ctx->result);
        tr_store_respond_error(req, rc, "list users");
        return;
    }
    tr_respond_page(req, &ctx->result);
}

void auth_handle_users_list(tr_req_t *req)
{
    users_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    if (!tr_page_from_query(req, &ctx->page, auth_page_key_ok)) return;
    tr_store_run(req, 0, users_job, users_done, ctx);
}

typedef struct patch_ctx {
    char id[TR_UUID_LEN + 1];
    char role[24]; /* "" when unchanged */
    int banned;    /* -1 when unchanged */
    int approved;
    /* written by the job */
    bool newly_banned;
    auth_user_t user;
} patch_ctx_t;

static int patch_job(tr_store_t *db, void *arg)
{
    patch_ctx_t *ctx = arg;
    auth_user_t *u = &ctx->user;
    int64_t now = tr_now_ms();

    ctx->newly_banned = false;
    int rc = auth_user_by_id(db, ctx->id, u);
    if (rc != 0) return rc;
    ctx->newly_banned = ctx->banned == 1 && !u->banned;
    if (ctx->role[0]) snprintf(u->role, sizeof(u->role), "%s", ctx->role);
    if (ctx->banned >= 0) u->banned = ctx->banned;
    if (ctx->approved >= 0) u->approved = ctx->approved;
    u->updated_at = now;
    rc = tr_store_exec(db, NULL,
                       "UPDATE users SET role = $1, banned = $2, approved = $3, "
                       "updated_at = $4 WHERE id = $5",
                       "tiiit", u->role, (int64_t)u->banned, (int64_t)u->approved, now, u->id);
    if (rc == 0 && ctx->newly_banned) rc = auth_sessions_revoke_all(db, u->id, NULL, now);
    return rc;
}

static void patch_done(tr_req_t *req, void *arg, int rc)
{
    patch_ctx_t *ctx = arg;
    if (rc == -ENOENT) {
        tr_respond_error(req, TR_ERR_NOT_FOUND, "user not found", NULL);
        return;
    }
    if (rc != 0) {
        tr_store_respond_error(req, rc, "update user");
        return;
    }
    if (ctx->newly_banned) tr_counter_inc(auth_state_of(req)->m.bans, NULL);
    tr_respond_json(req, 200, auth_user_json(&ctx->user));
}

void auth_handle_user_patch(tr_req_t *req)
{
    patch_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    const char *id = tr_req_param(req, "id");
    const char *role = NULL;
    tr_fields_t f;

    ctx->banned = ctx->approved = -1;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        role = tr_field_string(&f, body, "role", false, 1, sizeof(ctx->role) - 1);
        if (role && !auth_role_valid(role)) {
            tr_fields_add(&f, "role", "must be one of admin, moderator, verified_user, user");
            role = NULL;
        }
        ctx->banned = tr_field_bool(&f, body, "banned", false);
        ctx->approved = tr_field_bool(&f, body, "approved", false);
    }
    if (tr_fields_respond(&f, req)) goto out;
    if (!role && ctx->banned < 0 && ctx->approved < 0) {
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT,
                         "give at least one of role, banned, approved", NULL);
        goto out;
    }
    if (strlen(id) != TR_UUID_LEN || !tr_uuid_valid(id)) {
        tr_respond_error(req, TR_ERR_NOT_FOUND, "user not found", NULL);
        goto out;
    }
    snprintf(ctx->id, sizeof(ctx->id), "%s", id);
    snprintf(ctx->role, sizeof(ctx->role), "%s", role ? role : "");
    tr_store_run(req, TR_STORE_TX, patch_job, patch_done, ctx);
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
        json_object_set_new(m, "created_at", tr_time_json(tr_rows_int(rows, 4)));
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

typedef struct outbox_ctx {
    char *recipient; /* request arena, NULL for all */
    tr_page_t page;
    /* written by the job */
    json_t *items;
    char *next; /* malloc'ed key of the next page, or NULL */
} outbox_ctx_t;

static int outbox_job(tr_store_t *db, void *arg)
{
    outbox_ctx_t *ctx = arg;
    json_decref(ctx->items);
    free(ctx->next);
    ctx->items = NULL;
    ctx->next = NULL;
    return auth_outbox_pending(db, ctx->recipient, ctx->page.limit,
                               ctx->page.after[0] ? ctx->page.after : NULL, &ctx->items,
                               &ctx->next);
}

static void outbox_done(tr_req_t *req, void *arg, int rc)
{
    outbox_ctx_t *ctx = arg;
    char cursor[TR_PAGE_CURSOR_MAX + 1] = "";
    if (rc != 0) {
        tr_store_respond_error(req, rc, "outbox");
    } else {
        if (ctx->next) tr_page_cursor_encode(ctx->next, cursor);
        tr_res_header(req, "Cache-Control", "no-store");
        tr_respond_list(req, ctx->items, cursor);
        ctx->items = NULL;
    }
    json_decref(ctx->items);
    free(ctx->next);
}

void auth_handle_outbox_list(tr_req_t *req)
{
    outbox_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    if (!tr_page_from_query(req, &ctx->page, auth_page_key_ok)) return;
    ctx->recipient = tr_req_strdup(req, tr_req_query(req, "recipient"));
    tr_store_run(req, 0, outbox_job, outbox_done, ctx);
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

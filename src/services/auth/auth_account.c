/*
 * auth_account.c - what a signed-in user does with their own account: read
 * it, check a token, list and end sessions, change the password; and the
 * signed-out password reset.
 *
 * PASSWORD RESET. /password/forgot answers 202 whatever the email, so it
 * cannot be used to find accounts. For an existing, unbanned account it
 * stores the SHA-256 of a fresh 256-bit token (single use, reset-ttl) and
 * queues the token itself in the outbox for delivery; it is never logged.
 * At most AUTH_MAX_PENDING_RESETS unused tokens exist per user, so the
 * endpoint cannot be used to fill the database. A successful reset uses up
 * every outstanding token of the user, revokes all sessions and clears the
 * login lockout of the email.
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/validate.h"

/* ---- me, validate ----------------------------------------------------------- */

void auth_handle_me(tr_req_t *req)
{
    tr_respond_json(req, 200, auth_user_json(auth_caller(req)));
}

void auth_handle_validate(tr_req_t *req)
{
    const tr_identity_t *id = &req->identity;
    json_t *body = json_object();
    json_object_set_new(body, "user_id", json_string(id->user_id));
    json_object_set_new(body, "role", json_string(id->role));
    json_object_set_new(body, "session_id",
                        id->session_id[0] ? json_string(id->session_id) : json_null());
    json_object_set_new(body, "exp", id->expires_at ? json_integer(id->expires_at) : json_null());
    json_object_set_new(body, "method", json_string(id->method));
    tr_respond_json(req, 200, body);
}

/* ---- sessions --------------------------------------------------------------- */

static json_t *session_json(tr_req_t *req, tr_rows_t *rows)
{
    const char *sid = tr_rows_text(rows, 0);
    json_t *s = json_object();
    json_object_set_new(s, "id", json_string(sid));
    json_object_set_new(s, "created_at", auth_time_json(tr_rows_int(rows, 1)));
    json_object_set_new(s, "last_used_at", auth_time_json(tr_rows_int(rows, 2)));
    json_object_set_new(s, "expires_at", auth_time_json(tr_rows_int(rows, 3)));
    json_object_set_new(s, "user_agent", json_string(tr_rows_text(rows, 4)));
    json_object_set_new(s, "ip", json_string(tr_rows_text(rows, 5)));
    json_object_set_new(s, "current", json_boolean(strcmp(sid, req->identity.session_id) == 0));
    return s;
}

void auth_handle_sessions_list(tr_req_t *req)
{
    tr_store_t *db = tr_req_store(req);
    const char *cursor;
    int limit, rc;
    tr_rows_t *rows = NULL;

    if (!auth_page_from_query(req, &limit, &cursor)) return;
    int64_t now = tr_now_ms();
    /* Newest first; the cursor is the last id of the previous page. */
    if (cursor)
        rc = tr_store_query(db, &rows,
                            "SELECT id, created_at, last_used_at, expires_at, user_agent, ip "
                            "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND "
                            "expires_at > $2 AND id < $3 ORDER BY id DESC LIMIT $4",
                            "titi", req->identity.user_id, now, cursor, (int64_t)limit + 1);
    else
        rc = tr_store_query(db, &rows,
                            "SELECT id, created_at, last_used_at, expires_at, user_agent, ip "
                            "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND "
                            "expires_at > $2 ORDER BY id DESC LIMIT $3",
                            "tii", req->identity.user_id, now, (int64_t)limit + 1);
    auth_respond_page(req, rc, rows, limit, session_json, "sessions");
}

void auth_handle_session_revoke(tr_req_t *req)
{
    tr_store_t *db = tr_req_store(req);
    const char *sid = tr_req_param(req, "id");
    int64_t changes = 0, now = tr_now_ms();
    int rc;

    /* Ownership is part of the update, so another user's session id looks
     * exactly like one that does not exist. */
    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = tr_store_exec(db, &changes,
                       "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 "
                       "AND revoked_at IS NULL AND expires_at > $1",
                       "itt", now, sid, req->identity.user_id);
    if (rc == 0 && changes == 1) rc = auth_session_revoke(db, sid, now, NULL);
    if ((rc = auth_tx_finish(db, rc)) != 0) goto fail;
    if (changes != 1) {
        tr_respond_error(req, TR_ERR_NOT_FOUND, "session not found", NULL);
        return;
    }
    tr_respond_json(req, 204, NULL);
    return;
fail:
    auth_respond_store_error(req, rc, "revoke session");
}

/* ---- password change ---------------------------------------------------------- */

typedef struct change_ctx {
    tr_req_t *req;
    char *new_password; /* request arena; wiped once handed to the hash job */
    auth_user_t user;
} change_ctx_t;

static void change_hashed(void *arg, int rc, const char *encoded)
{
    change_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;
    tr_store_t *db = tr_req_store(req);
    const char *current = req->identity.session_id[0] ? req->identity.session_id : NULL;

    if (rc != 0) {
        auth_respond_internal_error(req, "password change: hashing failed", rc);
        return;
    }
    int64_t now = tr_now_ms();
    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = tr_store_exec(db, NULL,
                       "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3", "tit",
                       encoded, now, ctx->user.id);
    if (rc == 0) rc = auth_sessions_revoke_all(db, ctx->user.id, current, now);
    if ((rc = auth_tx_finish(db, rc)) != 0) goto fail;
    tr_counter_inc(auth_state_of(req)->m.password_changes, NULL);
    tr_respond_json(req, 204, NULL);
    return;
fail:
    auth_respond_store_error(req, rc, "password change");
}

static void change_verified(void *arg, bool match)
{
    change_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;
    size_t len = strlen(ctx->new_password);

    if (!match) {
        sodium_memzero(ctx->new_password, len);
        tr_fields_t f;
        tr_fields_init(&f);
        tr_fields_add(&f, "current_password", "is incorrect");
        tr_fields_respond(&f, req);
        return;
    }
    int rc = tr_password_hash_async(req->worker->loop, ctx->new_password, len,
                                    &auth_state_of(req)->cfg.pwhash, change_hashed, ctx);
    sodium_memzero(ctx->new_password, len);
    if (rc != 0) auth_respond_internal_error(req, "password change: cannot queue hashing", rc);
}

void auth_handle_password_change(tr_req_t *req)
{
    change_ctx_t *ctx = auth_req_zalloc(req, sizeof(*ctx));
    const char *current = NULL, *fresh = NULL;
    tr_fields_t f;
    int rc;

    ctx->req = req;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        current = tr_field_string(&f, body, "current_password", true, 1, AUTH_PASSWORD_MAX);
        fresh =
            tr_field_string(&f, body, "new_password", true, AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;

    ctx->user = *auth_caller(req);
    ctx->new_password = tr_req_strdup(req, fresh);
    rc = tr_password_verify_async(req->worker->loop, ctx->user.password_hash, current,
                                  strlen(current), change_verified, ctx);
    if (rc != 0) {
        sodium_memzero(ctx->new_password, strlen(ctx->new_password));
        auth_respond_internal_error(req, "password change: cannot queue password check", rc);
    }
out:
    json_decref(body);
}

/* ---- forgot ------------------------------------------------------------------- */

/* Stores a reset token for u and queues it for delivery, unless the user
 * already holds the maximum number of unused ones. */
static int reset_token_issue(tr_store_t *db, const auth_state_t *st, const auth_user_t *u,
                             int64_t now, bool *issued)
{
    char token[TR_TOKEN_CHARS + 1], hash[TR_SHA256_HEX], msg_id[TR_UUID_LEN + 1];
    char expires[32];
    tr_rows_t *rows = NULL;
    int64_t pending = 0;
    char *payload = NULL;

    *issued = false;
    int rc = tr_store_begin(db);
    if (rc != 0) return rc;
    rc = tr_store_exec(db, NULL,
                       "DELETE FROM password_resets WHERE user_id = $1 AND "
                       "(used_at IS NOT NULL OR expires_at <= $2)",
                       "ti", u->id, now);
    if (rc == 0) {
        rc = tr_store_query(db, &rows, "SELECT COUNT(*) FROM password_resets WHERE user_id = $1",
                            "t", u->id);
        rc = auth_rows_first_int(rc, rows, &pending);
    }
    if (rc == 0 && pending < AUTH_MAX_PENDING_RESETS) {
        tr_token_generate(token);
        tr_sha256_hex(token, TR_TOKEN_CHARS, hash);
        tr_time_format(now + st->cfg.reset_ttl_ms, expires);
        tr_uuid7(msg_id);
        json_t *p =
            json_pack("{s:s, s:s, s:s}", "token", token, "user_id", u->id, "expires_at", expires);
        /* The message as it will be e-mailed, so a relay needs no templates. */
        char *text = tr_xasprintf("Your password reset token: %s\n\nIt can be used once, until "
                                  "%s. If you did not ask to reset your password, ignore this "
                                  "message.\n",
                                  token, expires);
        json_object_set_new(p, "subject", json_string("Reset your password"));
        json_object_set_new(p, "text", json_string(text));
        sodium_memzero(text, strlen(text));
        free(text);
        payload = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        rc = tr_store_exec(db, NULL,
                           "INSERT INTO password_resets (token_hash, user_id, created_at, "
                           "expires_at) VALUES ($1, $2, $3, $4)",
                           "ttii", hash, u->id, now, now + st->cfg.reset_ttl_ms);
        if (rc == 0)
            rc = tr_store_exec(db, NULL,
                               "INSERT INTO outbox (id, kind, recipient, payload, created_at) "
                               "VALUES ($1, 'password_reset', $2, $3, $4)",
                               "ttti", msg_id, u->email, payload, now);
        *issued = rc == 0;
    }
    if ((rc = auth_tx_finish(db, rc)) != 0) *issued = false;
    if (payload) {
        sodium_memzero(payload, strlen(payload));
        free(payload);
    }
    sodium_memzero(token, sizeof(token));
    return rc;
}

void auth_handle_password_forgot(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    char email[AUTH_EMAIL_MAX + 1];
    auth_user_t u;
    bool issued = false;
    tr_fields_t f;
    int rc;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) tr_field_email(&f, body, "email", true, email, sizeof(email));
    json_decref(body);
    if (tr_fields_respond(&f, req)) return;

    rc = auth_user_by_email(tr_req_store(req), email, &u);
    if (rc == 0 && !u.banned)
        rc = reset_token_issue(tr_req_store(req), st, &u, tr_now_ms(), &issued);
    if (rc != 0 && rc != -ENOENT) {
        auth_respond_store_error(req, rc, "password forgot");
        return;
    }
    if (issued) tr_counter_inc(st->m.reset_requests, NULL);
    tr_respond_json(req, 202,
                    json_pack("{s:s}", "message",
                              "if an account exists for this email, a reset token has been sent"));
}

/* ---- reset -------------------------------------------------------------------- */

typedef struct reset_ctx {
    tr_req_t *req;
    char token_hash[TR_SHA256_HEX];
    char user_id[TR_UUID_LEN + 1];
} reset_ctx_t;

static void respond_bad_reset_token(tr_req_t *req)
{
    tr_fields_t f;
    tr_fields_init(&f);
    tr_fields_add(&f, "token", "is invalid, expired or already used");
    tr_fields_respond(&f, req);
}

static void reset_hashed(void *arg, int rc, const char *encoded)
{
    reset_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;
    tr_store_t *db = tr_req_store(req);
    int64_t changes = 0;

    if (rc != 0) {
        auth_respond_internal_error(req, "password reset: hashing failed", rc);
        return;
    }
    int64_t now = tr_now_ms();
    if ((rc = tr_store_begin(db)) != 0) goto fail;
    /* Re-checked under the write lock: the token may have been used while
     * the new password was being hashed. */
    rc = tr_store_exec(db, &changes,
                       "UPDATE password_resets SET used_at = $1 WHERE token_hash = $2 AND "
                       "used_at IS NULL AND expires_at > $1",
                       "it", now, ctx->token_hash);
    if (rc == 0 && changes == 1) {
        rc = tr_store_exec(db, NULL,
                           "UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND "
                           "used_at IS NULL",
                           "it", now, ctx->user_id);
        if (rc == 0)
            rc = tr_store_exec(db, NULL,
                               "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
                               "tit", encoded, now, ctx->user_id);
        if (rc == 0) rc = auth_sessions_revoke_all(db, ctx->user_id, NULL, now);
        if (rc == 0)
            rc = tr_store_exec(db, NULL,
                               "DELETE FROM login_failures WHERE email = "
                               "(SELECT email FROM users WHERE id = $1)",
                               "t", ctx->user_id);
    }
    if (rc == 0 && changes == 1) rc = tr_store_commit(db);
    if (rc != 0 || changes != 1) tr_store_rollback(db);
    if (rc != 0) goto fail;
    if (changes != 1) {
        respond_bad_reset_token(req);
        return;
    }
    tr_counter_inc(auth_state_of(req)->m.resets, NULL);
    tr_respond_json(req, 204, NULL);
    return;
fail:
    auth_respond_store_error(req, rc, "password reset");
}

void auth_handle_password_reset(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    reset_ctx_t *ctx = auth_req_zalloc(req, sizeof(*ctx));
    const char *token = NULL, *password = NULL;
    tr_rows_t *rows = NULL;
    bool valid = false;
    tr_fields_t f;
    int rc;

    ctx->req = req;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        token = tr_field_string(&f, body, "token", true, 1, 512);
        password =
            tr_field_string(&f, body, "new_password", true, AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;

    tr_sha256_hex(token, strlen(token), ctx->token_hash);
    rc = tr_store_query(db, &rows,
                        "SELECT user_id FROM password_resets WHERE token_hash = $1 AND "
                        "used_at IS NULL AND expires_at > $2",
                        "ti", ctx->token_hash, tr_now_ms());
    if (rc == 0) {
        if ((rc = tr_rows_next(rows)) == 1) {
            snprintf(ctx->user_id, sizeof(ctx->user_id), "%s", tr_rows_text(rows, 0));
            valid = true;
            rc = 0;
        }
        tr_rows_free(rows);
    }
    if (rc != 0) {
        auth_respond_store_error(req, rc, "password reset");
        goto out;
    }
    if (!valid) {
        respond_bad_reset_token(req);
        goto out;
    }
    rc = tr_password_hash_async(req->worker->loop, password, strlen(password), &st->cfg.pwhash,
                                reset_hashed, ctx);
    if (rc != 0) auth_respond_internal_error(req, "password reset: cannot queue hashing", rc);
out:
    json_decref(body);
}

/*
 * auth_account.c - what a signed-in user does with their own account: read
 * it, check a token, list and end sessions, change the password; and the
 * signed-out password reset.
 *
 * PASSWORD RESET. /password/forgot answers 202 whatever the email, so it
 * cannot be used to find accounts -- neither by its status nor by its
 * timing: the answer is sent first, and the lookup and the token write
 * happen afterwards, detached from the request (tr_store_run_detached), so
 * an existing and an unknown email cost the client the same. For an
 * existing, unbanned account it
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
#include "kit/store_job.h"
#include "kit/validate.h"

/* ---- me, validate ----------------------------------------------------------- */

typedef struct caller_ctx {
    char user_id[TR_UUID_LEN + 1];
    auth_user_t user;
} caller_ctx_t;

static int me_job(tr_store_t *db, void *arg)
{
    caller_ctx_t *ctx = arg;
    return auth_caller_load(db, ctx->user_id, &ctx->user);
}

static void me_done(tr_req_t *req, void *arg, int rc)
{
    caller_ctx_t *ctx = arg;
    if (rc == -EACCES)
        auth_respond_caller_gone(req);
    else if (rc != 0)
        tr_store_respond_error(req, rc, "me");
    else
        tr_respond_json(req, 200, auth_user_json(&ctx->user));
}

void auth_handle_me(tr_req_t *req)
{
    caller_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    auth_copy_id(ctx->user_id, req->identity.user_id);
    tr_store_run(req, 0, me_job, me_done, ctx);
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

typedef struct sessions_ctx {
    char user_id[TR_UUID_LEN + 1];
    char session_id[TR_UUID_LEN + 1]; /* the caller's, marked "current" */
    int64_t now;
    tr_page_t page;
    tr_page_result_t result;
} sessions_ctx_t;

static json_t *session_json(tr_rows_t *rows, void *arg)
{
    const sessions_ctx_t *ctx = arg;
    const char *sid = tr_rows_text(rows, 0);
    json_t *s = json_object();
    json_object_set_new(s, "id", json_string(sid));
    json_object_set_new(s, "created_at", tr_time_json(tr_rows_int(rows, 1)));
    json_object_set_new(s, "last_used_at", tr_time_json(tr_rows_int(rows, 2)));
    json_object_set_new(s, "expires_at", tr_time_json(tr_rows_int(rows, 3)));
    json_object_set_new(s, "user_agent", json_string(tr_rows_text(rows, 4)));
    json_object_set_new(s, "ip", json_string(tr_rows_text(rows, 5)));
    json_object_set_new(s, "current", json_boolean(strcmp(sid, ctx->session_id) == 0));
    return s;
}

static int sessions_job(tr_store_t *db, void *arg)
{
    sessions_ctx_t *ctx = arg;
    tr_rows_t *rows = NULL;
    int64_t fetch = (int64_t)ctx->page.limit + 1;
    int rc;
    /* Newest first; the cursor's key is the last id of the previous page. */
    if (ctx->page.after[0])
        rc = tr_store_query(db, &rows,
                            "SELECT id, created_at, last_used_at, expires_at, user_agent, ip "
                            "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND "
                            "expires_at > $2 AND id < $3 ORDER BY id DESC LIMIT $4",
                            "titi", ctx->user_id, ctx->now, ctx->page.after, fetch);
    else
        rc = tr_store_query(db, &rows,
                            "SELECT id, created_at, last_used_at, expires_at, user_agent, ip "
                            "FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND "
                            "expires_at > $2 ORDER BY id DESC LIMIT $3",
                            "tii", ctx->user_id, ctx->now, fetch);
    return tr_page_collect(rc, rows, &ctx->page, session_json, ctx, &ctx->result);
}

static void sessions_done(tr_req_t *req, void *arg, int rc)
{
    sessions_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_page_result_clear(&ctx->result);
        tr_store_respond_error(req, rc, "sessions");
        return;
    }
    tr_respond_page(req, &ctx->result);
}

void auth_handle_sessions_list(tr_req_t *req)
{
    sessions_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    if (!tr_page_from_query(req, &ctx->page, auth_page_key_ok)) return;
    auth_copy_id(ctx->user_id, req->identity.user_id);
    auth_copy_id(ctx->session_id, req->identity.session_id);
    ctx->now = tr_now_ms();
    tr_store_run(req, 0, sessions_job, sessions_done, ctx);
}

typedef struct session_revoke_ctx {
    char user_id[TR_UUID_LEN + 1];
    char *session_id; /* request arena */
    int64_t changes;
} session_revoke_ctx_t;

static int session_revoke_job(tr_store_t *db, void *arg)
{
    session_revoke_ctx_t *ctx = arg;
    int64_t now = tr_now_ms();
    ctx->changes = 0;
    /* Ownership is part of the update, so another user's session id looks
     * exactly like one that does not exist. */
    int rc = tr_store_exec(db, &ctx->changes,
                           "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 "
                           "AND revoked_at IS NULL AND expires_at > $1",
                           "itt", now, ctx->session_id, ctx->user_id);
    if (rc == 0 && ctx->changes == 1) rc = auth_session_revoke(db, ctx->session_id, now, NULL);
    return rc;
}

static void session_revoke_done(tr_req_t *req, void *arg, int rc)
{
    session_revoke_ctx_t *ctx = arg;
    if (rc != 0)
        tr_store_respond_error(req, rc, "revoke session");
    else if (ctx->changes != 1)
        tr_respond_error(req, TR_ERR_NOT_FOUND, "session not found", NULL);
    else
        tr_respond_json(req, 204, NULL);
}

void auth_handle_session_revoke(tr_req_t *req)
{
    session_revoke_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    auth_copy_id(ctx->user_id, req->identity.user_id);
    ctx->session_id = tr_req_strdup(req, tr_req_param(req, "id"));
    tr_store_run(req, TR_STORE_TX, session_revoke_job, session_revoke_done, ctx);
}

/* ---- password change ---------------------------------------------------------- */

typedef struct change_ctx {
    tr_req_t *req; /* for the password callbacks only; jobs never touch it */
    char user_id[TR_UUID_LEN + 1];
    char keep_session[TR_UUID_LEN + 1]; /* the caller's, "" for an API key */
    char *current_password;             /* request arena; wiped once handed on */
    char *new_password;
    char *encoded; /* the new hash */
    auth_user_t user;
} change_ctx_t;

static void change_wipe(change_ctx_t *ctx)
{
    sodium_memzero(ctx->current_password, strlen(ctx->current_password));
    sodium_memzero(ctx->new_password, strlen(ctx->new_password));
}

static int change_store_job(tr_store_t *db, void *arg)
{
    change_ctx_t *ctx = arg;
    int64_t now = tr_now_ms();
    int rc = tr_store_exec(db, NULL,
                           "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
                           "tit", ctx->encoded, now, ctx->user.id);
    if (rc == 0)
        rc = auth_sessions_revoke_all(db, ctx->user.id,
                                      ctx->keep_session[0] ? ctx->keep_session : NULL, now);
    return rc;
}

static void change_stored(tr_req_t *req, void *arg, int rc)
{
    (void)arg;
    if (rc != 0) {
        tr_store_respond_error(req, rc, "password change");
        return;
    }
    tr_counter_inc(auth_state_of(req)->m.password_changes, NULL);
    tr_respond_json(req, 204, NULL);
}

static void change_hashed(void *arg, int rc, const char *encoded)
{
    change_ctx_t *ctx = arg;
    if (rc != 0) {
        auth_respond_internal_error(ctx->req, "password change: hashing failed", rc);
        return;
    }
    ctx->encoded = tr_req_strdup(ctx->req, encoded);
    tr_store_run(ctx->req, TR_STORE_TX, change_store_job, change_stored, ctx);
}

static void change_verified(void *arg, bool match)
{
    change_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;
    int rc = -1;

    if (match)
        rc = tr_password_hash_async(req->worker->loop, ctx->new_password, strlen(ctx->new_password),
                                    &auth_state_of(req)->cfg.pwhash, change_hashed, ctx);
    change_wipe(ctx);
    if (!match) {
        tr_fields_t f;
        tr_fields_init(&f);
        tr_fields_add(&f, "current_password", "is incorrect");
        tr_fields_respond(&f, req);
    } else if (rc != 0) {
        auth_respond_internal_error(req, "password change: cannot queue hashing", rc);
    }
}

static int change_load_job(tr_store_t *db, void *arg)
{
    change_ctx_t *ctx = arg;
    return auth_caller_load(db, ctx->user_id, &ctx->user);
}

static void change_loaded(tr_req_t *req, void *arg, int rc)
{
    change_ctx_t *ctx = arg;
    int queued = -1;
    if (rc == 0)
        queued = tr_password_verify_async(req->worker->loop, ctx->user.password_hash,
                                          ctx->current_password, strlen(ctx->current_password),
                                          change_verified, ctx);
    if (queued == 0) {
        /* The check copied the current password; the new one is still
         * needed by change_verified. */
        sodium_memzero(ctx->current_password, strlen(ctx->current_password));
        return;
    }
    change_wipe(ctx);
    if (rc == -EACCES)
        auth_respond_caller_gone(req);
    else if (rc != 0)
        tr_store_respond_error(req, rc, "password change");
    else
        auth_respond_internal_error(req, "password change: cannot queue password check", queued);
}

void auth_handle_password_change(tr_req_t *req)
{
    change_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    const char *current = NULL, *fresh = NULL;
    tr_fields_t f;

    ctx->req = req;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        current = tr_field_string(&f, body, "current_password", true, 1, AUTH_PASSWORD_MAX);
        fresh =
            tr_field_string(&f, body, "new_password", true, AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;
    auth_copy_id(ctx->user_id, req->identity.user_id);
    auth_copy_id(ctx->keep_session, req->identity.session_id);
    ctx->current_password = tr_req_strdup(req, current);
    ctx->new_password = tr_req_strdup(req, fresh);
    tr_store_run(req, 0, change_load_job, change_loaded, ctx);
out:
    json_decref(body);
}

/* ---- forgot ------------------------------------------------------------------- */

/* Detached from the request (see the file comment): malloc'ed, freed by
 * forgot_finished. */
typedef struct forgot_ctx {
    const auth_state_t *st;
    char email[AUTH_EMAIL_MAX + 1];
    int64_t now;
    const char *result; /* written by the job: the metrics label */
} forgot_ctx_t;

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
    int rc = tr_store_exec(db, NULL,
                           "DELETE FROM password_resets WHERE user_id = $1 AND "
                           "(used_at IS NOT NULL OR expires_at <= $2)",
                           "ti", u->id, now);
    if (rc == 0) {
        rc = tr_store_query(db, &rows, "SELECT COUNT(*) FROM password_resets WHERE user_id = $1",
                            "t", u->id);
        rc = tr_rows_first_int(rc, rows, &pending);
    }
    if (rc != 0 || pending >= AUTH_MAX_PENDING_RESETS) return rc;

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
    sodium_memzero(payload, strlen(payload));
    free(payload);
    sodium_memzero(token, sizeof(token));
    return rc;
}

static int forgot_job(tr_store_t *db, void *arg)
{
    forgot_ctx_t *ctx = arg;
    auth_user_t u;
    bool issued = false;
    char key[AUTH_EMAIL_MAX + 8];
    ctx->result = "no_account";
    /* The count of pending tokens and the insert are one step per email. */
    snprintf(key, sizeof(key), "reset:%s", ctx->email);
    int rc = tr_store_lock(db, key);
    if (rc == 0) rc = auth_user_by_email(db, ctx->email, &u);
    if (rc == -ENOENT || (rc == 0 && u.banned)) return 0;
    if (rc == 0) rc = reset_token_issue(db, ctx->st, &u, ctx->now, &issued);
    ctx->result = issued ? "issued" : "limited";
    return rc;
}

static void forgot_finished(void *arg, int rc)
{
    forgot_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_log_error("password forgot: database error %d (no token issued)", rc);
        ctx->result = "error";
    }
    if (strcmp(ctx->result, "issued") == 0) tr_counter_inc(ctx->st->m.reset_requests, NULL);
    const char *labels[] = {ctx->result};
    tr_counter_inc(ctx->st->m.forgot_done, labels);
    free(ctx);
}

void auth_handle_password_forgot(tr_req_t *req)
{
    char email[AUTH_EMAIL_MAX + 1];
    tr_fields_t f;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) tr_field_email(&f, body, "email", true, email, sizeof(email));
    json_decref(body);
    if (tr_fields_respond(&f, req)) return;

    forgot_ctx_t *ctx = tr_xcalloc(1, sizeof(*ctx));
    tr_worker_t *worker = req->worker;
    ctx->st = auth_state_of(req);
    ctx->now = tr_now_ms();
    memcpy(ctx->email, email, sizeof(ctx->email));
    /* Answer first: nothing the lookup or the write costs can show in it. */
    tr_respond_json(req, 202,
                    json_pack("{s:s}", "message",
                              "if an account exists for this email, a reset token has been sent"));
    tr_store_run_detached(worker, TR_STORE_TX, forgot_job, forgot_finished, ctx);
}

/* ---- reset -------------------------------------------------------------------- */

typedef struct reset_ctx {
    tr_req_t *req;  /* for the password callback only; jobs never touch it */
    char *password; /* request arena; wiped once handed to the hash job */
    char *encoded;  /* the new hash */
    char token_hash[TR_SHA256_HEX];
    int64_t now;
    /* written by the jobs */
    char user_id[TR_UUID_LEN + 1];
    int64_t changes;
} reset_ctx_t;

static void respond_bad_reset_token(tr_req_t *req)
{
    tr_fields_t f;
    tr_fields_init(&f);
    tr_fields_add(&f, "token", "is invalid, expired or already used");
    tr_fields_respond(&f, req);
}

static int reset_store_job(tr_store_t *db, void *arg)
{
    reset_ctx_t *ctx = arg;
    int64_t now = tr_now_ms();
    ctx->changes = 0;
    /* Re-checked under the write lock: the token may have been used while
     * the new password was being hashed. */
    int rc = tr_store_exec(db, &ctx->changes,
                           "UPDATE password_resets SET used_at = $1 WHERE token_hash = $2 AND "
                           "used_at IS NULL AND expires_at > $1",
                           "it", now, ctx->token_hash);
    if (rc != 0 || ctx->changes != 1) return rc;
    rc = tr_store_exec(db, NULL,
                       "UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND "
                       "used_at IS NULL",
                       "it", now, ctx->user_id);
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
                           "tit", ctx->encoded, now, ctx->user_id);
    if (rc == 0) rc = auth_sessions_revoke_all(db, ctx->user_id, NULL, now);
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "DELETE FROM login_failures WHERE email = "
                           "(SELECT email FROM users WHERE id = $1)",
                           "t", ctx->user_id);
    return rc;
}

static void reset_stored(tr_req_t *req, void *arg, int rc)
{
    reset_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_store_respond_error(req, rc, "password reset");
        return;
    }
    if (ctx->changes != 1) {
        respond_bad_reset_token(req);
        return;
    }
    tr_counter_inc(auth_state_of(req)->m.resets, NULL);
    tr_respond_json(req, 204, NULL);
}

static void reset_hashed(void *arg, int rc, const char *encoded)
{
    reset_ctx_t *ctx = arg;
    if (rc != 0) {
        auth_respond_internal_error(ctx->req, "password reset: hashing failed", rc);
        return;
    }
    ctx->encoded = tr_req_strdup(ctx->req, encoded);
    tr_store_run(ctx->req, TR_STORE_TX, reset_store_job, reset_stored, ctx);
}

static int reset_check_job(tr_store_t *db, void *arg)
{
    reset_ctx_t *ctx = arg;
    tr_rows_t *rows = NULL;
    ctx->user_id[0] = '\0';
    int rc = tr_store_query(db, &rows,
                            "SELECT user_id FROM password_resets WHERE token_hash = $1 AND "
                            "used_at IS NULL AND expires_at > $2",
                            "ti", ctx->token_hash, ctx->now);
    if (rc != 0) return rc;
    if ((rc = tr_rows_next(rows)) == 1) {
        snprintf(ctx->user_id, sizeof(ctx->user_id), "%s", tr_rows_text(rows, 0));
        rc = 0;
    }
    tr_rows_free(rows);
    return rc;
}

static void reset_checked(tr_req_t *req, void *arg, int rc)
{
    reset_ctx_t *ctx = arg;
    size_t len = strlen(ctx->password);
    int queued = -1;
    if (rc == 0 && ctx->user_id[0])
        queued = tr_password_hash_async(req->worker->loop, ctx->password, len,
                                        &auth_state_of(req)->cfg.pwhash, reset_hashed, ctx);
    sodium_memzero(ctx->password, len);
    if (rc != 0)
        tr_store_respond_error(req, rc, "password reset");
    else if (!ctx->user_id[0])
        respond_bad_reset_token(req);
    else if (queued != 0)
        auth_respond_internal_error(req, "password reset: cannot queue hashing", queued);
}

void auth_handle_password_reset(tr_req_t *req)
{
    reset_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    const char *token = NULL, *password = NULL;
    tr_fields_t f;

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
    ctx->password = tr_req_strdup(req, password);
    ctx->now = tr_now_ms();
    tr_store_run(req, 0, reset_check_job, reset_checked, ctx);
out:
    json_decref(body);
}

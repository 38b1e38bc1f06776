/*
 * auth_tokens.c - getting and giving up tokens: register, login, refresh,
 * logout, and the JWKS document.
 *
 * PASSWORD WORK runs on the libuv thread pool (tr_password_*_async); the
 * handler stores what the callback needs in a context allocated in the
 * request's arena and the callback answers the request back on its loop.
 *
 * LOGIN LOCKOUT. An attempt is counted as a failure before the password is
 * checked (check and insert in one write transaction), and a successful
 * login deletes the email's failures. Counting up front means a burst of
 * parallel guesses cannot all slip past the check while the first ones are
 * still being hashed. Unknown emails are counted and verified (against the
 * dummy hash) exactly like known ones, so neither the status nor the timing
 * tells whether an account exists; a banned account is only revealed to a
 * caller who gave its correct password.
 *
 * REFRESH ROTATION. Each refresh token is single use. Exchanging one marks
 * it used and issues its successor in the same transaction; presenting a
 * used one again means two parties hold the chain, so the session is
 * revoked, which rejects the newest refresh token and every access token of
 * the session (auth.c checks the session on each request).
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/log.h"
#include "kit/validate.h"

/* ---- issuing -------------------------------------------------------------- */

/* Keeps a header value printable ASCII and bounded, for storing and listing. */
static void sanitize_header(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    for (; in && *in && n + 1 < outlen; in++)
        out[n++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
    out[n] = '\0';
}

static int refresh_token_insert(tr_store_t *db, const auth_state_t *st, const char *session_id,
                                int64_t now_ms, char token[TR_TOKEN_CHARS + 1],
                                char hash[TR_SHA256_HEX])
{
    tr_token_generate(token);
    tr_sha256_hex(token, TR_TOKEN_CHARS, hash);
    return tr_store_exec(db, NULL,
                         "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, "
                         "expires_at) VALUES ($1, $2, $3, $4)",
                         "ttii", hash, session_id, now_ms, now_ms + st->cfg.refresh_ttl_ms);
}

int auth_session_open(tr_store_t *db, const auth_state_t *st, tr_req_t *req, const char *user_id,
                      int64_t now_ms, auth_pair_t *pair)
{
    char user_agent[AUTH_USER_AGENT_MAX + 1], hash[TR_SHA256_HEX];
    sanitize_header(tr_req_header(req, "User-Agent"), user_agent, sizeof(user_agent));
    tr_uuid7(pair->session_id);
    int rc =
        tr_store_exec(db, NULL,
                      "INSERT INTO sessions (id, user_id, created_at, last_used_at, "
                      "expires_at, user_agent, ip) VALUES ($1, $2, $3, $3, $4, $5, $6)",
                      "ttiitt", pair->session_id, user_id, now_ms, now_ms + st->cfg.refresh_ttl_ms,
                      user_agent, req->client_ip ? req->client_ip : "");
    if (rc == 0)
        rc = refresh_token_insert(db, st, pair->session_id, now_ms, pair->refresh_token, hash);
    return rc;
}

void auth_respond_pair(tr_req_t *req, int status, const auth_user_t *u, const auth_pair_t *pair)
{
    const auth_state_t *st = auth_state_of(req);
    char jti[TR_UUID_LEN + 1];
    char *access = NULL;
    tr_uuid7(jti);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s}", "sub", u->id, "role", u->role, "sid",
                               pair->session_id, "jti", jti);
    int rc = tr_jwt_sign(st->jwt, claims, st->cfg.access_ttl_s, &access);
    json_decref(claims);
    if (rc != 0) {
        auth_respond_internal_error(req, "cannot sign access token", rc);
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, "user", auth_user_json(u));
    json_object_set_new(body, "access_token", json_string(access));
    json_object_set_new(body, "refresh_token", json_string(pair->refresh_token));
    json_object_set_new(body, "token_type", json_string("Bearer"));
    json_object_set_new(body, "expires_in", json_integer(st->cfg.access_ttl_s));
    free(access);
    tr_res_header(req, "Cache-Control", "no-store");
    tr_respond_json(req, status, body);
}

/* ---- register ------------------------------------------------------------- */

typedef struct register_ctx {
    tr_req_t *req;
    char email[AUTH_EMAIL_MAX + 1];
    char name[AUTH_NAME_MAX + 1];
} register_ctx_t;

static void register_hashed(void *arg, int rc, const char *encoded)
{
    register_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;
    auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    auth_user_t u = {.role = "user", .approved = true};
    auth_pair_t pair;

    if (rc != 0) {
        auth_respond_internal_error(req, "register: password hashing failed", rc);
        return;
    }
    tr_uuid7(u.id);
    memcpy(u.email, ctx->email, sizeof(u.email));
    memcpy(u.name, ctx->name, sizeof(u.name));
    snprintf(u.password_hash, sizeof(u.password_hash), "%s", encoded);
    u.created_at = u.updated_at = tr_now_ms();

    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = tr_store_exec(db, NULL,
                       "INSERT INTO users (id, email, name, password_hash, role, banned, approved, "
                       "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, 1, $6, $6)",
                       "ttttti", u.id, u.email, u.name, u.password_hash, u.role, u.created_at);
    if (rc == 0) rc = auth_session_open(db, st, req, u.id, u.created_at, &pair);
    if ((rc = auth_tx_finish(db, rc)) != 0) {
        if (rc == TR_STORE_ECONSTRAINT) {
            tr_respond_error(req, TR_ERR_ALREADY_EXISTS, "an account with this email exists", NULL);
            return;
        }
        goto fail;
    }
    tr_counter_inc(st->m.signups, NULL);
    auth_respond_pair(req, 201, &u, &pair);
    return;
fail:
    auth_respond_store_error(req, rc, "register");
}

void auth_handle_register(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    register_ctx_t *ctx = auth_req_zalloc(req, sizeof(*ctx));
    const char *password = NULL, *name = NULL;
    tr_fields_t f;
    int rc;

    ctx->req = req;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        tr_field_email(&f, body, "email", true, ctx->email, sizeof(ctx->email));
        password =
            tr_field_string(&f, body, "password", true, AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX);
        name = tr_field_string(&f, body, "name", false, 0, AUTH_NAME_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;
    snprintf(ctx->name, sizeof(ctx->name), "%s", name ? name : "");

    /* Fail a duplicate before spending a hash on it; the unique index still
     * decides races between concurrent registrations. */
    auth_user_t existing;
    rc = auth_user_by_email(tr_req_store(req), ctx->email, &existing);
    if (rc == 0) {
        tr_respond_error(req, TR_ERR_ALREADY_EXISTS, "an account with this email exists", NULL);
        goto out;
    }
    if (rc != -ENOENT) {
        auth_respond_store_error(req, rc, "register");
        goto out;
    }
    rc = tr_password_hash_async(req->worker->loop, password, strlen(password), &st->cfg.pwhash,
                                register_hashed, ctx);
    if (rc != 0) auth_respond_internal_error(req, "register: cannot queue password hashing", rc);
out:
    json_decref(body);
}

/* ---- login ---------------------------------------------------------------- */

typedef struct login_ctx {
    tr_req_t *req;
    bool known;
    char email[AUTH_EMAIL_MAX + 1];
    auth_user_t user;
} login_ctx_t;

static void count_login(const auth_state_t *st, const char *result)
{
    const char *labels[] = {result};
    tr_counter_inc(st->m.logins, labels);
}

/* Checks the lockout and, when the attempt may go on, records it as a
 * failure (see the file comment). *retry_after_s is 0 when it may. */
static int login_admit(tr_req_t *req, const char *email, int64_t now, int64_t *retry_after_s)
{
    const auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    int64_t max = st->cfg.login_max_failures, cutoff = now - st->cfg.login_window_ms;
    int64_t *recent = tr_req_alloc(req, (size_t)max * sizeof(int64_t));
    size_t n = 0;
    tr_rows_t *rows = NULL;
    int rc;

    *retry_after_s = 0;
    if ((rc = tr_store_begin(db)) != 0) return rc;
    rc = tr_store_query(db, &rows,
                        "SELECT at_ms FROM login_failures WHERE email = $1 AND at_ms > $2 "
                        "ORDER BY at_ms DESC LIMIT $3",
                        "tii", email, cutoff, max);
    if (rc == 0) {
        while ((rc = tr_rows_next(rows)) == 1 && (int64_t)n < max)
            recent[n++] = tr_rows_int(rows, 0);
        tr_rows_free(rows);
        if (rc > 0) rc = 0;
    }
    if (rc == 0)
        *retry_after_s = auth_lockout_retry_after_s(recent, n, now, st->cfg.login_window_ms, max);
    if (rc == 0 && *retry_after_s == 0) {
        rc = tr_store_exec(db, NULL, "INSERT INTO login_failures (email, at_ms) VALUES ($1, $2)",
                           "ti", email, now);
        if (rc == 0)
            rc = tr_store_exec(db, NULL, "DELETE FROM login_failures WHERE at_ms <= $1", "i",
                               cutoff);
    }
    return auth_tx_finish(db, rc);
}

static void login_verified(void *arg, bool match)
{
    login_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;
    auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    auth_pair_t pair;
    int rc;

    if (!match || !ctx->known) {
        count_login(st, "bad_credentials");
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "invalid email or password", NULL);
        return;
    }
    if (ctx->user.banned) {
        count_login(st, "banned");
        tr_respond_error(req, TR_ERR_PERMISSION_DENIED, "this account is banned", NULL);
        return;
    }
    int64_t now = tr_now_ms();
    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = tr_store_exec(db, NULL, "DELETE FROM login_failures WHERE email = $1", "t", ctx->email);
    /* Ended sessions are only kept to reject their tokens; a missing
     * session rejects them just as well, so each login sweeps its user's. */
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "DELETE FROM sessions WHERE user_id = $1 AND "
                           "(revoked_at IS NOT NULL OR expires_at <= $2)",
                           "ti", ctx->user.id, now);
    if (rc == 0) rc = auth_session_open(db, st, req, ctx->user.id, now, &pair);
    if ((rc = auth_tx_finish(db, rc)) != 0) goto fail;
    count_login(st, "success");
    auth_respond_pair(req, 200, &ctx->user, &pair);
    return;
fail:
    auth_respond_store_error(req, rc, "login");
}

void auth_handle_login(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    login_ctx_t *ctx = auth_req_zalloc(req, sizeof(*ctx));
    const char *password = NULL;
    int64_t retry_after = 0;
    tr_fields_t f;
    int rc;

    ctx->req = req;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        tr_field_email(&f, body, "email", true, ctx->email, sizeof(ctx->email));
        /* No minimum here: a password that is too short is simply wrong. */
        password = tr_field_string(&f, body, "password", true, 1, AUTH_PASSWORD_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;

    if ((rc = login_admit(req, ctx->email, tr_now_ms(), &retry_after)) != 0) {
        auth_respond_store_error(req, rc, "login");
        goto out;
    }
    if (retry_after > 0) {
        char value[24];
        snprintf(value, sizeof(value), "%lld", (long long)retry_after);
        tr_res_header(req, "Retry-After", value);
        count_login(st, "rate_limited");
        tr_respond_error(req, TR_ERR_RATE_LIMITED, "too many failed logins; try again later", NULL);
        goto out;
    }
    rc = auth_user_by_email(tr_req_store(req), ctx->email, &ctx->user);
    if (rc != 0 && rc != -ENOENT) {
        auth_respond_store_error(req, rc, "login");
        goto out;
    }
    ctx->known = rc == 0;
    rc = tr_password_verify_async(req->worker->loop,
                                  ctx->known ? ctx->user.password_hash : st->dummy_hash, password,
                                  strlen(password), login_verified, ctx);
    if (rc != 0) auth_respond_internal_error(req, "login: cannot queue password check", rc);
out:
    json_decref(body);
}

/* ---- refresh -------------------------------------------------------------- */

/* Within a transaction: exchanges the token for its successor. */
static int refresh_rotate(tr_req_t *req, const char *old_hash, int64_t now, auth_pair_t *pair)
{
    const auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    char new_hash[TR_SHA256_HEX];
    int64_t changed = 0;

    int rc = refresh_token_insert(db, st, pair->session_id, now, pair->refresh_token, new_hash);
    if (rc == 0)
        rc = tr_store_exec(db, &changed,
                           "UPDATE refresh_tokens SET used_at = $1, replaced_by = $2 "
                           "WHERE token_hash = $3 AND used_at IS NULL",
                           "itt", now, new_hash, old_hash);
    if (rc == 0 && changed != 1) rc = -EAGAIN;
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "UPDATE sessions SET last_used_at = $1, expires_at = $2 WHERE id = $3",
                           "iit", now, now + st->cfg.refresh_ttl_ms, pair->session_id);
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "DELETE FROM refresh_tokens WHERE session_id = $1 AND expires_at <= $2",
                           "ti", pair->session_id, now);
    return rc;
}

void auth_handle_refresh(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    tr_store_t *db = tr_req_store(req);
    char hash[TR_SHA256_HEX];
    auth_refresh_facts_t facts = {.now_ms = tr_now_ms()};
    auth_pair_t pair;
    auth_user_t u;
    tr_rows_t *rows = NULL;
    tr_fields_t f;
    int rc;

    memset(&pair, 0, sizeof(pair));
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *token = body ? tr_field_string(&f, body, "refresh_token", true, 1, 512) : NULL;
    if (tr_fields_respond(&f, req)) goto out;
    tr_sha256_hex(token, strlen(token), hash);

    if ((rc = tr_store_begin(db)) != 0) goto fail;
    rc = tr_store_query(db, &rows,
                        "SELECT " AUTH_USER_COLUMNS_U ", rt.session_id, rt.expires_at, "
                        "rt.used_at, s.revoked_at FROM refresh_tokens rt "
                        "JOIN sessions s ON s.id = rt.session_id "
                        "JOIN users u ON u.id = s.user_id WHERE rt.token_hash = $1",
                        "t", hash);
    if (rc == 0) {
        if ((rc = tr_rows_next(rows)) == 1) {
            const int c = AUTH_USER_NCOLUMNS;
            auth_user_from_row(rows, &u);
            facts.found = true;
            facts.banned = u.banned;
            snprintf(pair.session_id, sizeof(pair.session_id), "%s", tr_rows_text(rows, c));
            facts.expires_at_ms = tr_rows_int(rows, c + 1);
            facts.used = !tr_rows_is_null(rows, c + 2);
            facts.session_revoked = !tr_rows_is_null(rows, c + 3);
            rc = 0;
        }
        tr_rows_free(rows);
    }
    if (rc != 0) goto rollback;

    auth_refresh_verdict_t verdict = auth_refresh_decide(&facts);
    if (verdict == AUTH_REFRESH_ROTATE) {
        rc = refresh_rotate(req, hash, facts.now_ms, &pair);
        if (rc == -EAGAIN) {
            /* A twin request exchanged the same token first (possible on
             * engines without write-locking BEGIN): that is reuse too. */
            tr_store_rollback(db);
            verdict = AUTH_REFRESH_REUSED;
            if ((rc = tr_store_begin(db)) != 0) goto fail;
        }
    }
    if (verdict == AUTH_REFRESH_REUSED && rc == 0)
        rc = auth_session_revoke(db, pair.session_id, facts.now_ms, NULL);
    if (rc != 0) goto rollback;
    if (verdict == AUTH_REFRESH_ROTATE || verdict == AUTH_REFRESH_REUSED) {
        if ((rc = tr_store_commit(db)) != 0) goto rollback;
    } else {
        tr_store_rollback(db);
    }

    const char *labels[] = {auth_refresh_verdict_name(verdict)};
    tr_counter_inc(st->m.refreshes, labels);
    switch (verdict) {
    case AUTH_REFRESH_ROTATE:
        auth_respond_pair(req, 200, &u, &pair);
        break;
    case AUTH_REFRESH_REUSED:
        tr_counter_inc(st->m.refresh_reuse, NULL);
        tr_log_json(TR_LOG_WARN, "refresh token reuse: session revoked",
                    json_pack("{s:s, s:s, s:s}", "request_id", req->request_id, "session_id",
                              pair.session_id, "user_id", facts.found ? u.id : ""));
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED,
                         "refresh token already used; the session has been revoked", NULL);
        break;
    case AUTH_REFRESH_BANNED:
        tr_respond_error(req, TR_ERR_PERMISSION_DENIED, "this account is banned", NULL);
        break;
    case AUTH_REFRESH_EXPIRED:
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "refresh token expired", NULL);
        break;
    default:
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "invalid refresh token", NULL);
        break;
    }
    goto out;
rollback:
    tr_store_rollback(db);
fail:
    auth_respond_store_error(req, rc, "refresh");
out:
    json_decref(body);
}

/* ---- logout, JWKS ----------------------------------------------------------- */

void auth_handle_logout(tr_req_t *req)
{
    auth_state_t *st = auth_state_of(req);
    if (!req->identity.session_id[0]) {
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT,
                         "an API key has no session to log out of; revoke the key instead", NULL);
        return;
    }
    int rc = auth_session_revoke(tr_req_store(req), req->identity.session_id, tr_now_ms(), NULL);
    if (rc != 0) {
        auth_respond_store_error(req, rc, "logout");
        return;
    }
    tr_counter_inc(st->m.logouts, NULL);
    tr_respond_json(req, 204, NULL);
}

void auth_handle_jwks(tr_req_t *req)
{
    tr_res_header(req, "Cache-Control", "public, max-age=300");
    tr_respond_json(req, 200, tr_jwt_jwks(auth_state_of(req)->jwt));
}

/*
 * auth_tokens.c - getting and giving up tokens: register, login, refresh,
 * logout, and the JWKS document.
 *
 * FLOW. Each handler validates on the loop, fills a context in the
 * request's arena, and chains store jobs (kit/store_job.h) and password
 * work on the libuv thread pool (tr_password_*_async); the last step
 * answers. Login, for instance: admit (lockout check, failure recorded,
 * user loaded; one transaction) -> verify the password on the pool ->
 * open the session (one transaction) -> answer.
 *
 * LOGIN LOCKOUT (policy in auth_policy.c). An attempt is counted as a
 * failure of its (email, client address) before the password is checked
 * (check and insert in one write transaction), and a successful login
 * deletes that pair's failures only: the account-wide count keeps what
 * other clients did, so their backoff stands. Counting up front means a
 * burst of parallel guesses cannot all slip past the check while the first
 * ones are still being hashed. Unknown emails are counted and verified
 * (against the dummy hash) exactly like known ones, so neither the status
 * nor the timing tells whether an account exists; a banned account is only
 * revealed to a caller who gave its correct password.
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
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "kit/log.h"
#include "kit/store_job.h"
#include "kit/validate.h"

/* ---- issuing -------------------------------------------------------------- */

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

int auth_session_open(tr_store_t *db, const auth_state_t *st, const auth_client_t *client,
                      const char *user_id, int64_t now_ms, auth_pair_t *pair)
{
    char hash[TR_SHA256_HEX];
    tr_uuid7(pair->session_id);
    int rc = tr_store_exec(db, NULL,
                           "INSERT INTO sessions (id, user_id, created_at, last_used_at, "
                           "expires_at, user_agent, ip) VALUES ($1, $2, $3, $3, $4, $5, $6)",
                           "ttiitt", pair->session_id, user_id, now_ms,
                           now_ms + st->cfg.refresh_ttl_ms, client->user_agent, client->ip);
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
    tr_req_t *req; /* for the password callback only; jobs never touch it */
    const auth_state_t *st;
    auth_client_t client;
    auth_user_t user; /* email and name from the body; the rest once hashed */
    auth_pair_t pair;
} register_ctx_t;

static void respond_email_taken(tr_req_t *req)
{
    tr_respond_error(req, TR_ERR_ALREADY_EXISTS, "an account with this email exists", NULL);
}

static int register_insert_job(tr_store_t *db, void *arg)
{
    register_ctx_t *ctx = arg;
    auth_user_t *u = &ctx->user;
    int rc =
        tr_store_exec(db, NULL,
                      "INSERT INTO users (id, email, name, password_hash, role, banned, "
                      "approved, created_at, updated_at) "
                      "VALUES ($1, $2, $3, $4, $5, 0, 1, $6, $6)",
                      "ttttti", u->id, u->email, u->name, u->password_hash, u->role, u->created_at);
    if (rc == 0)
        rc = auth_session_open(db, ctx->st, &ctx->client, u->id, u->created_at, &ctx->pair);
    return rc;
}

static void register_done(tr_req_t *req, void *arg, int rc)
{
    register_ctx_t *ctx = arg;
    if (rc == TR_STORE_ECONSTRAINT) {
        respond_email_taken(req);
        return;
    }
    if (rc != 0) {
        tr_store_respond_error(req, rc, "register");
        return;
    }
    tr_counter_inc(ctx->st->m.signups, NULL);
    auth_respond_pair(req, 201, &ctx->user, &ctx->pair);
}

static void register_hashed(void *arg, int rc, const char *encoded)
{
    register_ctx_t *ctx = arg;
    auth_user_t *u = &ctx->user;
    if (rc != 0) {
        auth_respond_internal_error(ctx->req, "register: password hashing failed", rc);
        return;
    }
    tr_uuid7(u->id);
    snprintf(u->role, sizeof(u->role), "user");
    u->approved = true;
    snprintf(u->password_hash, sizeof(u->password_hash), "%s", encoded);
    u->created_at = u->updated_at = tr_now_ms();
    tr_store_run(ctx->req, TR_STORE_TX, register_insert_job, register_done, ctx);
}

typedef struct register_check {
    register_ctx_t *reg;
    char *password; /* request arena; wiped once handed to the hash job */
} register_check_t;

static int register_check_job(tr_store_t *db, void *arg)
{
    register_check_t *check = arg;
    auth_user_t existing;
    int rc = auth_user_by_email(db, check->reg->user.email, &existing);
    return rc == 0 ? -EEXIST : rc == -ENOENT ? 0 : rc;
}

static void register_checked(tr_req_t *req, void *arg, int rc)
{
    register_check_t *check = arg;
    size_t len = strlen(check->password);
    int queued = -1;
    if (rc == 0)
        queued = tr_password_hash_async(req->worker->loop, check->password, len,
                                        &check->reg->st->cfg.pwhash, register_hashed, check->reg);
    /* The job copied it; wipe it before any answer releases the arena. */
    sodium_memzero(check->password, len);
    if (rc == -EEXIST)
        respond_email_taken(req);
    else if (rc != 0)
        tr_store_respond_error(req, rc, "register");
    else if (queued != 0)
        auth_respond_internal_error(req, "register: cannot queue password hashing", queued);
}

void auth_handle_register(tr_req_t *req)
{
    register_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    register_check_t *check = tr_req_zalloc(req, sizeof(*check));
    const char *password = NULL, *name = NULL;
    tr_fields_t f;

    ctx->req = req;
    ctx->st = auth_state_of(req);
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        tr_field_email(&f, body, "email", true, ctx->user.email, sizeof(ctx->user.email));
        password =
            tr_field_string(&f, body, "password", true, AUTH_PASSWORD_MIN, AUTH_PASSWORD_MAX);
        name = tr_field_string(&f, body, "name", false, 0, AUTH_NAME_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;
    snprintf(ctx->user.name, sizeof(ctx->user.name), "%s", name ? name : "");
    auth_client_from_req(req, &ctx->client);
    check->reg = ctx;
    check->password = tr_req_strdup(req, password);

    /* Fail a duplicate before spending a hash on it; the unique index still
     * decides races between concurrent registrations. */
    tr_store_run(req, 0, register_check_job, register_checked, check);
out:
    json_decref(body);
}

/* ---- login ---------------------------------------------------------------- */

typedef struct login_ctx {
    tr_req_t *req; /* for the password callback only; jobs never touch it */
    const auth_state_t *st;
    auth_client_t client;
    char email[AUTH_EMAIL_MAX + 1];
    char *password; /* request arena; wiped once handed to the verify job */
    int64_t now;
    /* written by the jobs */
    int64_t retry_after_s;
    bool known;
    auth_user_t user;
    auth_pair_t pair;
} login_ctx_t;

static void count_login(const auth_state_t *st, const char *result)
{
    const char *labels[] = {result};
    tr_counter_inc(st->m.logins, labels);
}

/* The lockout facts of (email, client) (see auth_policy.c); recent has room
 * for login_max_failures times. */
static int login_facts_load(tr_store_t *db, const login_ctx_t *ctx, int64_t *recent,
                            auth_login_facts_t *facts)
{
    const auth_settings_t *cfg = &ctx->st->cfg;
    int64_t cutoff = ctx->now - cfg->login_window_ms;
    tr_rows_t *rows = NULL;
    size_t n = 0;

    memset(facts, 0, sizeof(*facts));
    facts->now_ms = ctx->now;
    facts->client_recent = recent;
    int rc = tr_store_query(db, &rows,
                            "SELECT at_ms FROM login_failures WHERE email = $1 AND client = $2 "
                            "AND at_ms > $3 ORDER BY at_ms DESC LIMIT $4",
                            "ttii", ctx->email, ctx->client.ip, cutoff, cfg->login_max_failures);
    if (rc != 0) return rc;
    while ((rc = tr_rows_next(rows)) == 1 && (int64_t)n < cfg->login_max_failures)
        recent[n++] = tr_rows_int(rows, 0);
    tr_rows_free(rows);
    if (rc < 0) return rc;
    facts->client_n = n;
    rc = tr_store_query(db, &rows,
                        "SELECT COUNT(*), MAX(at_ms) FROM login_failures "
                        "WHERE email = $1 AND at_ms > $2",
                        "ti", ctx->email, cutoff);
    if (rc != 0) return rc;
    if ((rc = tr_rows_next(rows)) == 1) {
        facts->account_n = tr_rows_int(rows, 0);
        facts->account_newest_ms = tr_rows_is_null(rows, 1) ? 0 : tr_rows_int(rows, 1);
        rc = 0;
    }
    tr_rows_free(rows);
    return rc;
}

/* In one transaction: checks the lockout and, when the attempt may go on,
 * records it as a failure (see the file comment) and loads the user. */
static int login_admit_job(tr_store_t *db, void *arg)
{
    login_ctx_t *ctx = arg;
    const auth_settings_t *cfg = &ctx->st->cfg;
    int64_t recent[1000]; /* login-max-failures is at most 1000 */
    auth_login_facts_t facts;

    char key[AUTH_EMAIL_MAX + 8];
    ctx->retry_after_s = 0;
    ctx->known = false;
    /* Concurrent guesses for one email count one after the other. */
    snprintf(key, sizeof(key), "login:%s", ctx->email);
    int rc = tr_store_lock(db, key);
    if (rc == 0) rc = login_facts_load(db, ctx, recent, &facts);
    if (rc != 0) return rc;
    ctx->retry_after_s = auth_login_retry_after_s(cfg, &facts);
    if (ctx->retry_after_s > 0) return 0;
    rc = tr_store_exec(db, NULL,
                       "INSERT INTO login_failures (email, client, at_ms) VALUES ($1, $2, $3)",
                       "tti", ctx->email, ctx->client.ip, ctx->now);
    if (rc == 0)
        rc = tr_store_exec(db, NULL, "DELETE FROM login_failures WHERE at_ms <= $1", "i",
                           ctx->now - cfg->login_window_ms);
    if (rc == 0) {
        rc = auth_user_by_email(db, ctx->email, &ctx->user);
        ctx->known = rc == 0;
        if (rc == -ENOENT) rc = 0;
    }
    return rc;
}

static int login_open_job(tr_store_t *db, void *arg)
{
    login_ctx_t *ctx = arg;
    int64_t now = tr_now_ms();
    int rc = tr_store_exec(db, NULL, "DELETE FROM login_failures WHERE email = $1 AND client = $2",
                           "tt", ctx->email, ctx->client.ip);
    /* Each login sweeps its user's ended sessions -- but a revoked one only
     * once no access token of it can be alive: until then the revocation
     * feed must still list it (to a service that starts, or to auth after a
     * restart), or its tokens would be accepted again. */
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "DELETE FROM sessions WHERE user_id = $1 AND "
                           "(revoked_at < $3 OR (revoked_at IS NULL AND expires_at <= $2))",
                           "tii", ctx->user.id, now,
                           now - ctx->st->cfg.access_ttl_s * 1000 - AUTH_REVOCATION_SKEW_MS);
    if (rc == 0) rc = auth_session_open(db, ctx->st, &ctx->client, ctx->user.id, now, &ctx->pair);
    return rc;
}

static void login_opened(tr_req_t *req, void *arg, int rc)
{
    login_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_store_respond_error(req, rc, "login");
        return;
    }
    count_login(ctx->st, "success");
    auth_respond_pair(req, 200, &ctx->user, &ctx->pair);
}

static void login_verified(void *arg, bool match)
{
    login_ctx_t *ctx = arg;
    tr_req_t *req = ctx->req;

    if (!match || !ctx->known) {
        count_login(ctx->st, "bad_credentials");
        tr_respond_error(req, TR_ERR_UNAUTHENTICATED, "invalid email or password", NULL);
        return;
    }
    if (ctx->user.banned) {
        count_login(ctx->st, "banned");
        tr_respond_error(req, TR_ERR_PERMISSION_DENIED, "this account is banned", NULL);
        return;
    }
    tr_store_run(req, TR_STORE_TX, login_open_job, login_opened, ctx);
}

static void login_admitted(tr_req_t *req, void *arg, int rc)
{
    login_ctx_t *ctx = arg;
    size_t len = strlen(ctx->password);
    int queued = -1;

    if (rc == 0 && ctx->retry_after_s == 0)
        queued = tr_password_verify_async(
            req->worker->loop, ctx->known ? ctx->user.password_hash : ctx->st->dummy_hash,
            ctx->password, len, login_verified, ctx);
    /* The job copied it; wipe it before any answer releases the arena. */
    sodium_memzero(ctx->password, len);
    if (rc != 0) {
        tr_store_respond_error(req, rc, "login");
    } else if (ctx->retry_after_s > 0) {
        char value[24];
        snprintf(value, sizeof(value), "%lld", (long long)ctx->retry_after_s);
        tr_res_header(req, "Retry-After", value);
        count_login(ctx->st, "rate_limited");
        tr_respond_error(req, TR_ERR_RATE_LIMITED, "too many failed logins; try again later", NULL);
    } else if (queued != 0) {
        auth_respond_internal_error(req, "login: cannot queue password check", queued);
    }
}

void auth_handle_login(tr_req_t *req)
{
    login_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    const char *password = NULL;
    tr_fields_t f;

    ctx->req = req;
    ctx->st = auth_state_of(req);
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    if (body) {
        tr_field_email(&f, body, "email", true, ctx->email, sizeof(ctx->email));
        /* No minimum here: a password that is too short is simply wrong. */
        password = tr_field_string(&f, body, "password", true, 1, AUTH_PASSWORD_MAX);
    }
    if (tr_fields_respond(&f, req)) goto out;
    ctx->password = tr_req_strdup(req, password);
    ctx->now = tr_now_ms();
    auth_client_from_req(req, &ctx->client);
    tr_store_run(req, TR_STORE_TX, login_admit_job, login_admitted, ctx);
out:
    json_decref(body);
}

/* ---- refresh -------------------------------------------------------------- */

typedef struct refresh_ctx {
    const auth_state_t *st;
    char hash[TR_SHA256_HEX];
    int64_t now;
    /* written by the job */
    auth_refresh_facts_t facts;
    auth_refresh_verdict_t verdict;
    auth_user_t user;
    auth_pair_t pair;
} refresh_ctx_t;

/* Exchanges the token for its successor. The old token is marked used
 * first: when that changes nothing, a twin request exchanged it in the
 * meantime (possible on engines without write-locking BEGIN), which is
 * reuse too, and nothing has been written yet. */
static int refresh_rotate(tr_store_t *db, refresh_ctx_t *ctx)
{
    const auth_state_t *st = ctx->st;
    auth_pair_t *pair = &ctx->pair;
    char new_hash[TR_SHA256_HEX];
    int64_t changed = 0, now = ctx->now;

    tr_token_generate(pair->refresh_token);
    tr_sha256_hex(pair->refresh_token, TR_TOKEN_CHARS, new_hash);
    int rc = tr_store_exec(db, &changed,
                           "UPDATE refresh_tokens SET used_at = $1, replaced_by = $2 "
                           "WHERE token_hash = $3 AND used_at IS NULL",
                           "itt", now, new_hash, ctx->hash);
    if (rc == 0 && changed != 1) {
        ctx->verdict = AUTH_REFRESH_REUSED;
        return 0;
    }
    if (rc == 0)
        rc = tr_store_exec(db, NULL,
                           "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, "
                           "expires_at) VALUES ($1, $2, $3, $4)",
                           "ttii", new_hash, pair->session_id, now, now + st->cfg.refresh_ttl_ms);
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

static int refresh_job(tr_store_t *db, void *arg)
{
    refresh_ctx_t *ctx = arg;
    tr_rows_t *rows = NULL;

    memset(&ctx->facts, 0, sizeof(ctx->facts));
    memset(&ctx->pair, 0, sizeof(ctx->pair));
    ctx->facts.now_ms = ctx->now;
    int rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS_U ", rt.session_id, rt.expires_at, "
                            "rt.used_at, s.revoked_at FROM refresh_tokens rt "
                            "JOIN sessions s ON s.id = rt.session_id "
                            "JOIN users u ON u.id = s.user_id WHERE rt.token_hash = $1",
                            "t", ctx->hash);
    if (rc != 0) return rc;
    if ((rc = tr_rows_next(rows)) == 1) {
        const int c = AUTH_USER_NCOLUMNS;
        auth_user_from_row(rows, &ctx->user);
        ctx->facts.found = true;
        ctx->facts.banned = ctx->user.banned;
        snprintf(ctx->pair.session_id, sizeof(ctx->pair.session_id), "%s", tr_rows_text(rows, c));
        ctx->facts.expires_at_ms = tr_rows_int(rows, c + 1);
        ctx->facts.used = !tr_rows_is_null(rows, c + 2);
        ctx->facts.session_revoked = !tr_rows_is_null(rows, c + 3);
        rc = 0;
    }
    tr_rows_free(rows);
    if (rc != 0) return rc;

    ctx->verdict = auth_refresh_decide(&ctx->facts);
    if (ctx->verdict == AUTH_REFRESH_ROTATE) rc = refresh_rotate(db, ctx);
    if (rc == 0 && ctx->verdict == AUTH_REFRESH_REUSED)
        rc = auth_session_revoke(db, ctx->pair.session_id, ctx->now, NULL);
    return rc;
}

static void refresh_done(tr_req_t *req, void *arg, int rc)
{
    refresh_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_store_respond_error(req, rc, "refresh");
        return;
    }
    const char *labels[] = {auth_refresh_verdict_name(ctx->verdict)};
    tr_counter_inc(ctx->st->m.refreshes, labels);
    switch (ctx->verdict) {
    case AUTH_REFRESH_ROTATE:
        auth_respond_pair(req, 200, &ctx->user, &ctx->pair);
        break;
    case AUTH_REFRESH_REUSED:
        tr_counter_inc(ctx->st->m.refresh_reuse, NULL);
        tr_log_json(TR_LOG_WARN, "refresh token reuse: session revoked",
                    json_pack("{s:s, s:s, s:s}", "request_id", req->request_id, "session_id",
                              ctx->pair.session_id, "user_id",
                              ctx->facts.found ? ctx->user.id : ""));
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
}

void auth_handle_refresh(tr_req_t *req)
{
    refresh_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    tr_fields_t f;

    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *token = body ? tr_field_string(&f, body, "refresh_token", true, 1, 512) : NULL;
    if (tr_fields_respond(&f, req)) goto out;
    ctx->st = auth_state_of(req);
    ctx->now = tr_now_ms();
    tr_sha256_hex(token, strlen(token), ctx->hash);
    tr_store_run(req, TR_STORE_TX, refresh_job, refresh_done, ctx);
out:
    json_decref(body);
}

/* ---- logout, JWKS ----------------------------------------------------------- */

typedef struct logout_ctx {
    const auth_state_t *st;
    char session_id[TR_UUID_LEN + 1];
} logout_ctx_t;

static int logout_job(tr_store_t *db, void *arg)
{
    logout_ctx_t *ctx = arg;
    return auth_session_revoke(db, ctx->session_id, tr_now_ms(), NULL);
}

static void logout_done(tr_req_t *req, void *arg, int rc)
{
    logout_ctx_t *ctx = arg;
    if (rc != 0) {
        tr_store_respond_error(req, rc, "logout");
        return;
    }
    tr_counter_inc(ctx->st->m.logouts, NULL);
    tr_respond_json(req, 204, NULL);
}

void auth_handle_logout(tr_req_t *req)
{
    if (!req->identity.session_id[0]) {
        tr_respond_error(req, TR_ERR_INVALID_ARGUMENT,
                         "an API key has no session to log out of; revoke the key instead", NULL);
        return;
    }
    logout_ctx_t *ctx = tr_req_zalloc(req, sizeof(*ctx));
    ctx->st = auth_state_of(req);
    auth_copy_id(ctx->session_id, req->identity.session_id);
    tr_store_run(req, TR_STORE_TX, logout_job, logout_done, ctx);
}

void auth_handle_jwks(tr_req_t *req)
{
    tr_res_header(req, "Cache-Control", "public, max-age=300");
    tr_respond_json(req, 200, tr_jwt_jwks(auth_state_of(req)->jwt));
}

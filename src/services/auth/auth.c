/*
 * auth.c - the auth service: its options, its route table, process set-up
 * and the authenticate hook the kit runs before every credentialed route.
 *
 * AUTHENTICATION. Two credentials are accepted:
 *   - "Authorization: Bearer <JWT>": the token is verified with the pinned
 *     algorithm (signature, exp, nbf, iss, aud) -- or found already verified
 *     in the worker's memo (kit/jwtcache.c) -- then one primary-key join
 *     checks that the session it names ("sid") still exists, is not revoked
 *     and belongs to "sub", and that the user is not banned. The role comes
 *     from that row, not from the token, so a role change or a ban acts on
 *     the very next request. This lookup is what makes logout, session
 *     revocation and refresh-token theft detection effective for access
 *     tokens that have not yet expired.
 *   - "X-API-Key: trk_...": the SHA-256 of the key is looked up among
 *     unrevoked keys of unbanned users; the caller acts as the key's owner
 *     with no session. last_used_at is written at most once a minute per key
 *     so a busy bot does not turn every read into a write.
 * Authorization wins when both are sent. Anything malformed is
 * TR_AUTH_INVALID (401), never "anonymous".
 *
 * Both paths are on the hot path of every authenticated request (the /me
 * target is 50k req/s on two cores), so each does one cached prepared query
 * that also reads the caller's whole user row; the row is left in
 * req->handler_data (see auth_caller()) so handlers need not read it again.
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kit/alloc.h"
#include "kit/jwtcache.h"
#include "kit/log.h"

#define API_KEY_TOUCH_MS     60000
#define AUTH_JWT_CACHE_SLOTS 256 /* verified access tokens remembered per worker */

static const tr_route_t auth_routes[] = {
    /* accounts and tokens (auth_tokens.c) */
    {"POST", "/api/auth/register", auth_handle_register, TR_AUTH_NONE, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/login", auth_handle_login, TR_AUTH_NONE, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/refresh", auth_handle_refresh, TR_AUTH_NONE, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/logout", auth_handle_logout, TR_AUTH_REQUIRED, NULL, AUTH_MAX_BODY},
    {"GET", "/api/auth/jwks.json", auth_handle_jwks, TR_AUTH_NONE, NULL, 0},
    /* the caller's own account (auth_account.c) */
    {"GET", "/api/auth/me", auth_handle_me, TR_AUTH_REQUIRED, NULL, 0},
    {"POST", "/api/auth/me", auth_handle_me, TR_AUTH_REQUIRED, NULL, AUTH_MAX_BODY},
    {"GET", "/api/auth/validate", auth_handle_validate, TR_AUTH_REQUIRED, NULL, 0},
    {"GET", "/api/auth/sessions", auth_handle_sessions_list, TR_AUTH_REQUIRED, NULL, 0},
    {"DELETE", "/api/auth/sessions/{id}", auth_handle_session_revoke, TR_AUTH_REQUIRED, NULL, 0},
    {"POST", "/api/auth/password/change", auth_handle_password_change, TR_AUTH_REQUIRED, NULL,
     AUTH_MAX_BODY},
    {"POST", "/api/auth/password/forgot", auth_handle_password_forgot, TR_AUTH_NONE, NULL,
     AUTH_MAX_BODY},
    {"POST", "/api/auth/password/reset", auth_handle_password_reset, TR_AUTH_NONE, NULL,
     AUTH_MAX_BODY},
    /* API keys (auth_apikeys.c) */
    {"POST", "/api/auth/api-keys", auth_handle_api_key_create, TR_AUTH_REQUIRED, NULL,
     AUTH_MAX_BODY},
    {"GET", "/api/auth/api-keys", auth_handle_api_keys_list, TR_AUTH_REQUIRED, NULL, 0},
    {"DELETE", "/api/auth/api-keys/{id}", auth_handle_api_key_revoke, TR_AUTH_REQUIRED, NULL, 0},
    /* administration (auth_admin.c) */
    {"GET", "/api/auth/users", auth_handle_users_list, TR_AUTH_REQUIRED, "admin", 0},
    {"PATCH", "/api/auth/users/{id}", auth_handle_user_patch, TR_AUTH_REQUIRED, "admin",
     AUTH_MAX_BODY},
    {"GET", "/api/auth/admin/outbox", auth_handle_outbox_list, TR_AUTH_REQUIRED, "admin", 0},
    /* for the gateway only; the kit checks the internal token (auth_edge.c) */
    {"GET", "/internal/revocations", auth_handle_internal_revocations, TR_AUTH_NONE, NULL, 0},
    {"POST", "/internal/api-keys/verify", auth_handle_internal_api_key_verify, TR_AUTH_NONE, NULL,
     AUTH_MAX_BODY},
};

static const tr_option_t auth_options[] = {
    {"jwt-alg", "HS256", "access-token algorithm: HS256, RS256 or ES256 (pinned)"},
    {"jwt-secret", NULL,
     "HS256 secret, at least 32 bytes (default: generated into <data>/secrets/jwt_secret)"},
    {"jwt-private-key", NULL, "PEM private key file for RS256/ES256 signing"},
    {"jwt-public-key", NULL, "PEM public key file (default: derived from the private key)"},
    {"jwt-issuer", "trellis", "iss claim set and required"},
    {"jwt-audience", "trellis", "aud claim set and required"},
    {"jwt-key-id", NULL, "kid header and JWKS key id"},
    {"access-ttl", "15m", "access token lifetime (whole seconds)"},
    {"refresh-ttl", "30d", "refresh token and idle session lifetime"},
    {"reset-ttl", "1h", "password reset token lifetime"},
    {"argon2-memory", "19m", "argon2id memory per hash (at least 19m)"},
    {"argon2-iterations", "2", "argon2id iterations (at least 2)"},
    {"login-max-failures", "5", "failed logins per email allowed within the window"},
    {"login-failure-window", "15m", "sliding window for counting failed logins"},
    {NULL, NULL, NULL},
};

/* ---- authenticate hook ---------------------------------------------------- */

static tr_auth_result_t reject(const auth_state_t *st, const char *method, const char **why,
                               const char *reason)
{
    const char *labels[] = {method};
    tr_counter_inc(st->m.auth_rejections, labels);
    *why = reason;
    return TR_AUTH_INVALID;
}

/* Fills the identity from the row and keeps the whole row for handlers. */
static void keep_caller(tr_req_t *req, tr_rows_t *rows)
{
    tr_identity_t *id = &req->identity;
    auth_user_t *u = tr_req_alloc(req, sizeof(*u));
    auth_user_from_row(rows, u);
    memcpy(id->user_id, u->id, sizeof(u->id));
    snprintf(id->role, sizeof(id->role), "%s", u->role);
    req->handler_data = u;
}

/* Copies a claim that must be a UUID into out. */
static bool claim_uuid(const json_t *claims, const char *name, char out[TR_UUID_LEN + 1])
{
    const char *v = json_string_value(json_object_get(claims, name));
    if (!v || strlen(v) != TR_UUID_LEN || !tr_uuid_valid(v)) return false;
    memcpy(out, v, TR_UUID_LEN + 1);
    return true;
}

/* Verifies the token (or finds it verified in this worker's cache) and
 * extracts sub, sid and exp. Returns NULL or the reason it is refused. */
static const char *verify_access_token(tr_req_t *req, const char *token, tr_jwt_cached_t *out)
{
    const auth_state_t *st = auth_state_of(req);
    tr_jwt_cache_t *cache = req->worker->state;
    int64_t now = (int64_t)time(NULL);
    size_t len = strlen(token);
    const char *reason = NULL;
    json_t *claims = NULL;

    if (cache && tr_jwt_cache_get(cache, token, len, now, out)) return NULL;
    if (tr_jwt_verify(st->jwt, token, now, &claims, &reason) != 0)
        return reason ? reason : "invalid token";
    const json_t *exp = json_object_get(claims, "exp");
    if (!claim_uuid(claims, "sub", out->sub) || !claim_uuid(claims, "sid", out->sid) ||
        !json_is_number(exp)) {
        reason = "token lacks sub, sid or exp";
    } else {
        out->exp = (int64_t)json_number_value(exp);
        if (cache) tr_jwt_cache_put(cache, token, len, out);
    }
    json_decref(claims);
    return reason;
}

static tr_auth_result_t authenticate_bearer(tr_req_t *req, const char *authorization,
                                            const char **why)
{
    const auth_state_t *st = auth_state_of(req);
    tr_identity_t *id = &req->identity;
    tr_rows_t *rows = NULL;
    tr_jwt_cached_t claims;
    const char *reason = NULL;
    tr_auth_result_t result = TR_AUTH_INVALID;

    const char *token = auth_bearer_token(authorization);
    if (!token) return reject(st, "jwt", why, "expected Authorization: Bearer <token>");
    if ((reason = verify_access_token(req, token, &claims)) != NULL)
        return reject(st, "jwt", why, reason);
    memcpy(id->session_id, claims.sid, sizeof(claims.sid));
    id->expires_at = claims.exp;

    tr_store_t *db = tr_req_store(req);
    int rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS_U ", s.revoked_at FROM sessions s "
                            "JOIN users u ON u.id = s.user_id WHERE s.id = $1",
                            "t", id->session_id);
    if (rc == 0) rc = tr_rows_next(rows);
    if (rc < 0) {
        tr_log_error("authenticate: session lookup failed (%d)", rc);
        result = reject(st, "jwt", why, "session could not be checked");
        goto out;
    }
    if (rc == 0 || strcmp(tr_rows_text(rows, 0), claims.sub) != 0 ||
        !tr_rows_is_null(rows, AUTH_USER_NCOLUMNS)) {
        result = reject(st, "jwt", why, "session revoked");
        goto out;
    }
    if (tr_rows_int(rows, AUTH_USER_COL_BANNED) != 0) {
        result = reject(st, "jwt", why, "account banned");
        goto out;
    }
    keep_caller(req, rows);
    memcpy(id->method, "jwt", 4);
    result = TR_AUTH_OK;
out:
    tr_rows_free(rows);
    if (result != TR_AUTH_OK) memset(id, 0, sizeof(*id));
    return result;
}

static tr_auth_result_t authenticate_api_key(tr_req_t *req, const char *key, const char **why)
{
    const auth_state_t *st = auth_state_of(req);
    tr_identity_t *id = &req->identity;
    tr_store_t *db = tr_req_store(req);
    tr_rows_t *rows = NULL;
    char hash[TR_SHA256_HEX], key_id[TR_UUID_LEN + 1];
    int64_t last_used = 0, now = tr_now_ms();

    if (!auth_api_key_well_formed(key)) return reject(st, "api_key", why, "invalid API key");
    tr_sha256_hex(key, strlen(key), hash);
    int rc = tr_store_query(db, &rows,
                            "SELECT " AUTH_USER_COLUMNS_U ", k.id, k.last_used_at FROM api_keys k "
                            "JOIN users u ON u.id = k.user_id "
                            "WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
                            "t", hash);
    if (rc == 0) rc = tr_rows_next(rows);
    if (rc <= 0 || tr_rows_int(rows, AUTH_USER_COL_BANNED) != 0) {
        bool banned = rc > 0;
        if (rc < 0) tr_log_error("authenticate: API key lookup failed (%d)", rc);
        tr_rows_free(rows);
        return reject(st, "api_key", why, banned ? "account banned" : "invalid API key");
    }
    keep_caller(req, rows);
    snprintf(key_id, sizeof(key_id), "%s", tr_rows_text(rows, AUTH_USER_NCOLUMNS));
    last_used = tr_rows_int(rows, AUTH_USER_NCOLUMNS + 1);
    tr_rows_free(rows);
    memcpy(id->method, "api_key", 8);
    id->session_id[0] = '\0';
    id->expires_at = 0;

    if (now - last_used >= API_KEY_TOUCH_MS &&
        tr_store_exec(db, NULL, "UPDATE api_keys SET last_used_at = $1 WHERE id = $2", "it", now,
                      key_id) != 0)
        tr_log_warn("authenticate: could not record API key use");
    return TR_AUTH_OK;
}

static tr_auth_result_t auth_authenticate(tr_req_t *req, const char **why)
{
    const char *authorization = tr_req_header(req, "Authorization");
    if (authorization) return authenticate_bearer(req, authorization, why);
    const char *key = tr_req_header(req, "X-API-Key");
    if (key) return authenticate_api_key(req, key, why);
    return TR_AUTH_NO_CREDENTIALS;
}

/* ---- init / close --------------------------------------------------------- */

static void register_counters(auth_state_t *st)
{
    st->m.signups = tr_counter_register("auth_signups_total", "Accounts registered.", NULL);
    st->m.logins = tr_counter_register("auth_logins_total", "Login attempts by outcome.", "result");
    st->m.refreshes =
        tr_counter_register("auth_refreshes_total", "Refresh attempts by outcome.", "result");
    st->m.refresh_reuse = tr_counter_register(
        "auth_refresh_token_reuse_total",
        "Already-used refresh tokens presented (sessions revoked as stolen).", NULL);
    st->m.logouts = tr_counter_register("auth_logouts_total", "Sessions ended by logout.", NULL);
    st->m.password_changes =
        tr_counter_register("auth_password_changes_total", "Passwords changed.", NULL);
    st->m.reset_requests = tr_counter_register("auth_password_reset_requests_total",
                                               "Password reset requests accepted.", NULL);
    st->m.resets = tr_counter_register("auth_password_resets_total",
                                       "Password resets completed with a valid token.", NULL);
    st->m.api_keys_created =
        tr_counter_register("auth_api_keys_created_total", "API keys created.", NULL);
    st->m.auth_rejections = tr_counter_register(
        "auth_credential_rejections_total", "Credentials refused by the authenticator.", "method");
    st->m.bans = tr_counter_register("auth_bans_total", "Users banned by an admin.", NULL);
}

static void auth_close(tr_service_t *svc)
{
    auth_state_t *st = svc->state;
    if (!st) return;
    tr_jwt_keys_free(st->jwt);
    free(st);
    svc->state = NULL;
}

/* Returns -EINVAL only for unusable option values, so that the runner exits
 * 2 for them and 1 for everything else (see tr_service_def_t.init). */
static int auth_init(tr_service_t *svc)
{
    char err[256] = "";
    char dummy[33];
    int rc;
    auth_state_t *st = tr_xcalloc(1, sizeof(*st));
    svc->state = st;

    if ((rc = auth_settings_load(svc->config, &st->cfg, err, sizeof(err))) != 0) {
        tr_log_error("%s", err);
        goto out;
    }
    /* Tokens are minted and checked by this process's clock: no leeway. */
    if ((rc = tr_jwt_keys_from_config(svc->config, svc->data_dir, true, 0, &st->jwt)) != 0)
        goto out;

    tr_random_bytes(dummy, sizeof(dummy) - 1);
    dummy[sizeof(dummy) - 1] = '\0';
    rc = tr_password_hash(dummy, sizeof(dummy) - 1, &st->cfg.pwhash, st->dummy_hash);
    if (rc != 0) {
        tr_log_error("argon2id with --argon2-memory %zu bytes failed (%d)", st->cfg.pwhash.memlimit,
                     rc);
        goto out;
    }
    register_counters(st);
out:
    if (rc != 0) auth_close(svc);
    return rc;
}

static int auth_worker_init(tr_worker_t *w)
{
    w->state = tr_jwt_cache_new(AUTH_JWT_CACHE_SLOTS);
    return 0;
}

static void auth_worker_close(tr_worker_t *w)
{
    tr_jwt_cache_free(w->state);
    w->state = NULL;
}

/* Name, port offset, workers and migrations: src/services/registry.c. */
const tr_service_def_t auth_service = {
    .routes = auth_routes,
    .nroutes = sizeof(auth_routes) / sizeof(auth_routes[0]),
    .options = auth_options,
    .init = auth_init,
    .close = auth_close,
    .worker_init = auth_worker_init,
    .worker_close = auth_worker_close,
    .authenticate = auth_authenticate,
};

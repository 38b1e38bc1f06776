/*
 * auth.c - the auth service: its options, its route table and process
 * set-up.
 *
 * WHO IS CALLING is decided by the kit (kit/authn.h), as in every service:
 * the access token is verified with the pinned algorithm and its session
 * looked up in the in-memory set of revoked sessions that the revocation
 * feed keeps current -- for auth too, from its own listener -- so an
 * authenticated request costs no database read. Logout, session revocation,
 * a password change, a ban and refresh-token reuse revoke sessions and so
 * act within a second. API keys are accepted on every credentialed route
 * (TR_AUTH_API_KEY); the kit asks /internal/api-keys/verify and caches the
 * answer briefly. Handlers that need the caller's user row load it in their
 * database job from req->identity.user_id.
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kit/alloc.h"
#include "kit/authn.h"
#include "kit/log.h"

static const tr_route_t auth_routes[] = {
    /* accounts and tokens (auth_tokens.c) */
    {"POST", "/api/auth/register", auth_handle_register, TR_AUTH_NONE, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/login", auth_handle_login, TR_AUTH_NONE, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/refresh", auth_handle_refresh, TR_AUTH_NONE, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/logout", auth_handle_logout, TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL,
     AUTH_MAX_BODY},
    {"GET", "/api/auth/jwks.json", auth_handle_jwks, TR_AUTH_NONE, NULL, 0},
    /* the caller's own account (auth_account.c) */
    {"GET", "/api/auth/me", auth_handle_me, TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL, 0},
    {"POST", "/api/auth/me", auth_handle_me, TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL,
     AUTH_MAX_BODY},
    {"GET", "/api/auth/validate", auth_handle_validate, TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL,
     0},
    {"GET", "/api/auth/sessions", auth_handle_sessions_list, TR_AUTH_REQUIRED | TR_AUTH_API_KEY,
     NULL, 0},
    {"DELETE", "/api/auth/sessions/{id}", auth_handle_session_revoke,
     TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL, 0},
    {"POST", "/api/auth/password/change", auth_handle_password_change,
     TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL, AUTH_MAX_BODY},
    {"POST", "/api/auth/password/forgot", auth_handle_password_forgot, TR_AUTH_NONE, NULL,
     AUTH_MAX_BODY},
    {"POST", "/api/auth/password/reset", auth_handle_password_reset, TR_AUTH_NONE, NULL,
     AUTH_MAX_BODY},
    /* API keys (auth_apikeys.c) */
    {"POST", "/api/auth/api-keys", auth_handle_api_key_create, TR_AUTH_REQUIRED | TR_AUTH_API_KEY,
     NULL, AUTH_MAX_BODY},
    {"GET", "/api/auth/api-keys", auth_handle_api_keys_list, TR_AUTH_REQUIRED | TR_AUTH_API_KEY,
     NULL, 0},
    {"DELETE", "/api/auth/api-keys/{id}", auth_handle_api_key_revoke,
     TR_AUTH_REQUIRED | TR_AUTH_API_KEY, NULL, 0},
    /* administration (auth_admin.c) */
    {"GET", "/api/auth/users", auth_handle_users_list, TR_AUTH_REQUIRED | TR_AUTH_API_KEY, "admin",
     0},
    {"PATCH", "/api/auth/users/{id}", auth_handle_user_patch, TR_AUTH_REQUIRED | TR_AUTH_API_KEY,
     "admin", AUTH_MAX_BODY},
    {"GET", "/api/auth/admin/outbox", auth_handle_outbox_list, TR_AUTH_REQUIRED | TR_AUTH_API_KEY,
     "admin", 0},
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
    {"login-max-failures", "5",
     "failed logins per account from one client address allowed within the window"},
    {"login-failure-window", "15m", "sliding window for counting failed logins"},
    {"login-account-max-failures", "20",
     "failed logins per account from all clients within the window before backoff"},
    {"login-backoff-base", "1s", "first delay once an account is past that ceiling (doubles)"},
    {"login-backoff-max", "1m", "longest delay between attempts on an account past the ceiling"},
    {NULL, NULL, NULL},
};

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
    st->m.forgot_done =
        tr_counter_register("auth_password_forgot_total",
                            "Password reset requests processed after their answer, by result "
                            "(issued, limited, no_account, error).",
                            "result");
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
    auth_revocations_bind(tr_service_revocations(svc), st->cfg.access_ttl_s * 1000);
out:
    if (rc != 0) auth_close(svc);
    return rc;
}

/* Name, port offset, workers and migrations: src/services/registry.c. */
const tr_service_def_t auth_service = {
    .routes = auth_routes,
    .nroutes = sizeof(auth_routes) / sizeof(auth_routes[0]),
    .options = auth_options,
    .init = auth_init,
    .close = auth_close,
    .authn_self = true,
};

/*
 * auth_internal.h - what the auth service's files share: settings, the
 * process-wide state, the user record, the handlers the route table names,
 * and the pure policy functions the unit tests exercise.
 *
 * Files:
 *   auth.c          options, route table, init/close
 *   auth_policy.c   pure decisions: roles, login lockout and backoff,
 *                   refresh rotation, token formats, option validation
 *   auth_common.c   user records, JSON shapes, the client of a request,
 *                   session revocation
 *   auth_tokens.c   register, login, refresh, logout, JWKS; issuing pairs
 *   auth_account.c  me, validate, sessions, password change/forgot/reset
 *   auth_admin.c    user administration and the outbox (API and CLI)
 *   auth_apikeys.c  API keys
 *   auth_edge.c     internal endpoints for the gateway: revocation feed,
 *                   API key verification
 *
 * DATABASE WORK. Every handler validates on the loop, copies what the work
 * needs (inputs, the caller's identity, the client's address and
 * User-Agent) into a context from tr_req_zalloc, and does its database work
 * in tr_store_run jobs (kit/store_job.h) that read and write only that
 * context; done answers. A job may run on a pool thread, so it never
 * touches the request, the metrics or the log's request fields. The
 * caller's user row is loaded by its id (req->identity.user_id) where a
 * handler needs it; a missing or banned row is 401. Password hashing runs
 * on the libuv thread pool between jobs. Only `trellis admin` (no loop)
 * calls the store directly.
 */
#ifndef TR_SERVICES_AUTH_INTERNAL_H
#define TR_SERVICES_AUTH_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kit/config.h"
#include "kit/crypto.h"
#include "kit/http.h"
#include "kit/ids.h"
#include "kit/jwt.h"
#include "kit/metrics.h"
#include "kit/paging.h"
#include "kit/service.h"
#include "kit/store.h"
#include "kit/store_job.h"
#include "services/auth/auth.h"

#define AUTH_EMAIL_MAX      254
#define AUTH_NAME_MAX       200
#define AUTH_PASSWORD_MIN   8
#define AUTH_PASSWORD_MAX   1024
#define AUTH_KEY_NAME_MAX   100
#define AUTH_USER_AGENT_MAX 256
#define AUTH_MAX_BODY       (16 * 1024)
#define AUTH_CLIENT_MAX     63 /* textual IPv4/IPv6 peer address */
/* Unused reset tokens a user may hold at once; more requests are accepted
 * (202) but create nothing, so /password/forgot cannot fill the outbox. */
#define AUTH_MAX_PENDING_RESETS 5

/* API keys are "trk_" + 43 base64url chars (256 random bits). The first
 * AUTH_API_KEY_PREFIX_LEN characters are kept in clear to tell keys apart. */
#define AUTH_API_KEY_TAG        "trk_"
#define AUTH_API_KEY_LEN        (4 + TR_TOKEN_CHARS)
#define AUTH_API_KEY_PREFIX_LEN 12

/* Validated option values. */
typedef struct auth_settings {
    int64_t access_ttl_s;
    int64_t refresh_ttl_ms;
    int64_t reset_ttl_ms;
    int64_t login_window_ms;
    int64_t login_max_failures;         /* per (account, client) in the window */
    int64_t login_account_max_failures; /* per account, from all clients, before backoff */
    int64_t login_backoff_base_ms;      /* first delay past the account ceiling */
    int64_t login_backoff_max_ms;       /* longest delay */
    tr_pwhash_params_t pwhash;
} auth_settings_t;

/* Process-wide state, set by init and read-only afterwards (counters are
 * updated atomically by the metrics registry). */
typedef struct auth_state {
    auth_settings_t cfg;
    tr_jwt_keys_t *jwt;
    /* A hash of a random password with the configured parameters: logins for
     * unknown emails verify against it so they cost what a real one does. */
    char dummy_hash[TR_PWHASH_MAX];
    struct {
        tr_counter_t *signups;
        tr_counter_t *logins;        /* {result} */
        tr_counter_t *refreshes;     /* {result} */
        tr_counter_t *refresh_reuse; /* theft signals */
        tr_counter_t *logouts;
        tr_counter_t *password_changes;
        tr_counter_t *reset_requests;
        tr_counter_t *forgot_done; /* {result}: background work of /password/forgot */
        tr_counter_t *resets;
        tr_counter_t *api_keys_created;
        tr_counter_t *auth_rejections; /* {method} */
        tr_counter_t *bans;
    } m;
} auth_state_t;

typedef struct auth_user {
    char id[TR_UUID_LEN + 1];
    char email[AUTH_EMAIL_MAX + 1];
    char name[AUTH_NAME_MAX + 1];
    char role[24];
    char password_hash[TR_PWHASH_MAX];
    bool banned;
    bool approved;
    int64_t created_at; /* unix ms */
    int64_t updated_at;
} auth_user_t;

/* A freshly issued session and refresh token (the access token is signed
 * when answering). */
typedef struct auth_pair {
    char session_id[TR_UUID_LEN + 1];
    char refresh_token[TR_TOKEN_CHARS + 1];
} auth_pair_t;

/* ---- auth_policy.c: pure functions ---------------------------------------- */

/* True for admin, moderator, verified_user and user. */
bool auth_role_valid(const char *role);

/* Parses and checks every auth option (durations, argon2 minimums, lockout).
 * Returns 0 or -EINVAL with a message naming the option in err. */
int auth_settings_load(const tr_config_t *cfg, auth_settings_t *out, char *err, size_t errlen);

/* Lockout of one (account, client) pair: recent holds the times (unix ms)
 * of the pair's failed logins inside the window, newest first, at most
 * max_failures of them. Returns 0 when another attempt is allowed, else the
 * seconds (>= 1, rounded up) until enough failures have left the window
 * for one to be. */
int64_t auth_lockout_retry_after_s(const int64_t *recent, size_t n, int64_t now_ms,
                                   int64_t window_ms, int64_t max_failures);

/* What the login lockout decides on (see auth_policy.c, LOCKOUT). */
typedef struct auth_login_facts {
    const int64_t *client_recent; /* this client's failures for the account in the
                                   * window, newest first, at most login_max_failures */
    size_t client_n;
    int64_t account_n;         /* the account's failures in the window, all clients */
    int64_t account_newest_ms; /* the newest of those (0 when none) */
    int64_t now_ms;
} auth_login_facts_t;

/* Account-wide backoff: 0 while account_n is below the ceiling, else the
 * seconds (>= 1, rounded up) until account_newest_ms + base * 2^(account_n -
 * ceiling), the delay capped at backoff_max; 0 once that time has come. */
int64_t auth_backoff_retry_after_s(const auth_settings_t *cfg, int64_t account_n,
                                   int64_t account_newest_ms, int64_t now_ms);

/* Whether a login attempt may go on: 0, or the seconds to answer in
 * Retry-After with 429 -- the larger of the pair's lockout and the
 * account's backoff. */
int64_t auth_login_retry_after_s(const auth_settings_t *cfg, const auth_login_facts_t *f);

typedef struct auth_refresh_facts {
    bool found;            /* the token hash is known */
    bool used;             /* it was already exchanged */
    bool session_revoked;  /* its session was revoked */
    bool banned;           /* its user is banned */
    int64_t expires_at_ms; /* the token's expiry */
    int64_t now_ms;
} auth_refresh_facts_t;

typedef enum auth_refresh_verdict {
    AUTH_REFRESH_ROTATE,  /* issue a new pair, mark this one used */
    AUTH_REFRESH_UNKNOWN, /* 401 */
    AUTH_REFRESH_REUSED,  /* 401 and revoke the whole session */
    AUTH_REFRESH_REVOKED, /* 401 */
    AUTH_REFRESH_EXPIRED, /* 401 */
    AUTH_REFRESH_BANNED   /* 403 */
} auth_refresh_verdict_t;

/* What to do with a presented refresh token. Reuse wins over every other
 * state: a used token is a theft signal whatever else holds. */
auth_refresh_verdict_t auth_refresh_decide(const auth_refresh_facts_t *facts);
/* The metrics label for a verdict. */
const char *auth_refresh_verdict_name(auth_refresh_verdict_t v);

/* The token of an "Authorization: Bearer <token>" value (scheme compared
 * case-insensitively), or NULL when the scheme differs or the token is
 * empty. */
const char *auth_bearer_token(const char *authorization);

/* Writes a fresh API key ("trk_" + 43 base64url chars) plus NUL. */
void auth_api_key_generate(char out[AUTH_API_KEY_LEN + 1]);
/* True when key has the shape auth_api_key_generate produces. */
bool auth_api_key_well_formed(const char *key);

/* ---- auth_common.c -------------------------------------------------------- */

static inline auth_state_t *auth_state_of(const tr_req_t *req)
{
    return (auth_state_t *)tr_req_service(req)->state;
}

/* The columns auth_user_from_row reads, in order: plain, and qualified
 * with the alias "u" for joins. Further columns of a join follow them. */
#define AUTH_USER_COLUMNS                                                                          \
    "id, email, name, password_hash, role, banned, approved, created_at, updated_at"
#define AUTH_USER_COLUMNS_U                                                                        \
    "u.id, u.email, u.name, u.password_hash, u.role, u.banned, u.approved, u.created_at, "         \
    "u.updated_at"
#define AUTH_USER_NCOLUMNS   9
#define AUTH_USER_COL_BANNED 5
void auth_user_from_row(tr_rows_t *rows, auth_user_t *u);

/* Loads a user by id or by normalised email. Returns 0, -ENOENT or a store
 * error. */
int auth_user_by_id(tr_store_t *db, const char *id, auth_user_t *u);
int auth_user_by_email(tr_store_t *db, const char *email, auth_user_t *u);
/* The public JSON of a user (never the hash). New reference. */
json_t *auth_user_json(const auth_user_t *u);

/* In a job: loads the caller's user row by id (copied from
 * req->identity.user_id on the loop). Returns 0, -EACCES when the row is
 * missing or banned (answer 401: the credential no longer stands for a
 * usable account), or a store error. */
int auth_caller_load(tr_store_t *db, const char *user_id, auth_user_t *u);

/* Logs "what (rc)" and answers 500, for failures a client cannot cause
 * (hashing, queueing work on the pool, signing). */
void auth_respond_internal_error(tr_req_t *req, const char *what, int rc);
/* Answers 401 for a caller whose account is gone or banned. */
void auth_respond_caller_gone(tr_req_t *req);

/* Copies an id of req->identity (a UUID, or "") into a context field of
 * TR_UUID_LEN + 1 bytes. */
#define auth_copy_id(dst, src) snprintf((dst), TR_UUID_LEN + 1, "%.*s", TR_UUID_LEN, (src))

/* Paging keys of auth's lists are row ids (UUIDv7): the kit's cursor check
 * (tr_page_from_query). */
bool auth_page_key_ok(const char *key);

/* Where a request came from, copied on the loop for jobs: the socket peer's
 * address and a printable, bounded User-Agent. */
typedef struct auth_client {
    char ip[AUTH_CLIENT_MAX + 1];
    char user_agent[AUTH_USER_AGENT_MAX + 1];
} auth_client_t;
void auth_client_from_req(const tr_req_t *req, auth_client_t *out);

/* Revokes one session and drops its refresh tokens. *changes (may be NULL)
 * is 1 when the session was live. */
/* Where auth_session_revoke and auth_sessions_revoke_all mark the sessions
 * they revoke, so this process refuses their tokens at once (the feed tells
 * every other process within a second). Bound once by init. */
#define AUTH_REVOCATION_SKEW_MS 60000
struct tr_revocations;
void auth_revocations_bind(struct tr_revocations *set, int64_t access_ttl_ms);
int auth_session_revoke(tr_store_t *db, const char *session_id, int64_t now_ms, int64_t *changes);
/* Revokes every live session of a user except except_sid (may be NULL). */
int auth_sessions_revoke_all(tr_store_t *db, const char *user_id, const char *except_sid,
                             int64_t now_ms);

/* ---- auth_tokens.c -------------------------------------------------------- */

/* Within the caller's transaction: creates a session for user_id (expiring
 * with the refresh TTL) and its first refresh token, recording client. */
int auth_session_open(tr_store_t *db, const auth_state_t *st, const auth_client_t *client,
                      const char *user_id, int64_t now_ms, auth_pair_t *pair);
/* Signs an access token for user and pair's session and answers status with
 * {user, access_token, refresh_token, token_type, expires_in}. */
void auth_respond_pair(tr_req_t *req, int status, const auth_user_t *u, const auth_pair_t *pair);

/* ---- handlers (the route table in auth.c) --------------------------------- */

void auth_handle_register(tr_req_t *req);
void auth_handle_login(tr_req_t *req);
void auth_handle_refresh(tr_req_t *req);
void auth_handle_logout(tr_req_t *req);
void auth_handle_jwks(tr_req_t *req);

void auth_handle_me(tr_req_t *req);
void auth_handle_validate(tr_req_t *req);
void auth_handle_sessions_list(tr_req_t *req);
void auth_handle_session_revoke(tr_req_t *req);
void auth_handle_password_change(tr_req_t *req);
void auth_handle_password_forgot(tr_req_t *req);
void auth_handle_password_reset(tr_req_t *req);

void auth_handle_users_list(tr_req_t *req);
void auth_handle_user_patch(tr_req_t *req);
void auth_handle_outbox_list(tr_req_t *req);

void auth_handle_api_key_create(tr_req_t *req);
void auth_handle_api_keys_list(tr_req_t *req);
void auth_handle_api_key_revoke(tr_req_t *req);

void auth_handle_internal_revocations(tr_req_t *req);
void auth_handle_internal_api_key_verify(tr_req_t *req);

#endif

/*
 * authn.h - who is calling: authentication done by the kit for every service.
 *
 * A service declares per route what it demands (router.h: TR_AUTH_NONE,
 * TR_AUTH_OPTIONAL or TR_AUTH_REQUIRED, optionally OR'ed with
 * TR_AUTH_API_KEY, and the roles allowed); the kit runner (service.c) calls
 * this module before the handler and fills req->identity. A service writes
 * no authentication code and never looks at X-User-* headers: those are
 * ignored by the kit, whoever sends them.
 *
 * CREDENTIALS.
 *   - "Authorization: Bearer <JWT>": verified with the algorithm pinned by
 *     --jwt-alg (signature, exp, nbf, iss, aud; kit/jwt.h) or found in the
 *     worker's cache of verified tokens (kit/jwtcache.h); then its session
 *     ("sid") is looked up in the set of revoked sessions (revocations.h),
 *     which the revocation feed (revfeed.c) keeps current from auth. The
 *     role is the token's "role" claim, so a role change reaches a service
 *     with the caller's next token; bans, logouts and password changes act
 *     within a second because they revoke sessions.
 *   - "X-API-Key: trk_...", on routes with TR_AUTH_API_KEY: asked of auth
 *     (POST /internal/api-keys/verify with the internal token) and
 *     remembered per worker, positive answers for --api-key-cache-ttl (10 s),
 *     negative ones for --api-key-negative-ttl (2 s); auth itself does not
 *     cache (it asks its own listener), so a key it revokes stops working
 *     there at once. The cache stores a keyed BLAKE2b digest of the key,
 *     never the key. Failures to reach auth
 *     are not cached: the request gets 503.
 * Authorization wins when both are sent. Anything malformed is refused
 * (401), never treated as anonymous.
 *
 * BEFORE THE FIRST FEED ANSWER a service does not know which sessions are
 * revoked: it answers 503 (Retry-After: 1) to credentialed requests, and its
 * /readyz says "revocations not loaded", so supervisors and the gateway
 * wait. Once loaded, an outage of auth keeps the last set in force (and
 * expiring), logs one warning, and tokens keep verifying.
 */
#ifndef TR_AUTHN_H
#define TR_AUTHN_H

#include <stdbool.h>

#include "kit/config.h"
#include "kit/http.h"

/* The options every service that authenticates declares (jwt-alg,
 * jwt-secret, jwt-public-key, jwt-issuer, jwt-audience, jwt-leeway,
 * auth-url, api-key-cache-ttl, api-key-negative-ttl). */
extern const tr_option_t tr_authn_options[];

/* ---- for services that route requests themselves (the gateway) -----------
 * A service whose def->authn is set gets the authenticator without
 * declaring credentialed routes, and calls these itself for the requests
 * its on_headers hook claims. Loop thread only. */

typedef enum tr_authn_result {
    TR_AUTHN_OK = 0,         /* req->identity filled, req->authenticated set */
    TR_AUTHN_NO_CREDENTIALS, /* none sent (or an API key where not accepted) */
    TR_AUTHN_INVALID,        /* refused: 401 with the reason */
    TR_AUTHN_UNAVAILABLE     /* cannot decide now (revocations not loaded yet,
                              * auth unreachable for an API key): 503 */
} tr_authn_result_t;

/* why is a short client-safe reason for INVALID and UNAVAILABLE (static
 * storage); arg is the caller's. */
typedef void (*tr_authn_done_fn)(tr_req_t *req, tr_authn_result_t result, const char *why,
                                 void *arg);
typedef struct tr_authn_lookup tr_authn_lookup_t;

/* Verifies an Authorization header value (bearer JWT, then the revocation
 * set) and fills req->identity on TR_AUTHN_OK. Synchronous. */
tr_authn_result_t tr_authn_bearer(tr_req_t *req, const char *authorization, const char **why);

/* Checks an X-API-Key. A cached (or malformed) key is decided at once: done
 * is called before this returns and *pending is NULL. Otherwise auth is
 * asked, *pending is set, and done comes later from the loop unless
 * tr_authn_cancel(*pending) is called first. */
void tr_authn_api_key(tr_req_t *req, const char *key, tr_authn_done_fn done, void *arg,
                      tr_authn_lookup_t **pending);
/* Abandons a pending lookup: done will not be called. */
void tr_authn_cancel(tr_authn_lookup_t *l);

/* Points this process's authenticator at auth's address "host:port"
 * (replacing --auth-url), e.g. when the gateway's routes table names auth.
 * Any thread. Returns 0, -ENOENT without an authenticator, or -EINVAL. */
struct tr_service;
int tr_service_set_auth(struct tr_service *svc, const char *instance);

/* The set of revoked sessions this process checks tokens against, for the
 * service that revokes sessions (auth): it merges its own revocations into
 * it at once (tr_revocations_merge), so its very next request refuses them
 * without waiting for the feed; every other process learns them from the
 * feed. NULL when the service has no credentialed route. Valid from the
 * service's init hook until it returns from tr_service_run. */
struct tr_service;
struct tr_revocations;
struct tr_revocations *tr_service_revocations(const struct tr_service *svc);

/* True when role is listed in roles, a comma-separated list ("admin,
 * moderator"); roles NULL allows every role, an empty role none. */
bool tr_role_allowed(const char *roles, const char *role);

/* OWNERSHIP. True when the caller may see a row owned by owner_id: it is
 * the owner, or its role is listed in roles (comma-separated; NULL: none).
 * Otherwise answers 404 not_found ("<what> not found") -- not 403, so that
 * ids of other people's rows cannot be probed -- and returns false:
 *     if (!tr_require_owner(req, post->author_id, "admin,moderator", "post")) return;
 */
bool tr_require_owner(tr_req_t *req, const char *owner_id, const char *roles, const char *what);

#endif

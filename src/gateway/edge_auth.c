/*
 * edge_auth.c - who is calling, decided at the edge.
 *
 * The gateway verifies access tokens exactly as auth does (kit/jwt.h: the
 * algorithm pinned by --jwt-alg, signature, exp, nbf, iss, aud), with the
 * same keys: the HS256 secret is the one auth uses (<data>/secrets/
 * jwt_secret, or --jwt-secret / TRELLIS_JWT_SECRET), or the RS256/ES256
 * public key file. A verified token is remembered per worker (kit/
 * jwtcache.h), so the cost per request is a SipHash and a compare.
 *
 * What auth checks with a database read per request -- is the session
 * still live -- the gateway checks against the set of revoked sessions it
 * keeps up to date from auth's feed (revocations.c); that is what makes
 * logout, "revoke this session", a password change and a ban reach the edge
 * within a second without a call to auth per request.
 *
 * The role comes from the token's "role" claim. A role change made by an
 * admin therefore reaches the edge with the next token (at most the access
 * TTL, 15 min by default); a ban is immediate because it revokes sessions.
 *
 * Credentials: "Authorization: Bearer <JWT>" wins when both it and an
 * X-API-Key are sent (as in auth). An X-API-Key is looked at only on routes
 * with "api_key": true and is checked asynchronously (apikeys.c).
 */
#include "gateway/edge_auth.h"
#include "gateway/revocations.h"
#include "gateway/state.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kit/config.h"
#include "kit/ids.h"
#include "kit/log.h"

#define JWT_CACHE_SLOTS 1024

int gw_edge_auth_init(gw_state_t *st)
{
    const tr_config_t *cfg = st->svc->config;
    int64_t leeway = 0;
    if (tr_config_duration_ms(cfg, "jwt-leeway", &leeway) != 0 || leeway < 0 || leeway > 300000) {
        tr_log_error("invalid --jwt-leeway (a duration up to 5m)");
        return -EINVAL;
    }
    /* The gateway only verifies: auth's public key (or shared secret) is enough. */
    return tr_jwt_keys_from_config(cfg, st->svc->data_dir, false, leeway / 1000, &st->jwt);
}

static gw_cred_t reject(gw_worker_t *gw, const char **why, const char *reason, const char *label)
{
    const char *labels[] = {label};
    tr_counter_inc(gw->st->m.auth_rejections, labels);
    *why = reason;
    return GW_CRED_INVALID;
}

static bool copy_uuid_claim(const json_t *claims, const char *name, char out[40])
{
    const char *v = json_string_value(json_object_get(claims, name));
    if (!v || strlen(v) != TR_UUID_LEN || !tr_uuid_valid(v)) return false;
    memcpy(out, v, TR_UUID_LEN + 1);
    return true;
}

/* The token of "Bearer <token>" (scheme case-insensitive), or NULL. */
static const char *bearer_token(const char *authorization)
{
    if (strncasecmp(authorization, "Bearer ", 7) != 0) return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    return *t ? t : NULL;
}

static gw_cred_t verify_bearer(gw_worker_t *gw, tr_req_t *req, const char *authorization,
                               const char **why)
{
    gw_state_t *st = gw->st;
    tr_jwt_cached_t c;
    const char *token = bearer_token(authorization);
    int64_t now = (int64_t)time(NULL);
    json_t *claims = NULL;
    const char *reason = NULL;

    if (!token) return reject(gw, why, "expected Authorization: Bearer <token>", "malformed");
    size_t len = strlen(token);
    if (!tr_jwt_cache_get(gw->jwt_cache, token, len, now, &c)) {
        if (tr_jwt_verify(st->jwt, token, now, &claims, &reason) != 0)
            return reject(gw, why, reason ? reason : "invalid token", "invalid_token");
        const json_t *exp = json_object_get(claims, "exp");
        const char *role = json_string_value(json_object_get(claims, "role"));
        memset(&c, 0, sizeof(c));
        if (!copy_uuid_claim(claims, "sub", c.sub) || !copy_uuid_claim(claims, "sid", c.sid) ||
            !json_is_number(exp)) {
            json_decref(claims);
            return reject(gw, why, "token lacks sub, sid or exp", "invalid_token");
        }
        c.exp = (int64_t)json_number_value(exp);
        snprintf(c.role, sizeof(c.role), "%s", role && strlen(role) < sizeof(c.role) ? role : "");
        json_decref(claims);
        tr_jwt_cache_put(gw->jwt_cache, token, len, &c);
    }
    if (gw_revocations_contains(st->revocations, gw->w->index, c.sid))
        return reject(gw, why, "session revoked", "revoked");

    tr_identity_t *id = &req->identity;
    memcpy(id->user_id, c.sub, sizeof(id->user_id));
    memcpy(id->session_id, c.sid, sizeof(id->session_id));
    snprintf(id->role, sizeof(id->role), "%s", c.role[0] ? c.role : "user");
    memcpy(id->method, "jwt", 4);
    id->expires_at = c.exp;
    req->authenticated = true;
    return GW_CRED_OK;
}

gw_cred_t gw_edge_authenticate(gw_worker_t *gw, tr_req_t *req, const gw_route_t *r,
                               const char **why)
{
    *why = NULL;
    if (r->auth == TR_AUTH_NONE) return GW_CRED_NONE;
    const char *authorization = tr_req_header(req, "Authorization");
    if (authorization) return verify_bearer(gw, req, authorization, why);
    if (r->api_key && tr_req_header(req, "X-API-Key")) return GW_CRED_API_KEY;
    return GW_CRED_NONE;
}

/*
 * authn.c - the kit authenticator (see authn.h): bearer tokens checked
 * against the revocation set, API keys asked of auth and cached, and the
 * one helper every caller of auth's /internal/ endpoints uses.
 *
 * AUTH'S ADDRESS is --auth-url (http://host:port). `trellis up` sets it for
 * every child from its port base. Auth itself asks its own listener (the
 * service runner tells this module the address once it listens), so every
 * service, auth included, learns revocations the same way. The kit talks to it through its own
 * upstream ("auth_internal") whose circuit breaker never opens and whose
 * instances are never ejected: the feed and the key checks retry on their
 * own schedule, and a breaker left open after auth restarts would delay
 * revocations past their one-second bound.
 */
#include "kit/authn_internal.h"
#include "kit/authcall.h"
#include "kit/revfeed.h"

#include <errno.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/ids.h"
#include "kit/jwt.h"
#include "kit/jwtcache.h"
#include "kit/log.h"
#include "kit/metrics.h"

#define JWT_CACHE_SLOTS   1024
#define API_KEY_SLOTS     1024 /* power of two */
#define API_KEY_MAX_LEN   256
#define API_KEY_TIMEOUT   2000
#define AUTH_URL_MAX_HOST 256

const tr_option_t tr_authn_options[] = {
    {"jwt-alg", "HS256", "access-token algorithm: HS256, RS256 or ES256 (pinned, as auth)"},
    {"jwt-secret", NULL, "HS256 secret (default: <data>/secrets/jwt_secret, shared with auth)"},
    {"jwt-public-key", NULL, "PEM public key file for RS256/ES256"},
    {"jwt-private-key", NULL, "PEM private key file (the public key is derived from it)"},
    {"jwt-issuer", "trellis", "iss claim required"},
    {"jwt-audience", "trellis", "aud claim required"},
    {"jwt-leeway", "0s", "clock skew allowed for exp and nbf"},
    {"auth-url", "http://127.0.0.1:8001", "auth service base URL (revocation feed, API keys)"},
    {"api-key-cache-ttl", "10s", "how long a valid API key is remembered"},
    {"api-key-negative-ttl", "2s", "how long a refused API key is remembered"},
    {NULL, NULL, NULL},
};

struct tr__authn {
    tr_jwt_keys_t *jwt;
    tr_revocations_t *revocations;
    _Atomic(tr_upstream_t *) auth; /* NULL until known (auth itself: after listening) */
    const char *internal_token;
    uint64_t api_key_ttl_ms;
    uint64_t api_key_negative_ttl_ms;
    _Atomic bool loaded;           /* the first feed answer was applied */
    tr_counter_t *rejections;      /* {reason} */
    tr_counter_t *api_key_lookups; /* {result} */
};

typedef struct api_key_slot {
    uint8_t digest[32];
    bool used;
    bool valid;
    char user_id[40];
    char role[24];
    char reason[48];
    uint64_t expires_ms; /* loop time */
} api_key_slot_t;

struct tr__authn_worker {
    tr__authn_t *a;
    tr_worker_t *w;
    tr_client_t *client;
    tr_jwt_cache_t *jwt_cache;
    unsigned char api_key_hash_key[crypto_generichash_KEYBYTES];
    api_key_slot_t *api_keys;   /* API_KEY_SLOTS */
    tr__auth_link_t link;       /* how this worker calls auth */
    tr__revfeed_t *feed;        /* worker 0 only */
    tr_authn_lookup_t *lookups; /* API-key checks waiting for auth */
};

/* ---- set-up ----------------------------------------------------------------- */

/* "http://host:port[/]" → "host:port". Returns 0 or -EINVAL. */
static int auth_instance(const char *url, char *out, size_t outlen)
{
    if (!url || strncmp(url, "http://", 7) != 0) return -EINVAL;
    const char *hp = url + 7;
    size_t n = strcspn(hp, "/");
    if (n == 0 || n >= outlen || (hp[n] == '/' && hp[n + 1] != '\0') || !memchr(hp, ':', n))
        return -EINVAL;
    memcpy(out, hp, n);
    out[n] = '\0';
    return 0;
}

static int duration_option(const tr_config_t *cfg, const char *name, int64_t max_ms, uint64_t *out)
{
    int64_t ms = 0;
    if (tr_config_duration_ms(cfg, name, &ms) != 0 || ms < 0 || ms > max_ms) {
        tr_log_error("invalid --%s (a duration up to %llds)", name, (long long)(max_ms / 1000));
        return -EINVAL;
    }
    *out = (uint64_t)ms;
    return 0;
}

int tr__authn_set_auth(tr__authn_t *a, const char *instance)
{
    tr_upstream_config_t uc;
    tr_upstream_t *up = NULL;
    const char *instances[] = {instance};
    tr_upstream_config_defaults(&uc);
    uc.name = "auth_internal";
    uc.instances = instances;
    uc.ninstances = 1;
    uc.outlier_consecutive_failures = 0;
    uc.health_path = NULL;
    uc.breaker.failure_threshold = 0;
    int rc = tr_upstream_new(&uc, &up);
    if (rc != 0) {
        tr_log_error("auth service address %s is not usable (%d)", instance, rc);
        return rc;
    }
    tr_upstream_t *old = atomic_exchange(&a->auth, up);
    if (old) tr_upstream_release(old);
    return 0;
}

int tr__authn_init(const tr_config_t *cfg, const char *data_dir, const char *internal_token,
                   bool self, int nworkers, tr__authn_t **out)
{
    char instance[AUTH_URL_MAX_HOST];
    uint64_t leeway = 0;
    int rc;
    tr__authn_t *a = tr_xcalloc(1, sizeof(*a));
    *out = NULL;

    if ((rc = duration_option(cfg, "jwt-leeway", 300000, &leeway)) != 0 ||
        (rc = duration_option(cfg, "api-key-cache-ttl", 3600000, &a->api_key_ttl_ms)) != 0 ||
        (rc = duration_option(cfg, "api-key-negative-ttl", 3600000, &a->api_key_negative_ttl_ms)) !=
            0)
        goto fail;
    if (!self && auth_instance(tr_config_get(cfg, "auth-url"), instance, sizeof(instance)) != 0) {
        tr_log_error("invalid --auth-url (expected http://host:port)");
        rc = -EINVAL;
        goto fail;
    }
    /* Verifying needs only auth's public key (or the shared secret). */
    if ((rc = tr_jwt_keys_from_config(cfg, data_dir, false, (int64_t)leeway / 1000, &a->jwt)) != 0)
        goto fail;

    if (!self && (rc = tr__authn_set_auth(a, instance)) != 0) {
        rc = -EINVAL;
        goto fail;
    }
    /* Auth asks itself at loopback cost: no cache, so a key it revokes
     * stops working there at once. */
    if (self) a->api_key_ttl_ms = a->api_key_negative_ttl_ms = 0;
    a->internal_token = internal_token;
    a->revocations = tr_revocations_new((size_t)nworkers);
    a->rejections = tr_counter_register("auth_credential_rejections_total",
                                        "Credentials refused by the kit authenticator.", "reason");
    a->api_key_lookups = tr_counter_register(
        "auth_api_key_lookups_total", "API key checks by outcome (hit, miss, error).", "result");
    *out = a;
    return 0;
fail:
    tr__authn_free(a);
    return rc;
}

void tr__authn_free(tr__authn_t *a)
{
    if (!a) return;
    tr_jwt_keys_free(a->jwt);
    tr_upstream_t *up = atomic_load(&a->auth);
    if (up) tr_upstream_release(up);
    tr_revocations_free(a->revocations);
    free(a);
}

tr_revocations_t *tr__authn_revocations(const tr__authn_t *a)
{
    return a->revocations;
}

bool tr__authn_ready(const tr__authn_t *a)
{
    return atomic_load(&a->loaded);
}

static void feed_loaded(void *arg)
{
    tr__authn_t *a = arg;
    atomic_store(&a->loaded, true);
}

tr__authn_worker_t *tr__authn_worker_start(tr__authn_t *a, tr_worker_t *w)
{
    tr__authn_worker_t *aw = tr_xcalloc(1, sizeof(*aw));
    aw->a = a;
    aw->w = w;
    tr_client_new(w->loop, &aw->client);
    aw->link = (tr__auth_link_t){aw->client, &a->auth, a->internal_token};
    aw->jwt_cache = tr_jwt_cache_new(JWT_CACHE_SLOTS);
    aw->api_keys = tr_xcalloc(API_KEY_SLOTS, sizeof(api_key_slot_t));
    tr_random_bytes(aw->api_key_hash_key, sizeof(aw->api_key_hash_key));
    if (w->index == 0)
        aw->feed = tr__revfeed_start(&aw->link, w->loop, a->revocations, feed_loaded, a);
    return aw;
}

void tr__authn_worker_stop(tr__authn_worker_t *aw)
{
    if (!aw) return;
    tr__revfeed_stop(aw->feed);
    /* Lookups still waiting: their requests are freed by the server. */
    while (aw->lookups)
        tr_authn_cancel(aw->lookups);
    tr_client_free(aw->client);
    tr_jwt_cache_free(aw->jwt_cache);
    sodium_memzero(aw->api_keys, API_KEY_SLOTS * sizeof(api_key_slot_t));
    free(aw->api_keys);
    free(aw);
}

/* ---- bearer tokens ---------------------------------------------------------- */

static tr_authn_result_t reject(tr__authn_t *a, const char **why, const char *reason,
                                const char *label)
{
    const char *labels[] = {label};
    tr_counter_inc(a->rejections, labels);
    *why = reason;
    return TR_AUTHN_INVALID;
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

static tr_authn_result_t verify_bearer(tr__authn_worker_t *aw, tr_req_t *req,
                                       const char *authorization, const char **why)
{
    tr__authn_t *a = aw->a;
    tr_jwt_cached_t c;
    const char *token = bearer_token(authorization);
    int64_t now = (int64_t)time(NULL);
    json_t *claims = NULL;
    const char *reason = NULL;

    if (!token) return reject(a, why, "expected Authorization: Bearer <token>", "malformed");
    size_t len = strlen(token);
    if (!tr_jwt_cache_get(aw->jwt_cache, token, len, now, &c)) {
        if (tr_jwt_verify(a->jwt, token, now, &claims, &reason) != 0)
            return reject(a, why, reason ? reason : "invalid token", "invalid_token");
        const json_t *exp = json_object_get(claims, "exp");
        const char *role = json_string_value(json_object_get(claims, "role"));
        memset(&c, 0, sizeof(c));
        if (!copy_uuid_claim(claims, "sub", c.sub) || !copy_uuid_claim(claims, "sid", c.sid) ||
            !json_is_number(exp)) {
            json_decref(claims);
            return reject(a, why, "token lacks sub, sid or exp", "invalid_token");
        }
        c.exp = (int64_t)json_number_value(exp);
        snprintf(c.role, sizeof(c.role), "%s", role && strlen(role) < sizeof(c.role) ? role : "");
        json_decref(claims);
        tr_jwt_cache_put(aw->jwt_cache, token, len, &c);
    }
    if (!atomic_load_explicit(&a->loaded, memory_order_acquire)) {
        *why = "revoked sessions not loaded yet, try again";
        return TR_AUTHN_UNAVAILABLE;
    }
    if (tr_revocations_contains(a->revocations, aw->w->index, c.sid))
        return reject(a, why, "session revoked", "revoked");

    tr_identity_t *id = &req->identity;
    memcpy(id->user_id, c.sub, sizeof(id->user_id));
    memcpy(id->session_id, c.sid, sizeof(id->session_id));
    snprintf(id->role, sizeof(id->role), "%s", c.role[0] ? c.role : "user");
    memcpy(id->method, "jwt", 4);
    id->expires_at = c.exp;
    req->authenticated = true;
    return TR_AUTHN_OK;
}

/* ---- API keys --------------------------------------------------------------- */

struct tr_authn_lookup {
    tr__authn_worker_t *aw;
    tr_req_t *req;
    tr_authn_done_fn done;
    void *arg;
    tr__auth_call_t *call;
    uint8_t digest[32];
    char *body;
    tr_authn_lookup_t *prev, *next; /* in aw->lookups */
};
typedef tr_authn_lookup_t key_lookup_t;

static void lookup_unlink_free(key_lookup_t *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        l->aw->lookups = l->next;
    if (l->next) l->next->prev = l->prev;
    free(l->body);
    free(l);
}

static api_key_slot_t *slot_for(tr__authn_worker_t *aw, const uint8_t digest[32])
{
    uint32_t h;
    memcpy(&h, digest, sizeof(h));
    return &aw->api_keys[h & (API_KEY_SLOTS - 1)];
}

static void count_lookup(tr__authn_t *a, const char *result)
{
    const char *labels[] = {result};
    tr_counter_inc(a->api_key_lookups, labels);
}

/* Answers from a cache slot. */
static void finish_from_slot(tr_req_t *req, const api_key_slot_t *s, tr_authn_done_fn done,
                             void *arg)
{
    if (!s->valid) {
        done(req, TR_AUTHN_INVALID, s->reason[0] ? s->reason : "invalid API key", arg);
        return;
    }
    tr_identity_t *id = &req->identity;
    memset(id, 0, sizeof(*id));
    memcpy(id->user_id, s->user_id, sizeof(id->user_id));
    memcpy(id->role, s->role, sizeof(id->role));
    memcpy(id->method, "api_key", 8);
    req->authenticated = true;
    done(req, TR_AUTHN_OK, NULL, arg);
}

/* Stores auth's answer in a slot. Returns the slot, or NULL when the answer
 * is not what auth sends. */
static api_key_slot_t *remember(key_lookup_t *l, json_t *doc)
{
    json_t *valid = json_object_get(doc, "valid");
    if (!json_is_boolean(valid)) return NULL;
    tr__authn_t *a = l->aw->a;
    api_key_slot_t s = {.used = true, .valid = json_is_true(valid)};
    memcpy(s.digest, l->digest, sizeof(s.digest));
    uint64_t now = uv_now(l->aw->w->loop);
    if (s.valid) {
        const char *user = json_string_value(json_object_get(doc, "user_id"));
        const char *role = json_string_value(json_object_get(doc, "role"));
        if (!user || !role || strlen(user) >= sizeof(s.user_id) || strlen(role) >= sizeof(s.role))
            return NULL;
        memcpy(s.user_id, user, strlen(user) + 1);
        memcpy(s.role, role, strlen(role) + 1);
        s.expires_ms = now + a->api_key_ttl_ms;
    } else {
        const char *reason = json_string_value(json_object_get(doc, "reason"));
        snprintf(s.reason, sizeof(s.reason), "%s", reason ? reason : "invalid API key");
        s.expires_ms = now + a->api_key_negative_ttl_ms;
    }
    api_key_slot_t *slot = slot_for(l->aw, l->digest);
    *slot = s;
    return slot;
}

static void key_answered(void *arg, int err, int status, json_t *doc)
{
    key_lookup_t *l = arg;
    api_key_slot_t *s = NULL;
    tr_req_t *req = l->req;
    tr_authn_done_fn done = l->done;
    void *done_arg = l->arg;
    if (err == 0 && status == 200) s = remember(l, doc);
    if (!s && err == 0)
        tr_log_warn("API key check: unexpected answer from auth (status %d)", status);
    if (!s) count_lookup(l->aw->a, "error");
    /* The slot may be reused by the callback's own lookups: copy first. */
    api_key_slot_t copy;
    if (s) copy = *s;
    lookup_unlink_free(l);
    if (!s)
        done(req, TR_AUTHN_UNAVAILABLE, "API keys cannot be checked right now", done_arg);
    else
        finish_from_slot(req, &copy, done, done_arg);
}

static void check_api_key(tr__authn_worker_t *aw, tr_req_t *req, const char *key,
                          tr_authn_done_fn done, void *arg, tr_authn_lookup_t **pending)
{
    tr__authn_t *a = aw->a;
    uint8_t digest[32];
    size_t len = strlen(key);
    if (pending) *pending = NULL;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] <= 0x20 || (unsigned char)key[i] >= 0x7f) len = 0;
    if (len == 0 || len > API_KEY_MAX_LEN) {
        const char *why = NULL;
        reject(a, &why, "invalid API key", "malformed");
        done(req, TR_AUTHN_INVALID, why, arg);
        return;
    }
    crypto_generichash(digest, sizeof(digest), (const unsigned char *)key, len,
                       aw->api_key_hash_key, sizeof(aw->api_key_hash_key));
    api_key_slot_t *s = slot_for(aw, digest);
    if (s->used && s->expires_ms > uv_now(aw->w->loop) &&
        sodium_memcmp(s->digest, digest, sizeof(digest)) == 0) {
        count_lookup(a, "hit");
        api_key_slot_t copy = *s;
        finish_from_slot(req, &copy, done, arg);
        return;
    }
    count_lookup(a, "miss");
    key_lookup_t *l = tr_xcalloc(1, sizeof(*l));
    l->aw = aw;
    l->req = req;
    l->done = done;
    l->arg = arg;
    memcpy(l->digest, digest, sizeof(digest));
    json_t *body = json_pack("{s:s%}", "key", key, len);
    l->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    int rc = tr__auth_call(&aw->link, "POST", "/internal/api-keys/verify", l->body, API_KEY_TIMEOUT,
                           key_answered, l, &l->call);
    if (rc != 0) {
        count_lookup(a, "error");
        free(l->body);
        free(l);
        done(req, TR_AUTHN_UNAVAILABLE, "API keys cannot be checked right now", arg);
        return;
    }
    l->next = aw->lookups;
    if (l->next) l->next->prev = l;
    aw->lookups = l;
    if (pending) *pending = l;
}

void tr__authn_authenticate(tr__authn_worker_t *aw, tr_req_t *req, bool accept_api_key,
                            tr_authn_done_fn done, void *arg)
{
    const char *why = NULL;
    const char *authorization = tr_req_header(req, "Authorization");
    if (authorization) {
        tr_authn_result_t r = verify_bearer(aw, req, authorization, &why);
        done(req, r, why, arg);
        return;
    }
    const char *key = accept_api_key ? tr_req_header(req, "X-API-Key") : NULL;
    if (key) {
        /* No cancel on client disconnect: the lookup ends within its
         * timeout and the answer is then discarded (http.h). */
        check_api_key(aw, req, key, done, arg, NULL);
        return;
    }
    done(req, TR_AUTHN_NO_CREDENTIALS, NULL, arg);
}

tr_authn_result_t tr__authn_bearer(tr__authn_worker_t *aw, tr_req_t *req, const char *authorization,
                                   const char **why)
{
    *why = NULL;
    return verify_bearer(aw, req, authorization, why);
}

void tr__authn_api_key(tr__authn_worker_t *aw, tr_req_t *req, const char *key,
                       tr_authn_done_fn done, void *arg, tr_authn_lookup_t **pending)
{
    check_api_key(aw, req, key, done, arg, pending);
}

void tr_authn_cancel(tr_authn_lookup_t *l)
{
    if (!l) return;
    tr__auth_call_cancel(l->call);
    lookup_unlink_free(l);
}

/* ---- roles and ownership ----------------------------------------------------- */

bool tr_role_allowed(const char *roles, const char *role)
{
    size_t rlen = strlen(role);
    if (!roles) return true;
    if (rlen == 0) return false;
    for (const char *p = roles; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == rlen && memcmp(p, role, len) == 0) return true;
        if (!comma) break;
        p = comma + 1;
    }
    return false;
}

bool tr_require_owner(tr_req_t *req, const char *owner_id, const char *roles, const char *what)
{
    if (req->authenticated) {
        if (owner_id && strcmp(owner_id, req->identity.user_id) == 0) return true;
        if (roles && tr_role_allowed(roles, req->identity.role)) return true;
    }
    char message[128];
    snprintf(message, sizeof(message), "%s not found", what ? what : "resource");
    tr_respond_error(req, TR_ERR_NOT_FOUND, message, NULL);
    return false;
}

/*
 * apikeys.c - X-API-Key at the edge: asked of auth (POST
 * /internal/api-keys/verify with the internal token), remembered briefly.
 *
 * Each worker has its own cache (no lock): a direct-mapped table indexed by
 * a keyed BLAKE2b digest of the API key, which is also what a slot stores --
 * never the key itself. A positive answer is kept for --api-key-cache-ttl
 * (10 s), a negative one for --api-key-negative-ttl (2 s), so a revoked key
 * or a banned owner stops working at the edge within the positive TTL, and
 * a client guessing keys costs auth at most one lookup per key and worker
 * every 2 s. Failures to reach auth are not cached: the request gets 503.
 */
#include "gateway/apikeys.h"
#include "gateway/state.h"
#include "gateway/table.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/ids.h"
#include "kit/log.h"

#define SLOTS          1024 /* power of two */
#define MAX_KEY_LEN    256
#define MAX_ANSWER     4096
#define LOOKUP_TIMEOUT 2000

typedef struct slot {
    uint8_t digest[32];
    bool used;
    int status; /* 0 valid, -EACCES refused */
    gw_api_key_identity_t id;
    char reason[48];
    uint64_t expires_ms; /* loop time */
} slot_t;

struct gw_apikey_cache {
    unsigned char key[crypto_generichash_KEYBYTES];
    slot_t slots[SLOTS];
};

struct gw_apikey_lookup {
    gw_worker_t *gw;
    gw_apikey_cb cb;
    void *arg;
    tr_client_req_t *creq;
    uint8_t digest[32];
    char *request_body;
    tr_buf_t answer;
    int status;
};

gw_apikey_cache_t *gw_apikey_cache_new(void)
{
    gw_apikey_cache_t *c = tr_xcalloc(1, sizeof(*c));
    tr_random_bytes(c->key, sizeof(c->key));
    return c;
}

void gw_apikey_cache_free(gw_apikey_cache_t *c)
{
    if (c) sodium_memzero(c, sizeof(*c));
    free(c);
}

static slot_t *slot_for(gw_apikey_cache_t *c, const uint8_t digest[32])
{
    uint32_t h;
    memcpy(&h, digest, sizeof(h));
    return &c->slots[h & (SLOTS - 1)];
}

static void count(gw_worker_t *gw, const char *result)
{
    const char *labels[] = {result};
    tr_counter_inc(gw->st->m.api_key_lookups, labels);
}

static void lookup_free(gw_apikey_lookup_t *l)
{
    free(l->request_body);
    tr_buf_free(&l->answer);
    free(l);
}

/* Reads auth's answer into a cache slot. Returns 0 or -EPROTO. */
static int remember(gw_apikey_lookup_t *l, slot_t **out)
{
    json_error_t jerr;
    json_t *doc = l->status == 200 && l->answer.data
                      ? json_loadb(l->answer.data, l->answer.len, 0, &jerr)
                      : NULL;
    json_t *valid = json_object_get(doc, "valid");
    int rc = 0;
    if (!json_is_boolean(valid)) {
        rc = -EPROTO;
        goto out;
    }
    gw_state_t *st = l->gw->st;
    slot_t *s = slot_for(l->gw->api_keys, l->digest);
    memset(s, 0, sizeof(*s));
    memcpy(s->digest, l->digest, sizeof(s->digest));
    s->used = true;
    uint64_t now = uv_now(l->gw->w->loop);
    if (json_is_true(valid)) {
        const char *user = json_string_value(json_object_get(doc, "user_id"));
        const char *role = json_string_value(json_object_get(doc, "role"));
        if (!user || !role || strlen(user) >= sizeof(s->id.user_id) ||
            strlen(role) >= sizeof(s->id.role)) {
            s->used = false;
            rc = -EPROTO;
            goto out;
        }
        memcpy(s->id.user_id, user, strlen(user) + 1);
        memcpy(s->id.role, role, strlen(role) + 1);
        s->expires_ms = now + st->api_key_ttl_ms;
    } else {
        const char *reason = json_string_value(json_object_get(doc, "reason"));
        s->status = -EACCES;
        snprintf(s->reason, sizeof(s->reason), "%s", reason ? reason : "invalid API key");
        s->expires_ms = now + st->api_key_negative_ttl_ms;
    }
    *out = s;
out:
    json_decref(doc);
    return rc;
}

static void finish(gw_apikey_lookup_t *l, int err)
{
    slot_t *s = NULL;
    gw_apikey_cb cb = l->cb;
    void *arg = l->arg;
    l->creq = NULL;
    if (err == 0 && remember(l, &s) != 0) {
        tr_log_warn("API key check: unexpected answer from auth (status %d)", l->status);
        err = -EPROTO;
    }
    if (err != 0) {
        count(l->gw, "error");
        lookup_free(l);
        cb(arg, err, NULL, NULL);
        return;
    }
    /* The slot may be reused by the callback's own lookups: copy first. */
    slot_t copy = *s;
    lookup_free(l);
    cb(arg, copy.status, &copy.id, copy.reason);
}

static void on_head(tr_client_req_t *r, int status, const tr_header_t *h, size_t n, void *data)
{
    (void)r;
    (void)h;
    (void)n;
    ((gw_apikey_lookup_t *)data)->status = status;
}

static void on_body(tr_client_req_t *r, const char *chunk, size_t len, void *data)
{
    gw_apikey_lookup_t *l = data;
    if (tr_buf_append(&l->answer, chunk, len) != 0) {
        tr_client_cancel(r);
        finish(l, -EPROTO);
    }
}

static void on_done(tr_client_req_t *r, void *data)
{
    (void)r;
    finish(data, 0);
}

static void on_error(tr_client_req_t *r, int err, void *data)
{
    (void)r;
    finish(data, err);
}

static const tr_client_callbacks_t lookup_callbacks = {
    .on_head = on_head, .on_body = on_body, .on_done = on_done, .on_error = on_error};

int gw_apikey_check(gw_worker_t *gw, const gw_live_t *live, const char *key, int *status,
                    gw_api_key_identity_t *id, const char **reason, gw_apikey_cb cb, void *arg,
                    gw_apikey_lookup_t **pending)
{
    uint8_t digest[32];
    size_t len = strlen(key);
    *pending = NULL;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)key[i] <= 0x20 || (unsigned char)key[i] >= 0x7f) len = 0;
    }
    if (len == 0 || len > MAX_KEY_LEN) {
        *status = -EACCES;
        *reason = "invalid API key";
        return 0;
    }
    crypto_generichash(digest, sizeof(digest), (const unsigned char *)key, len, gw->api_keys->key,
                       sizeof(gw->api_keys->key));
    slot_t *s = slot_for(gw->api_keys, digest);
    if (s->used && s->expires_ms > uv_now(gw->w->loop) &&
        sodium_memcmp(s->digest, digest, sizeof(digest)) == 0) {
        count(gw, "hit");
        *status = s->status;
        *id = s->id;
        *reason = s->status == 0 ? NULL : "invalid API key";
        if (s->status != 0 && s->reason[0]) *reason = s->reason;
        return 0;
    }
    if (live->auth < 0) return -ENOENT;
    count(gw, "miss");

    gw_apikey_lookup_t *l = tr_xcalloc(1, sizeof(*l));
    l->gw = gw;
    l->cb = cb;
    l->arg = arg;
    memcpy(l->digest, digest, sizeof(digest));
    tr_buf_init(&l->answer, MAX_ANSWER);
    json_t *body = json_pack("{s:s%}", "key", key, len);
    l->request_body = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    tr_header_t headers[] = {{TR_INTERNAL_TOKEN_HEADER, gw->st->internal_token},
                             {"Content-Type", "application/json"}};
    tr_client_opts_t o;
    tr_client_opts_init(&o);
    o.method = "POST";
    o.target = "/internal/api-keys/verify";
    o.headers = headers;
    o.nheaders = 2;
    o.body = l->request_body;
    o.body_len = strlen(l->request_body);
    o.connect_timeout_ms = live->ups[live->auth]->connect_timeout_ms;
    o.total_timeout_ms = LOOKUP_TIMEOUT;
    o.retry.max_retries = 1; /* a lookup changes nothing: safe to repeat */
    o.cb = &lookup_callbacks;
    o.data = l;
    /* live stays valid meanwhile: the caller holds it until the lookup
     * calls back or is cancelled. */
    int rc = tr_client_request(gw->client, live->ups[live->auth]->up, &o, &l->creq);
    if (rc != 0) {
        count(gw, "error");
        lookup_free(l);
        return rc;
    }
    *pending = l;
    return 1;
}

void gw_apikey_cancel(gw_apikey_lookup_t *l)
{
    if (!l) return;
    if (l->creq) tr_client_cancel(l->creq);
    lookup_free(l);
}

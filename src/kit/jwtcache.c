/*
 * jwtcache.c - per-thread memo of verified access tokens (see jwtcache.h).
 *
 * The design was the auth service's own memo, generalised for the
 * gateway: the slot array is sized by the caller, and each slot keeps its
 * token in a buffer that only grows, so a warm cache allocates nothing.
 * Tokens are compared in constant time eight bytes at a time: on a hit the
 * whole token (~300 bytes) is compared on every request of the edge's hot
 * path, where a byte-wise compare (sodium_memcmp) showed up in profiles.
 */
#include "kit/jwtcache.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/ids.h"

#define MAX_CACHED_TOKEN 2048

typedef struct slot {
    char *token; /* NULL when empty */
    size_t len;
    size_t cap;
    tr_jwt_cached_t claims;
} slot_t;

struct tr_jwt_cache {
    unsigned char key[crypto_shorthash_KEYBYTES];
    size_t mask;
    slot_t *slots;
};

tr_jwt_cache_t *tr_jwt_cache_new(size_t slots)
{
    size_t n = 16;
    while (n < slots && n < ((size_t)1 << 20))
        n <<= 1;
    tr_jwt_cache_t *c = tr_xcalloc(1, sizeof(*c));
    c->slots = tr_xcalloc(n, sizeof(slot_t));
    c->mask = n - 1;
    tr_random_bytes(c->key, sizeof(c->key));
    return c;
}

void tr_jwt_cache_free(tr_jwt_cache_t *c)
{
    if (!c) return;
    for (size_t i = 0; i <= c->mask; i++)
        free(c->slots[i].token);
    free(c->slots);
    free(c);
}

/* Equality of two n-byte buffers in time that depends on n only. */
static bool same_bytes(const char *a, const char *b, size_t n)
{
    uint64_t diff = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        diff |= x ^ y;
    }
    for (; i < n; i++)
        diff |= (uint64_t)(unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static slot_t *slot_for(tr_jwt_cache_t *c, const char *token, size_t len)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)token, len, c->key);
    return &c->slots[h & c->mask];
}

bool tr_jwt_cache_get(tr_jwt_cache_t *c, const char *token, size_t len, int64_t now_s,
                      tr_jwt_cached_t *out)
{
    if (len > MAX_CACHED_TOKEN) return false;
    slot_t *s = slot_for(c, token, len);
    if (!s->token || s->len != len || !same_bytes(s->token, token, len)) return false;
    if (s->claims.exp <= now_s) return false;
    *out = s->claims;
    return true;
}

void tr_jwt_cache_put(tr_jwt_cache_t *c, const char *token, size_t len,
                      const tr_jwt_cached_t *claims)
{
    if (len > MAX_CACHED_TOKEN) return;
    slot_t *s = slot_for(c, token, len);
    if (s->cap < len) {
        free(s->token);
        s->token = tr_xmalloc(len);
        s->cap = len;
    }
    memcpy(s->token, token, len);
    s->len = len;
    s->claims = *claims;
}

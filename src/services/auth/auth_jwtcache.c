/*
 * auth_jwtcache.c - a small per-worker memo of access tokens whose
 * signature and claims were already verified.
 *
 * Verifying an HS256 token costs about 12 us (base64, two JSON parses,
 * HMAC), three times the session lookup that follows it, and a client sends
 * the same token on every request for 15 minutes. So each worker remembers
 * the last tokens it verified, with the three claims it needs.
 *
 * What a hit skips is only the cryptographic check and the iss/aud/nbf
 * checks, which cannot change for a given token string once it has passed:
 * the keys are fixed for the life of the process. exp is re-checked on every
 * hit, and revocation, bans and roles never come from here (auth.c reads
 * the session row on every request).
 *
 * The cache is direct-mapped: the slot is a SipHash of the token under a
 * random per-worker key, so a client cannot aim tokens at another client's
 * slot, and tokens are compared in constant time, so a lookup's timing does
 * not reveal how much of a cached token a guess shares. A worker's cache is
 * only touched by its own loop thread.
 */
#include "services/auth/auth_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"

#define SLOTS            256  /* power of two */
#define MAX_CACHED_TOKEN 1024 /* longer tokens are verified every time */

typedef struct slot {
    char *token; /* NULL when empty */
    size_t len;
    auth_claims_t claims;
} slot_t;

struct auth_jwt_cache {
    unsigned char key[crypto_shorthash_KEYBYTES];
    slot_t slots[SLOTS];
};

auth_jwt_cache_t *auth_jwt_cache_new(void)
{
    auth_jwt_cache_t *c = tr_xcalloc(1, sizeof(*c));
    tr_random_bytes(c->key, sizeof(c->key));
    return c;
}

void auth_jwt_cache_free(auth_jwt_cache_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < SLOTS; i++)
        free(c->slots[i].token);
    free(c);
}

static slot_t *slot_for(auth_jwt_cache_t *c, const char *token, size_t len)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)token, len, c->key);
    return &c->slots[h & (SLOTS - 1)];
}

bool auth_jwt_cache_get(auth_jwt_cache_t *c, const char *token, size_t len, int64_t now_s,
                        auth_claims_t *out)
{
    if (len > MAX_CACHED_TOKEN) return false;
    slot_t *s = slot_for(c, token, len);
    if (!s->token || s->len != len || sodium_memcmp(s->token, token, len) != 0) return false;
    if (s->claims.exp <= now_s) return false;
    *out = s->claims;
    return true;
}

void auth_jwt_cache_put(auth_jwt_cache_t *c, const char *token, size_t len,
                        const auth_claims_t *claims)
{
    if (len > MAX_CACHED_TOKEN) return;
    slot_t *s = slot_for(c, token, len);
    if (!s->token || s->len < len) {
        free(s->token);
        s->token = tr_xmalloc(len);
    }
    memcpy(s->token, token, len);
    s->len = len;
    s->claims = *claims;
}

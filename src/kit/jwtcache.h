/*
 * jwtcache.h - a small per-thread memo of access tokens whose signature and
 * claims were already verified (tr_jwt_verify), with the few claims a
 * verifier needs from them.
 *
 * Verifying an HS256 token costs about 12 us (base64, two JSON parses, an
 * HMAC) and a client sends the same token on every request for its whole
 * lifetime, so an edge that checks every request remembers the last tokens
 * it verified. What a hit skips is only the cryptographic check and the
 * iss/aud/nbf checks, which cannot change for a given token string while the
 * keys are fixed; exp is checked again on every hit, and revocation is the
 * caller's concern.
 *
 * The cache is direct-mapped: the slot is a SipHash of the token under a
 * random per-cache key, so a client cannot aim tokens at another client's
 * slot, and tokens are compared in constant time. A cache belongs to one
 * thread (an event loop); nothing in it is synchronised.
 */
#ifndef TR_JWTCACHE_H
#define TR_JWTCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tr_jwt_cache tr_jwt_cache_t;

/* The claims kept per token. */
typedef struct tr_jwt_cached {
    char sub[40];  /* subject (user id) */
    char sid[40];  /* session id */
    char role[24]; /* "role" claim, "" when absent */
    int64_t exp;   /* unix seconds */
} tr_jwt_cached_t;

/* Creates a cache of slots entries (rounded up to a power of two, at least
 * 16). Never fails. */
tr_jwt_cache_t *tr_jwt_cache_new(size_t slots);
void tr_jwt_cache_free(tr_jwt_cache_t *c);
/* True, with the claims, when this exact token was put before and its exp
 * is still after now_s. */
bool tr_jwt_cache_get(tr_jwt_cache_t *c, const char *token, size_t len, int64_t now_s,
                      tr_jwt_cached_t *out);
/* Remembers a token tr_jwt_verify accepted (copied); tokens longer than
 * 2048 bytes are not cached. */
void tr_jwt_cache_put(tr_jwt_cache_t *c, const char *token, size_t len,
                      const tr_jwt_cached_t *claims);

#endif

/* test_jwtcache.c - the per-thread memo of verified tokens: hits, misses,
 * expiry, replacement, and tokens too long to cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kit/jwtcache.h"

static tr_jwt_cached_t claims(const char *sub, int64_t exp)
{
    tr_jwt_cached_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", sub);
    snprintf(c.sid, sizeof(c.sid), "sid-%s", sub);
    snprintf(c.role, sizeof(c.role), "user");
    c.exp = exp;
    return c;
}

static void test_hit_miss_expiry(void **state)
{
    (void)state;
    tr_jwt_cache_t *c = tr_jwt_cache_new(64);
    tr_jwt_cached_t got, a = claims("a", 1000);
    const char *tok = "header.payload.signature";
    size_t len = strlen(tok);

    assert_false(tr_jwt_cache_get(c, tok, len, 10, &got));
    tr_jwt_cache_put(c, tok, len, &a);
    assert_true(tr_jwt_cache_get(c, tok, len, 10, &got));
    assert_string_equal(got.sub, "a");
    assert_string_equal(got.sid, "sid-a");
    assert_int_equal(got.exp, 1000);
    /* exp is checked on every hit */
    assert_true(tr_jwt_cache_get(c, tok, len, 999, &got));
    assert_false(tr_jwt_cache_get(c, tok, len, 1000, &got));
    /* another token of the same length, or a prefix, is a miss */
    assert_false(tr_jwt_cache_get(c, "header.payload.signaturX", len, 10, &got));
    assert_false(tr_jwt_cache_get(c, tok, len - 1, 10, &got));
    tr_jwt_cache_free(c);
}

static void test_many_tokens_and_replacement(void **state)
{
    (void)state;
    tr_jwt_cache_t *c = tr_jwt_cache_new(16);
    char tok[64];
    tr_jwt_cached_t got;
    /* More tokens than slots: every lookup either hits with the right claims
     * or misses, never returns another token's claims. */
    for (int i = 0; i < 200; i++) {
        char sub[16];
        snprintf(tok, sizeof(tok), "token-%d-%s", i, i % 2 ? "long-tail-to-vary-length" : "x");
        snprintf(sub, sizeof(sub), "u%d", i);
        tr_jwt_cached_t v = claims(sub, 5000);
        tr_jwt_cache_put(c, tok, strlen(tok), &v);
    }
    int hits = 0;
    for (int i = 0; i < 200; i++) {
        char sub[16];
        snprintf(tok, sizeof(tok), "token-%d-%s", i, i % 2 ? "long-tail-to-vary-length" : "x");
        snprintf(sub, sizeof(sub), "u%d", i);
        if (tr_jwt_cache_get(c, tok, strlen(tok), 1, &got)) {
            assert_string_equal(got.sub, sub);
            hits++;
        }
    }
    assert_true(hits > 0 && hits <= 16);
    tr_jwt_cache_free(c);
}

static void test_long_tokens_not_cached(void **state)
{
    (void)state;
    tr_jwt_cache_t *c = tr_jwt_cache_new(16);
    size_t len = 4096;
    char *tok = malloc(len);
    memset(tok, 'a', len);
    tr_jwt_cached_t got, v = claims("big", 100);
    tr_jwt_cache_put(c, tok, len, &v);
    assert_false(tr_jwt_cache_get(c, tok, len, 1, &got));
    free(tok);
    tr_jwt_cache_free(c);
    tr_jwt_cache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_expiry),
        cmocka_unit_test(test_many_tokens_and_replacement),
        cmocka_unit_test(test_long_tokens_not_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

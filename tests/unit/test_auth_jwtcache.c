/*
 * test_auth_jwtcache.c - the per-worker memo of verified access tokens
 * (services/auth/auth_jwtcache.c): a hit needs the exact token and an exp
 * still in the future, and a lookup never answers another token's claims,
 * however many tokens compete for the slots.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "services/auth/auth_internal.h"

static void make_claims(int n, int64_t exp, auth_claims_t *c)
{
    snprintf(c->sub, sizeof(c->sub), "00000000-0000-7000-8000-%012d", n);
    snprintf(c->sid, sizeof(c->sid), "11111111-0000-7000-8000-%012d", n);
    c->exp = exp;
}

static void test_hit_needs_exact_token(void **state)
{
    (void)state;
    auth_jwt_cache_t *c = auth_jwt_cache_new();
    const char *token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    size_t len = strlen(token);
    auth_claims_t in, out;
    make_claims(1, 2000, &in);

    assert_false(auth_jwt_cache_get(c, token, len, 1000, &out));
    auth_jwt_cache_put(c, token, len, &in);
    assert_true(auth_jwt_cache_get(c, token, len, 1000, &out));
    assert_string_equal(out.sub, in.sub);
    assert_string_equal(out.sid, in.sid);
    assert_int_equal(out.exp, 2000);

    /* Same length, one byte different (a forged signature): miss. */
    char forged[64];
    memcpy(forged, token, len + 1);
    forged[len - 1] = forged[len - 1] == 'A' ? 'B' : 'A';
    assert_false(auth_jwt_cache_get(c, forged, len, 1000, &out));
    /* A prefix of the token: miss. */
    assert_false(auth_jwt_cache_get(c, token, len - 1, 1000, &out));
    auth_jwt_cache_free(c);
}

static void test_expired_is_a_miss(void **state)
{
    (void)state;
    auth_jwt_cache_t *c = auth_jwt_cache_new();
    const char *token = "a.b.c";
    auth_claims_t in, out;
    make_claims(2, 2000, &in);
    auth_jwt_cache_put(c, token, 5, &in);
    assert_true(auth_jwt_cache_get(c, token, 5, 1999, &out));
    /* The verifier refuses exp <= now; so must the memo. */
    assert_false(auth_jwt_cache_get(c, token, 5, 2000, &out));
    assert_false(auth_jwt_cache_get(c, token, 5, 5000, &out));
    auth_jwt_cache_free(c);
}

static void test_never_answers_another_tokens_claims(void **state)
{
    (void)state;
    auth_jwt_cache_t *c = auth_jwt_cache_new();
    enum { N = 2000 };
    char token[64];
    auth_claims_t in, out;
    for (int i = 0; i < N; i++) {
        snprintf(token, sizeof(token), "header.payload-%d.signature", i);
        make_claims(i, 10000 + i, &in);
        auth_jwt_cache_put(c, token, strlen(token), &in);
    }
    int hits = 0;
    for (int i = 0; i < N; i++) {
        snprintf(token, sizeof(token), "header.payload-%d.signature", i);
        if (!auth_jwt_cache_get(c, token, strlen(token), 0, &out)) continue;
        hits++;
        make_claims(i, 10000 + i, &in);
        assert_string_equal(out.sub, in.sub);
        assert_int_equal(out.exp, in.exp);
    }
    /* Direct-mapped: the most recent token of each used slot survives. */
    assert_true(hits > 0 && hits <= 256);
    /* The last token put is always there. */
    snprintf(token, sizeof(token), "header.payload-%d.signature", N - 1);
    assert_true(auth_jwt_cache_get(c, token, strlen(token), 0, &out));
    auth_jwt_cache_free(c);
}

static void test_long_tokens_are_not_kept(void **state)
{
    (void)state;
    auth_jwt_cache_t *c = auth_jwt_cache_new();
    char token[2048];
    memset(token, 'x', sizeof(token));
    auth_claims_t in, out;
    make_claims(3, 2000, &in);
    auth_jwt_cache_put(c, token, sizeof(token), &in);
    assert_false(auth_jwt_cache_get(c, token, sizeof(token), 0, &out));
    auth_jwt_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_needs_exact_token),
        cmocka_unit_test(test_expired_is_a_miss),
        cmocka_unit_test(test_never_answers_another_tokens_claims),
        cmocka_unit_test(test_long_tokens_are_not_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_gateway_revocations.c - the set of revoked sessions the gateway
 * checks tokens against: UUID parsing, merging, expiry, duplicates. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/revocations.h"

static void test_uuid_parse(void **state)
{
    (void)state;
    uint8_t id[16];
    assert_int_equal(gw_uuid_parse("01a20412-89ec-7464-8be7-15c2c17f3f14", id), 0);
    assert_int_equal(id[0], 0x01);
    assert_int_equal(id[15], 0x14);
    assert_int_equal(gw_uuid_parse("01A20412-89EC-7464-8BE7-15C2C17F3F14", id), 0);
    assert_int_equal(gw_uuid_parse("01a20412-89ec-7464-8be7-15c2c17f3f1", id), -EINVAL);
    assert_int_equal(gw_uuid_parse("01a20412-89ec-7464-8be7-15c2c17f3f1g", id), -EINVAL);
    assert_int_equal(gw_uuid_parse("01a2041289ec-7464-8be7-15c2c17f3f14x", id), -EINVAL);
    assert_int_equal(gw_uuid_parse("", id), -EINVAL);
    assert_int_equal(gw_uuid_parse(NULL, id), -EINVAL);
}

static void make_id(unsigned n, uint8_t out[16])
{
    char s[40];
    snprintf(s, sizeof(s), "01a20412-89ec-7464-8be7-%012x", n);
    assert_int_equal(gw_uuid_parse(s, out), 0);
}

static void test_merge_and_expiry(void **state)
{
    (void)state;
    enum { N = 1000 };
    static uint8_t ids[N][16];
    static int64_t exp[N];
    for (unsigned i = 0; i < N; i++) {
        make_id(i, ids[i]);
        exp[i] = i < N / 2 ? 1000 : 5000; /* half expire at 1000 */
    }
    gw_revset_t *a = gw_revset_merge(NULL, (const uint8_t(*)[16])ids, exp, N, 0);
    assert_int_equal(gw_revset_count(a), N);
    for (unsigned i = 0; i < N; i++)
        assert_true(gw_revset_contains(a, ids[i]));
    uint8_t other[16];
    make_id(N + 7, other);
    assert_false(gw_revset_contains(a, other));

    /* A rebuild after 1000 ms keeps only what has not expired, plus the new. */
    int64_t e = 9000;
    gw_revset_t *b = gw_revset_merge(a, (const uint8_t(*)[16]) & other, &e, 1, 1000);
    assert_int_equal(gw_revset_count(b), N / 2 + 1);
    assert_false(gw_revset_contains(b, ids[0]));
    assert_true(gw_revset_contains(b, ids[N - 1]));
    assert_true(gw_revset_contains(b, other));
    /* The old set is untouched (readers may still be in it). */
    assert_int_equal(gw_revset_count(a), N);

    /* Duplicates merge, keeping the later expiry; expired adds are dropped. */
    int64_t twice[2] = {7000, 8000};
    uint8_t dup[2][16];
    memcpy(dup[0], ids[N - 1], 16);
    memcpy(dup[1], ids[N - 1], 16);
    gw_revset_t *c = gw_revset_merge(b, (const uint8_t(*)[16])dup, twice, 2, 1000);
    assert_int_equal(gw_revset_count(c), N / 2 + 1);
    gw_revset_t *d = gw_revset_merge(c, NULL, NULL, 0, 8500);
    assert_int_equal(gw_revset_count(d), 1); /* only `other` (9000) is left */
    assert_true(gw_revset_contains(d, other));
    int64_t past = 10;
    gw_revset_t *e2 = gw_revset_merge(NULL, (const uint8_t(*)[16])ids, &past, 1, 100);
    assert_int_equal(gw_revset_count(e2), 0);
    assert_false(gw_revset_contains(e2, ids[0]));
    assert_false(gw_revset_contains(NULL, ids[0]));
    gw_revset_free(a);
    gw_revset_free(b);
    gw_revset_free(c);
    gw_revset_free(d);
    gw_revset_free(e2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid_parse),
        cmocka_unit_test(test_merge_and_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_revocations.c - the set of revoked sessions every service
 * checks tokens against: UUID parsing, merging, expiry, duplicates. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kit/ids.h"
#include "kit/revocations.h"

static void test_uuid_parse(void **state)
{
    (void)state;
    uint8_t id[16];
    assert_int_equal(tr_uuid_parse("01a20412-89ec-7464-8be7-15c2c17f3f14", id), 0);
    assert_int_equal(id[0], 0x01);
    assert_int_equal(id[15], 0x14);
    assert_int_equal(tr_uuid_parse("01A20412-89EC-7464-8BE7-15C2C17F3F14", id), 0);
    assert_int_equal(tr_uuid_parse("01a20412-89ec-7464-8be7-15c2c17f3f1", id), -EINVAL);
    assert_int_equal(tr_uuid_parse("01a20412-89ec-7464-8be7-15c2c17f3f1g", id), -EINVAL);
    assert_int_equal(tr_uuid_parse("01a2041289ec-7464-8be7-15c2c17f3f14x", id), -EINVAL);
    assert_int_equal(tr_uuid_parse("", id), -EINVAL);
    assert_int_equal(tr_uuid_parse(NULL, id), -EINVAL);
}

static void make_id(unsigned n, uint8_t out[16])
{
    char s[40];
    snprintf(s, sizeof(s), "01a20412-89ec-7464-8be7-%012x", n);
    assert_int_equal(tr_uuid_parse(s, out), 0);
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
    tr_revset_t *a = tr_revset_merge(NULL, (const uint8_t(*)[16])ids, exp, N, 0);
    assert_int_equal(tr_revset_count(a), N);
    for (unsigned i = 0; i < N; i++)
        assert_true(tr_revset_contains(a, ids[i]));
    uint8_t other[16];
    make_id(N + 7, other);
    assert_false(tr_revset_contains(a, other));

    /* A rebuild after 1000 ms keeps only what has not expired, plus the new. */
    int64_t e = 9000;
    tr_revset_t *b = tr_revset_merge(a, (const uint8_t(*)[16]) & other, &e, 1, 1000);
    assert_int_equal(tr_revset_count(b), N / 2 + 1);
    assert_false(tr_revset_contains(b, ids[0]));
    assert_true(tr_revset_contains(b, ids[N - 1]));
    assert_true(tr_revset_contains(b, other));
    /* The old set is untouched (readers may still be in it). */
    assert_int_equal(tr_revset_count(a), N);

    /* Duplicates merge, keeping the later expiry; expired adds are dropped. */
    int64_t twice[2] = {7000, 8000};
    uint8_t dup[2][16];
    memcpy(dup[0], ids[N - 1], 16);
    memcpy(dup[1], ids[N - 1], 16);
    tr_revset_t *c = tr_revset_merge(b, (const uint8_t(*)[16])dup, twice, 2, 1000);
    assert_int_equal(tr_revset_count(c), N / 2 + 1);
    tr_revset_t *d = tr_revset_merge(c, NULL, NULL, 0, 8500);
    assert_int_equal(tr_revset_count(d), 1); /* only `other` (9000) is left */
    assert_true(tr_revset_contains(d, other));
    int64_t past = 10;
    tr_revset_t *e2 = tr_revset_merge(NULL, (const uint8_t(*)[16])ids, &past, 1, 100);
    assert_int_equal(tr_revset_count(e2), 0);
    assert_false(tr_revset_contains(e2, ids[0]));
    assert_false(tr_revset_contains(NULL, ids[0]));
    tr_revset_free(a);
    tr_revset_free(b);
    tr_revset_free(c);
    tr_revset_free(d);
    tr_revset_free(e2);
}

/* The published set: what a merge adds is seen at once by every reader,
 * expired entries leave on a later merge, and readers racing publishers
 * never read a freed set (ASan watches the hazard-pointer reclamation). */
typedef struct reader_arg {
    tr_revocations_t *r;
    int slot;
    const char *id;
    _Atomic bool *stop;
    _Atomic unsigned hits;
} reader_arg_t;

static void *reader(void *p)
{
    reader_arg_t *a = p;
    while (!atomic_load(a->stop))
        if (tr_revocations_contains(a->r, a->slot, a->id)) atomic_fetch_add(&a->hits, 1);
    return NULL;
}

static void test_published_set(void **state)
{
    (void)state;
    tr_revocations_t *r = tr_revocations_new(3);
    const char *sid = "01a20412-89ec-7464-8be7-000000000001";
    uint8_t id[16];
    assert_int_equal(tr_uuid_parse(sid, id), 0);
    assert_false(tr_revocations_contains(r, 0, sid));
    assert_false(tr_revocations_contains(r, 0, "not a uuid"));
    assert_false(tr_revocations_contains(r, 7, sid)); /* a slot out of range reads nothing */

    _Atomic bool stop = false;
    reader_arg_t args[2] = {{r, 1, sid, &stop, 0}, {r, 2, sid, &stop, 0}};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, reader, &args[i]), 0);
    int64_t until = 1000000;
    tr_revocations_merge(r, (const uint8_t(*)[16])id, &until, 1, 0);
    assert_true(tr_revocations_contains(r, 0, sid));
    /* Many publications while the readers read. */
    for (unsigned i = 0; i < 2000; i++) {
        uint8_t other[16];
        make_id(100 + i, other);
        int64_t short_lived = 10 + i;
        tr_revocations_merge(r, (const uint8_t(*)[16])other, &short_lived, 1, (int64_t)i);
    }
    /* Each reader sees the entry (however late the scheduler runs it). */
    for (int i = 0; i < 2; i++)
        while (atomic_load(&args[i].hits) == 0)
            sched_yield();
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_true(tr_revocations_contains(r, 0, sid));
    /* Past every expiry but sid's, a merge leaves sid alone. */
    tr_revocations_merge(r, NULL, NULL, 0, 500000);
    assert_int_equal(tr_revocations_count(r), 1);
    tr_revocations_merge(r, NULL, NULL, 0, 2000000);
    assert_int_equal(tr_revocations_count(r), 0);
    assert_false(tr_revocations_contains(r, 0, sid));
    tr_revocations_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_set),
        cmocka_unit_test(test_uuid_parse),
        cmocka_unit_test(test_merge_and_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

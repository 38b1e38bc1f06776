/*
 * test_crypto.c - argon2id hashing (sync and on the thread pool), tokens,
 * SHA-256 and constant-time compare.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kit/crypto.h"

/* The smallest parameters the kit accepts (OWASP's argon2id minimum). */
static const tr_pwhash_params_t min_params = {.opslimit = 2, .memlimit = (size_t)19 << 20};

static void test_hash_and_verify(void **state)
{
    (void)state;
    const char *pw = "correct horse battery staple";
    char h1[TR_PWHASH_MAX], h2[TR_PWHASH_MAX];

    assert_int_equal(tr_password_hash(pw, strlen(pw), &min_params, h1), 0);
    static const char prefix[] = "$argon2id$v=19$m=19456,t=2,p=1$";
    assert_memory_equal(h1, prefix, sizeof(prefix) - 1);
    assert_true(tr_password_verify(h1, pw, strlen(pw)));
    assert_false(tr_password_verify(h1, "correct horse battery stapl", strlen(pw) - 1));
    assert_false(tr_password_verify(h1, "Correct horse battery staple", strlen(pw)));
    assert_false(tr_password_verify(h1, "", 0));

    /* A fresh salt per hash: the same password never hashes the same. */
    assert_int_equal(tr_password_hash(pw, strlen(pw), &min_params, h2), 0);
    assert_string_not_equal(h1, h2);
    assert_true(tr_password_verify(h2, pw, strlen(pw)));
}

static void test_password_with_nul_bytes(void **state)
{
    (void)state;
    /* The length, not a terminator, delimits the password. */
    const char pw[] = {'a', '\0', 'b'};
    char h[TR_PWHASH_MAX];
    assert_int_equal(tr_password_hash(pw, sizeof(pw), &min_params, h), 0);
    assert_true(tr_password_verify(h, pw, sizeof(pw)));
    assert_false(tr_password_verify(h, "a", 1));
}

static void test_weak_params_rejected(void **state)
{
    (void)state;
    char h[TR_PWHASH_MAX];
    tr_pwhash_params_t one_pass = {.opslimit = 1, .memlimit = (size_t)19 << 20};
    tr_pwhash_params_t small_mem = {.opslimit = 2, .memlimit = ((size_t)19 << 20) - 1};
    assert_int_equal(tr_password_hash("pw", 2, &one_pass, h), -EINVAL);
    assert_int_equal(tr_password_hash("pw", 2, &small_mem, h), -EINVAL);
    assert_int_equal(tr_password_hash("pw", 2, NULL, h), -EINVAL);
}

static void test_verify_garbage_hash(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "not a hash",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAA",
        "$2b$12$abcdefghijklmnopqrstuuFxzJ1y8O1s5Q6Zkq9m9o3b8VY0r2j8S",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(tr_password_verify(bad[i], "pw", 2));
    assert_false(tr_password_verify(NULL, "pw", 2));
}

/* ---- thread pool ---- */

typedef struct async_state {
    uv_loop_t *loop;
    const char *password;
    char hash[TR_PWHASH_MAX];
    int hash_rc;
    int hashes;
    int verifies;
    bool right_matched;
    bool wrong_matched;
} async_state_t;

static void on_verify_right(void *arg, bool match)
{
    async_state_t *st = arg;
    st->verifies++;
    st->right_matched = match;
}

static void on_verify_wrong(void *arg, bool match)
{
    async_state_t *st = arg;
    st->verifies++;
    st->wrong_matched = match;
}

static void on_hash(void *arg, int rc, const char *encoded)
{
    async_state_t *st = arg;
    st->hashes++;
    st->hash_rc = rc;
    if (rc != 0) return;
    snprintf(st->hash, sizeof(st->hash), "%s", encoded);
    /* The job copies its inputs, so a buffer the caller reuses at once is
     * fine: scribble over it right after queueing. */
    char scratch[64];
    snprintf(scratch, sizeof(scratch), "%s", st->password);
    assert_int_equal(
        tr_password_verify_async(st->loop, st->hash, scratch, strlen(scratch), on_verify_right, st),
        0);
    memset(scratch, 'x', sizeof(scratch));
    assert_int_equal(tr_password_verify_async(st->loop, st->hash, "wrong", 5, on_verify_wrong, st),
                     0);
}

static void never_called_hash(void *arg, int rc, const char *encoded)
{
    (void)arg, (void)rc, (void)encoded;
    fail_msg("callback of a rejected job ran");
}

static void test_async_hash_then_verify(void **state)
{
    (void)state;
    uv_loop_t loop;
    async_state_t st = {.loop = &loop, .password = "hunter2 but longer", .hash_rc = 1};
    assert_int_equal(uv_loop_init(&loop), 0);

    assert_int_equal(
        tr_password_hash_async(&loop, st.password, strlen(st.password), &min_params, on_hash, &st),
        0);
    tr_pwhash_params_t weak = {.opslimit = 1, .memlimit = 1 << 20};
    assert_int_equal(tr_password_hash_async(&loop, "pw", 2, &weak, never_called_hash, NULL),
                     -EINVAL);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(st.hashes, 1);
    assert_int_equal(st.hash_rc, 0);
    assert_int_equal(st.verifies, 2);
    assert_true(st.right_matched);
    assert_false(st.wrong_matched);
    assert_true(tr_password_verify(st.hash, st.password, strlen(st.password)));
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- tokens, digests, compare ---- */

static int cmp_tokens(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_tokens(void **state)
{
    (void)state;
    enum { N = 512 };
    char(*tokens)[TR_TOKEN_CHARS + 1] = calloc(N, sizeof(*tokens));
    assert_non_null(tokens);
    for (size_t i = 0; i < N; i++) {
        tr_token_generate(tokens[i]);
        assert_int_equal(strlen(tokens[i]), TR_TOKEN_CHARS);
        assert_int_equal(strspn(tokens[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789-_"),
                         TR_TOKEN_CHARS);
    }
    qsort(tokens, N, sizeof(*tokens), cmp_tokens);
    for (size_t i = 1; i < N; i++)
        assert_string_not_equal(tokens[i - 1], tokens[i]);
    free(tokens);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[TR_SHA256_HEX];
        tr_sha256_hex(cases[i].in, strlen(cases[i].in), out);
        assert_string_equal(out, cases[i].hex);
    }
}

static void test_memeq_ct(void **state)
{
    (void)state;
    assert_true(tr_memeq_ct("abcdef", "abcdef", 6));
    assert_false(tr_memeq_ct("abcdef", "abcdeg", 6));
    assert_false(tr_memeq_ct("xbcdef", "abcdef", 6));
    assert_true(tr_memeq_ct("a", "b", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify),
        cmocka_unit_test(test_password_with_nul_bytes),
        cmocka_unit_test(test_weak_params_rejected),
        cmocka_unit_test(test_verify_garbage_hash),
        cmocka_unit_test(test_async_hash_then_verify),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_memeq_ct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

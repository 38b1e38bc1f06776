/*
 * crypto.c - argon2id password hashing, random tokens and SHA-256, over
 * libsodium.
 *
 * DESIGN NOTES
 *
 * 1. libsodium must be initialised once per process before its random
 *    generator is used; every entry point goes through ensure_sodium(), a
 *    pthread_once, so no caller has to remember an init call and thread-pool
 *    jobs are safe too.
 *
 * 2. The async variants run on the libuv thread pool. The pool is small
 *    (four threads by default) and each argon2id hash takes memlimit bytes
 *    (>= 19 MiB), so at most pool-size hashes are in memory at once; the
 *    request that waits for one costs nothing but its job.
 *
 * 3. A job owns copies of everything it reads, so the caller's buffers (often
 *    a request body that is freed on answer) may go away while the job runs.
 *    The password copy is wiped with sodium_memzero before it is freed, so
 *    plaintext passwords do not linger in freed heap memory.
 *
 * 4. A job cancelled with uv_cancel still reports through its callback
 *    (rc UV_ECANCELED, or no match), so the caller's state machine always
 *    sees exactly one completion.
 */
#include "kit/crypto.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"

_Static_assert(TR_PWHASH_MAX == crypto_pwhash_STRBYTES, "argon2 string size");
_Static_assert(TR_TOKEN_CHARS + 1 ==
                   sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
               "token size");
_Static_assert(TR_SHA256_HEX == crypto_hash_sha256_BYTES * 2 + 1, "sha256 hex size");

#define MIN_OPSLIMIT 2
#define MIN_MEMLIMIT ((size_t)19 << 20)

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;

static void sodium_setup(void)
{
    /* Without a working random source no token or salt is safe to issue. */
    if (sodium_init() < 0) abort();
}

static void ensure_sodium(void)
{
    pthread_once(&sodium_once, sodium_setup);
}

static bool params_valid(const tr_pwhash_params_t *params)
{
    return params && params->opslimit >= MIN_OPSLIMIT &&
           params->opslimit <= crypto_pwhash_OPSLIMIT_MAX && params->memlimit >= MIN_MEMLIMIT &&
           params->memlimit <= crypto_pwhash_MEMLIMIT_MAX;
}

int tr_password_hash(const char *password, size_t len, const tr_pwhash_params_t *params,
                     char out[TR_PWHASH_MAX])
{
    ensure_sodium();
    if (!params_valid(params) || len > crypto_pwhash_PASSWD_MAX) return -EINVAL;
    /* libsodium fails only when it cannot allocate the memlimit. */
    if (crypto_pwhash_str_alg(out, password, len, params->opslimit, params->memlimit,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -ENOMEM;
    return 0;
}

bool tr_password_verify(const char *encoded, const char *password, size_t len)
{
    ensure_sodium();
    if (!encoded || !password) return false;
    if (strnlen(encoded, TR_PWHASH_MAX) >= TR_PWHASH_MAX) return false;
    return crypto_pwhash_str_verify(encoded, password, len) == 0;
}

typedef struct pw_job {
    uv_work_t work;
    char *password; /* owned copy, wiped before free */
    size_t len;
    tr_pwhash_params_t params;
    char encoded[TR_PWHASH_MAX]; /* hash result, or the hash to verify against */
    int rc;
    bool match;
    tr_pwhash_done_fn hash_done; /* exactly one of the two is set */
    tr_pwverify_done_fn verify_done;
    void *arg;
} pw_job_t;

static pw_job_t *job_new(const char *password, size_t len, void *arg)
{
    pw_job_t *job = tr_xcalloc(1, sizeof(*job));
    job->password = tr_xmalloc(len + 1);
    if (len) memcpy(job->password, password, len);
    job->password[len] = '\0';
    job->len = len;
    job->work.data = job;
    job->arg = arg;
    return job;
}

static void job_free(pw_job_t *job)
{
    sodium_memzero(job->password, job->len + 1);
    free(job->password);
    sodium_memzero(job, sizeof(*job));
    free(job);
}

static void hash_work(uv_work_t *work)
{
    pw_job_t *job = work->data;
    job->rc = tr_password_hash(job->password, job->len, &job->params, job->encoded);
}

static void verify_work(uv_work_t *work)
{
    pw_job_t *job = work->data;
    job->match = tr_password_verify(job->encoded, job->password, job->len);
}

static void job_after(uv_work_t *work, int status)
{
    pw_job_t *job = work->data;
    if (job->hash_done) {
        int rc = status < 0 ? status : job->rc;
        job->hash_done(job->arg, rc, rc == 0 ? job->encoded : NULL);
    } else {
        job->verify_done(job->arg, status == 0 && job->match);
    }
    job_free(job);
}

int tr_password_hash_async(uv_loop_t *loop, const char *password, size_t len,
                           const tr_pwhash_params_t *params, tr_pwhash_done_fn done, void *arg)
{
    if (!loop || !done || (!password && len) || !params_valid(params) ||
        len > crypto_pwhash_PASSWD_MAX)
        return -EINVAL;
    ensure_sodium();
    pw_job_t *job = job_new(password, len, arg);
    job->params = *params;
    job->hash_done = done;
    int rc = uv_queue_work(loop, &job->work, hash_work, job_after);
    if (rc != 0) job_free(job);
    return rc;
}

int tr_password_verify_async(uv_loop_t *loop, const char *encoded, const char *password, size_t len,
                             tr_pwverify_done_fn done, void *arg)
{
    if (!loop || !done || !encoded || (!password && len)) return -EINVAL;
    size_t enc_len = strnlen(encoded, TR_PWHASH_MAX);
    if (enc_len >= TR_PWHASH_MAX) return -EINVAL;
    ensure_sodium();
    pw_job_t *job = job_new(password, len, arg);
    memcpy(job->encoded, encoded, enc_len + 1);
    job->verify_done = done;
    int rc = uv_queue_work(loop, &job->work, verify_work, job_after);
    if (rc != 0) job_free(job);
    return rc;
}

void tr_token_generate(char out[TR_TOKEN_CHARS + 1])
{
    unsigned char raw[32];
    ensure_sodium();
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(out, TR_TOKEN_CHARS + 1, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

void tr_sha256_hex(const void *data, size_t len, char out[TR_SHA256_HEX])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    ensure_sodium();
    crypto_hash_sha256(digest, data, len);
    sodium_bin2hex(out, TR_SHA256_HEX, digest, sizeof(digest));
}

bool tr_memeq_ct(const void *a, const void *b, size_t len)
{
    if (len == 0) return true;
    ensure_sodium();
    return sodium_memcmp(a, b, len) == 0;
}

/*
 * crypto.h - passwords, opaque tokens and digests.
 *
 * Password hashing is argon2id through libsodium. It is CPU- and
 * memory-heavy by design (tens of ms), so callers on an event loop run it on
 * the thread pool (tr_password_hash_async / tr_password_verify_async).
 */
#ifndef TR_CRYPTO_H
#define TR_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TR_PWHASH_MAX  128 /* encoded argon2id string incl. NUL */
#define TR_TOKEN_CHARS 43  /* base64url of 32 random bytes, no padding */
#define TR_SHA256_HEX  65  /* 64 hex chars + NUL */

typedef struct tr_pwhash_params {
    uint64_t opslimit; /* argon2 t (iterations), >= 2 */
    size_t memlimit;   /* bytes, >= 19 MiB */
} tr_pwhash_params_t;

/* Hashes a password into the encoded argon2id string (with salt and
 * parameters). Returns 0, -EINVAL when params are below the minimums above,
 * or -ENOMEM when the memory limit cannot be had. */
int tr_password_hash(const char *password, size_t len, const tr_pwhash_params_t *params,
                     char out[TR_PWHASH_MAX]);
/* Returns true when password matches the encoded hash. Constant-time compare
 * inside libsodium. */
bool tr_password_verify(const char *encoded, const char *password, size_t len);

/* Thread-pool versions. The job copies its inputs; done runs on loop with
 * rc (0 / negative), the encoded hash (hash) or the match (verify), and arg.
 * They return 0, or a negative code (invalid arguments, uv_queue_work
 * failure) without ever calling done. */
typedef void (*tr_pwhash_done_fn)(void *arg, int rc, const char *encoded);
typedef void (*tr_pwverify_done_fn)(void *arg, bool match);
int tr_password_hash_async(uv_loop_t *loop, const char *password, size_t len,
                           const tr_pwhash_params_t *params, tr_pwhash_done_fn done, void *arg);
int tr_password_verify_async(uv_loop_t *loop, const char *encoded, const char *password, size_t len,
                             tr_pwverify_done_fn done, void *arg);

/* Writes a fresh 256-bit random token as base64url (TR_TOKEN_CHARS chars +
 * NUL). */
void tr_token_generate(char out[TR_TOKEN_CHARS + 1]);
/* SHA-256 of data as lowercase hex. */
void tr_sha256_hex(const void *data, size_t len, char out[TR_SHA256_HEX]);
/* Constant-time equality of two equal-length buffers. */
bool tr_memeq_ct(const void *a, const void *b, size_t len);

#endif

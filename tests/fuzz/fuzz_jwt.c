/*
 * fuzz_jwt.c - libFuzzer target for the JWT verify path (jwt.c): splitting
 * the token, base64url decoding and parsing the header and payload, the
 * pinned-algorithm and typ/crit checks, and the claim checks.
 *
 * Input byte 0 picks the mode:
 *   even  the rest is the token as sent (after "Bearer "): segment
 *         splitting, decoding and the header checks; the signature gate is
 *         only passed by chance;
 *   odd   the rest is "<header JSON>\n<payload JSON>": the target encodes
 *         both and signs them with the verifier's HS256 key, so every
 *         input reaches the payload decoding and the claim checks behind
 *         the signature gate.
 * Contracts: verify returns 0 exactly when it hands back claims, which are
 * then an object whose iss is the configured one and whose exp (a number,
 * maybe fractional) is after now less the leeway; on failure *claims is NULL and a reason is given.
 * Seeds: tests/fuzz/corpus/jwt/.
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kit/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "fuzz-secret-fuzz-secret-fuzz-secret-0123"
#define NOW    1700000000
#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING

static tr_jwt_keys_t *keys;

static size_t b64(char *out, size_t cap, const uint8_t *in, size_t len)
{
    if (sodium_base64_ENCODED_LEN(len, B64URL) > cap) abort();
    sodium_bin2base64(out, cap, in, len, B64URL);
    return strlen(out);
}

/* "<b64 header>.<b64 payload>.<b64 HMAC-SHA256>" for the two JSON texts. */
static char *signed_token(const uint8_t *hdr, size_t hlen, const uint8_t *pl, size_t plen)
{
    size_t cap = sodium_base64_ENCODED_LEN(hlen, B64URL) + sodium_base64_ENCODED_LEN(plen, B64URL) +
                 sodium_base64_ENCODED_LEN(32, B64URL) + 3;
    char *tok = malloc(cap);
    size_t n = b64(tok, cap, hdr, hlen);
    tok[n++] = '.';
    n += b64(tok + n, cap - n, pl, plen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, n, mac,
              &maclen))
        abort();
    tok[n++] = '.';
    b64(tok + n, cap - n, mac, maclen);
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!keys) {
        char err[128];
        tr_jwt_config_t cfg = {.alg = "HS256",
                               .secret = SECRET,
                               .issuer = "trellis",
                               .audience = "trellis",
                               .leeway_s = 30};
        if (sodium_init() < 0 || tr_jwt_keys_load(&cfg, &keys, err, sizeof(err)) != 0) abort();
    }
    if (size < 1) return 0;
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    char *token = NULL;

    if (data[0] & 1) {
        const uint8_t *nl = memchr(in, '\n', len);
        if (!nl) return 0;
        token = signed_token(in, (size_t)(nl - in), nl + 1, len - (size_t)(nl - in) - 1);
    } else {
        token = malloc(len + 1);
        memcpy(token, in, len);
        token[len] = '\0';
    }

    json_t *claims = (json_t *)1;
    const char *why = NULL;
    int rc = tr_jwt_verify(keys, token, NOW, &claims, &why);
    if (rc == 0) {
        if (!json_is_object(claims) || why) abort();
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        json_t *exp = json_object_get(claims, "exp");
        /* NumericDate may be fractional (RFC 7519 §2). */
        if (!iss || strcmp(iss, "trellis") != 0 || !json_is_number(exp)) abort();
        if (json_number_value(exp) <= (double)NOW - 30) abort();
        json_decref(claims);
    } else if (claims != NULL || !why) {
        abort();
    }
    free(token);
    return 0;
}

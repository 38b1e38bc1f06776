/*
 * test_jwt.c - token signing and verification with a pinned algorithm.
 *
 * Most verification cases are hand-made tokens (header and payload JSON
 * signed here with HMAC-SHA256), so a case can put anything in the header:
 * "none", a lowercase alg, duplicate keys, crit. RSA and EC keys are made by
 * OpenSSL into a temporary directory at group setup.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "kit/jwt.h"

#define SECRET "0123456789abcdef0123456789abcdef-test-secret"
#define NOW    1700000000LL
#define LEEWAY 30

static const tr_jwt_config_t hs_cfg = {
    .alg = "HS256",
    .secret = SECRET,
    .issuer = "trellis-auth",
    .audience = "trellis",
    .leeway_s = LEEWAY,
};

/* ---- key files ---- */

static char tmpdir[64];
static char rsa_priv[128], rsa_pub[128], ec_priv[128], ec_pub[128];
static char rsa_small[128], ec_p384[128], rsa_other_pub[128];

static void write_key(EVP_PKEY *pkey, const char *path, bool private_key)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    int ok = private_key ? PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_PUBKEY(fp, pkey);
    assert_int_equal(ok, 1);
    assert_int_equal(fclose(fp), 0);
}

static void keypair(const char *type, const char *param, size_t bits, const char *priv_path,
                    const char *pub_path)
{
    EVP_PKEY *pkey = param ? EVP_PKEY_Q_keygen(NULL, NULL, type, param)
                           : EVP_PKEY_Q_keygen(NULL, NULL, type, bits);
    assert_non_null(pkey);
    if (priv_path) write_key(pkey, priv_path, true);
    if (pub_path) write_key(pkey, pub_path, false);
    EVP_PKEY_free(pkey);
}

static int make_keys(void **state)
{
    (void)state;
    /* mkdtemp's template: the name ends in six 'X'. */
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/trellis-jwt-......");
    memset(tmpdir + strlen(tmpdir) - 6, 'X', 6);
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(rsa_priv, sizeof(rsa_priv), "%s/rsa.key", tmpdir);
    snprintf(rsa_pub, sizeof(rsa_pub), "%s/rsa.pub", tmpdir);
    snprintf(ec_priv, sizeof(ec_priv), "%s/ec.key", tmpdir);
    snprintf(ec_pub, sizeof(ec_pub), "%s/ec.pub", tmpdir);
    snprintf(rsa_small, sizeof(rsa_small), "%s/rsa1024.pub", tmpdir);
    snprintf(ec_p384, sizeof(ec_p384), "%s/p384.pub", tmpdir);
    snprintf(rsa_other_pub, sizeof(rsa_other_pub), "%s/rsa-other.pub", tmpdir);
    keypair("RSA", NULL, 2048, rsa_priv, rsa_pub);
    keypair("RSA", NULL, 2048, NULL, rsa_other_pub);
    keypair("RSA", NULL, 1024, NULL, rsa_small);
    keypair("EC", "P-256", 0, ec_priv, ec_pub);
    keypair("EC", "P-384", 0, NULL, ec_p384);
    return 0;
}

static int remove_keys(void **state)
{
    (void)state;
    const char *files[] = {rsa_priv, rsa_pub, ec_priv, ec_pub, rsa_small, ec_p384, rsa_other_pub};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        unlink(files[i]);
    return rmdir(tmpdir);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *buf = calloc(1, 16384);
    assert_non_null(buf);
    *len = fread(buf, 1, 16383, fp);
    fclose(fp);
    return buf;
}

/* ---- hand-made tokens ---- */

static void b64url(const void *data, size_t len, char *out, size_t outlen)
{
    sodium_bin2base64(out, outlen, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* header.payload.HMAC-SHA256(key) -- or an empty signature when key is NULL.
 * Malloc'ed. */
static char *craft(const char *header, const char *payload, const void *key, size_t keylen)
{
    size_t cap = 4 * (strlen(header) + strlen(payload)) + 256;
    char *tok = calloc(1, cap);
    assert_non_null(tok);
    b64url(header, strlen(header), tok, cap);
    strcat(tok, ".");
    size_t n = strlen(tok);
    b64url(payload, strlen(payload), tok + n, cap - n);
    n = strlen(tok);
    tok[n++] = '.';
    if (key) {
        unsigned char mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, key, keylen);
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)tok, n - 1);
        crypto_auth_hmacsha256_final(&st, mac);
        b64url(mac, sizeof(mac), tok + n, cap - n);
    }
    return tok;
}

static void load(const tr_jwt_config_t *cfg, tr_jwt_keys_t **keys)
{
    char err[256] = "";
    int rc = tr_jwt_keys_load(cfg, keys, err, sizeof(err));
    if (rc != 0) fail_msg("load failed: %s", err);
}

/* ---- HS256 verification table ---- */

#define HS          "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define GOOD_CLAIMS "\"sub\":\"u1\",\"iss\":\"trellis-auth\",\"aud\":\"trellis\""

static const struct verify_case {
    const char *name;
    const char *header;
    const char *payload;
    const char *key; /* NULL: empty signature */
    const char *why; /* NULL: accepted */
} verify_cases[] = {
    {"valid", HS, "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET, NULL},
    {"valid without typ", "{\"alg\":\"HS256\"}", "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET,
     NULL},
    {"fractional exp", HS, "{" GOOD_CLAIMS ",\"exp\":1700000600.5}", SECRET, NULL},
    {"expired", HS, "{" GOOD_CLAIMS ",\"exp\":1699999969}", SECRET, "token expired"},
    {"expired within leeway", HS, "{" GOOD_CLAIMS ",\"exp\":1699999971}", SECRET, NULL},
    {"exp exactly now - leeway", HS, "{" GOOD_CLAIMS ",\"exp\":1699999970}", SECRET,
     "token expired"},
    {"missing exp", HS, "{" GOOD_CLAIMS "}", SECRET, "missing exp"},
    {"exp as string", HS, "{" GOOD_CLAIMS ",\"exp\":\"1700000600\"}", SECRET, "missing exp"},
    {"nbf in future", HS, "{" GOOD_CLAIMS ",\"exp\":1700000600,\"nbf\":1700000031}", SECRET,
     "token not yet valid"},
    {"nbf within leeway", HS, "{" GOOD_CLAIMS ",\"exp\":1700000600,\"nbf\":1700000029}", SECRET,
     NULL},
    {"nbf not a number", HS, "{" GOOD_CLAIMS ",\"exp\":1700000600,\"nbf\":true}", SECRET,
     "invalid nbf"},
    {"wrong iss", HS, "{\"iss\":\"evil\",\"aud\":\"trellis\",\"exp\":1700000600}", SECRET,
     "wrong issuer"},
    {"missing iss", HS, "{\"aud\":\"trellis\",\"exp\":1700000600}", SECRET, "wrong issuer"},
    {"wrong aud", HS, "{\"iss\":\"trellis-auth\",\"aud\":\"other\",\"exp\":1700000600}", SECRET,
     "wrong audience"},
    {"missing aud", HS, "{\"iss\":\"trellis-auth\",\"exp\":1700000600}", SECRET, "wrong audience"},
    {"aud array containing ours", HS,
     "{\"iss\":\"trellis-auth\",\"aud\":[\"x\",\"trellis\"],\"exp\":1700000600}", SECRET, NULL},
    {"aud array without ours", HS,
     "{\"iss\":\"trellis-auth\",\"aud\":[\"x\",\"y\"],\"exp\":1700000600}", SECRET,
     "wrong audience"},
    {"alg none, empty signature", "{\"alg\":\"none\",\"typ\":\"JWT\"}",
     "{" GOOD_CLAIMS ",\"exp\":1700000600}", NULL, "malformed token"},
    {"alg none, with a signature", "{\"alg\":\"none\"}", "{" GOOD_CLAIMS ",\"exp\":1700000600}",
     SECRET, "algorithm not allowed"},
    {"alg lowercase", "{\"alg\":\"hs256\"}", "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET,
     "algorithm not allowed"},
    {"alg HS512", "{\"alg\":\"HS512\"}", "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET,
     "algorithm not allowed"},
    {"alg missing", "{\"typ\":\"JWT\"}", "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET,
     "algorithm not allowed"},
    {"alg not a string", "{\"alg\":1}", "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET,
     "algorithm not allowed"},
    {"typ other", "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", "{" GOOD_CLAIMS ",\"exp\":1700000600}",
     SECRET, "unsupported token type"},
    {"crit present", "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}",
     "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET, "unsupported critical header"},
    {"duplicate alg", "{\"alg\":\"none\",\"alg\":\"HS256\"}",
     "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET, "malformed header"},
    {"header not an object", "[\"HS256\"]", "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET,
     "malformed header"},
    {"other secret", HS, "{" GOOD_CLAIMS ",\"exp\":1700000600}",
     "another-secret-of-at-least-32-bytes!!", "bad signature"},
    {"payload not an object", HS, "[1]", SECRET, "malformed payload"},
    {"payload with duplicate exp", HS, "{" GOOD_CLAIMS ",\"exp\":1,\"exp\":1700000600}", SECRET,
     "malformed payload"},
};

static void test_verify_table(void **state)
{
    (void)state;
    tr_jwt_keys_t *keys;
    load(&hs_cfg, &keys);
    for (size_t i = 0; i < sizeof(verify_cases) / sizeof(verify_cases[0]); i++) {
        const struct verify_case *c = &verify_cases[i];
        char *tok = craft(c->header, c->payload, c->key, c->key ? strlen(c->key) : 0);
        json_t *claims = (json_t *)1;
        const char *why = "unset";
        int rc = tr_jwt_verify(keys, tok, NOW, &claims, &why);
        if (c->why) {
            if (rc != -EINVAL || !why || strcmp(why, c->why) != 0)
                fail_msg("%s: rc %d why \"%s\", want \"%s\"", c->name, rc, why ? why : "(null)",
                         c->why);
            assert_null(claims);
        } else {
            if (rc != 0) fail_msg("%s: rejected: %s", c->name, why ? why : "(null)");
            assert_null(why);
            assert_string_equal(json_string_value(json_object_get(claims, "iss")), "trellis-auth");
            json_decref(claims);
        }
        free(tok);
    }
    tr_jwt_keys_free(keys);
}

static void test_malformed_tokens(void **state)
{
    (void)state;
    tr_jwt_keys_t *keys;
    load(&hs_cfg, &keys);
    char *good = craft(HS, "{" GOOD_CLAIMS ",\"exp\":1700000600}", SECRET, strlen(SECRET));
    size_t n = strlen(good);

    char *truncated[] = {strndup(good, n - 1), strndup(good, n / 2), strndup(good, 10)};
    char *padded = calloc(1, n + 4);
    assert_non_null(padded);
    /* base64 padding and stray characters are not base64url. */
    const char *dot = strchr(good, '.');
    memcpy(padded, good, (size_t)(dot - good));
    strcat(padded, "=");
    strcat(padded, dot);
    char *tampered = strdup(good);
    tampered[(size_t)(dot - good) + 3] ^= 1;

    const char *bad[] = {
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "...",
        ".e30.sig",
        "e30..sig",
        "e30.e30.",
        "!!!.###.$$$",
        "eyJhbGciOiJIUzI1NiJ9.eyJ9.c2ln",
        truncated[0],
        truncated[1],
        truncated[2],
        padded,
        tampered,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *claims = NULL;
        const char *why = NULL;
        if (tr_jwt_verify(keys, bad[i], NOW, &claims, &why) != -EINVAL)
            fail_msg("accepted bad token #%zu \"%s\"", i, bad[i]);
        assert_non_null(why);
        assert_null(claims);
    }
    json_t *claims = NULL;
    assert_int_equal(tr_jwt_verify(keys, NULL, NOW, &claims, NULL), -EINVAL);
    assert_int_equal(tr_jwt_verify(keys, good, NOW, &claims, NULL), 0);
    json_decref(claims);

    for (size_t i = 0; i < 3; i++)
        free(truncated[i]);
    free(padded);
    free(tampered);
    free(good);
    tr_jwt_keys_free(keys);
}

static void test_overlong_token(void **state)
{
    (void)state;
    tr_jwt_keys_t *keys;
    load(&hs_cfg, &keys);
    /* Correctly signed, but over 8 KiB: refused before any decoding. */
    size_t pad = 7000;
    char *payload = malloc(pad + 200);
    assert_non_null(payload);
    int off = snprintf(payload, 200, "{" GOOD_CLAIMS ",\"exp\":1700000600,\"pad\":\"");
    memset(payload + off, 'a', pad);
    strcpy(payload + off + pad, "\"}");
    char *tok = craft(HS, payload, SECRET, strlen(SECRET));
    assert_true(strlen(tok) > 8192);
    json_t *claims = NULL;
    const char *why = NULL;
    assert_int_equal(tr_jwt_verify(keys, tok, NOW, &claims, &why), -EINVAL);
    assert_string_equal(why, "token too long");

    /* The same shape just under the limit is fine. */
    payload[off + 5000] = '\0';
    strcat(payload, "\"}");
    free(tok);
    tok = craft(HS, payload, SECRET, strlen(SECRET));
    assert_true(strlen(tok) <= 8192);
    assert_int_equal(tr_jwt_verify(keys, tok, NOW, &claims, &why), 0);
    json_decref(claims);
    free(tok);
    free(payload);
    tr_jwt_keys_free(keys);
}

/* ---- round trips ---- */

/* Decodes segment idx (0 header, 1 payload, 2 signature) of a token. */
static size_t segment(const char *tok, int idx, unsigned char *out, size_t outlen)
{
    const char *s = tok;
    for (int i = 0; i < idx; i++)
        s = strchr(s, '.') + 1;
    const char *e = strchr(s, '.');
    size_t n = 0;
    assert_int_equal(sodium_base642bin(out, outlen, s, e ? (size_t)(e - s) : strlen(s), NULL, &n,
                                       NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    return n;
}

static void round_trip(const tr_jwt_config_t *sign_cfg, const tr_jwt_config_t *verify_cfg,
                       size_t sig_len)
{
    tr_jwt_keys_t *signer, *verifier;
    load(sign_cfg, &signer);
    load(verify_cfg, &verifier);

    json_t *in =
        json_pack("{s:s, s:s, s:s}", "sub", "0190a1b2-user", "role", "admin", "iss", "ignored");
    char *tok = NULL;
    int64_t before = (int64_t)time(NULL);
    assert_int_equal(tr_jwt_sign(signer, in, 900, &tok), 0);
    assert_non_null(tok);
    /* Borrowed: the caller's object is unchanged. */
    assert_string_equal(json_string_value(json_object_get(in, "iss")), "ignored");
    assert_null(json_object_get(in, "exp"));

    unsigned char buf[1024];
    size_t n = segment(tok, 0, buf, sizeof(buf));
    json_t *hdr = json_loadb((const char *)buf, n, 0, NULL);
    assert_non_null(hdr);
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), sign_cfg->alg);
    if (sign_cfg->key_id)
        assert_string_equal(json_string_value(json_object_get(hdr, "kid")), sign_cfg->key_id);
    else
        assert_null(json_object_get(hdr, "kid"));
    json_decref(hdr);
    assert_int_equal(segment(tok, 2, buf, sizeof(buf)), sig_len);

    json_t *claims = NULL;
    const char *why = NULL;
    int64_t now = (int64_t)time(NULL);
    if (tr_jwt_verify(verifier, tok, now, &claims, &why) != 0) fail_msg("rejected: %s", why);
    assert_string_equal(json_string_value(json_object_get(claims, "sub")), "0190a1b2-user");
    assert_string_equal(json_string_value(json_object_get(claims, "role")), "admin");
    assert_string_equal(json_string_value(json_object_get(claims, "iss")), sign_cfg->issuer);
    assert_string_equal(json_string_value(json_object_get(claims, "aud")), sign_cfg->audience);
    json_int_t iat = json_integer_value(json_object_get(claims, "iat"));
    assert_true(iat >= before && iat <= now);
    assert_int_equal(json_integer_value(json_object_get(claims, "nbf")), iat);
    assert_int_equal(json_integer_value(json_object_get(claims, "exp")), iat + 900);
    json_decref(claims);

    /* Past its lifetime the same token is refused. */
    assert_int_equal(tr_jwt_verify(verifier, tok, iat + 900 + LEEWAY, &claims, &why), -EINVAL);
    assert_string_equal(why, "token expired");

    free(tok);
    json_decref(in);
    tr_jwt_keys_free(signer);
    tr_jwt_keys_free(verifier);
}

static void test_hs256_round_trip(void **state)
{
    (void)state;
    tr_jwt_config_t cfg = hs_cfg;
    round_trip(&cfg, &cfg, 32);
    cfg.key_id = "hs-1";
    round_trip(&cfg, &cfg, 32);
}

static void test_rs256_round_trip(void **state)
{
    (void)state;
    tr_jwt_config_t cfg = hs_cfg;
    cfg.alg = "RS256";
    cfg.secret = NULL;
    cfg.private_key_file = rsa_priv;
    cfg.public_key_file = rsa_pub;
    cfg.key_id = "rsa-2024";
    tr_jwt_config_t verify_only = cfg;
    verify_only.private_key_file = NULL;
    round_trip(&cfg, &verify_only, 256);
    /* Private key alone: the public half is derived. */
    tr_jwt_config_t priv_only = cfg;
    priv_only.public_key_file = NULL;
    round_trip(&priv_only, &cfg, 256);
}

static void test_es256_round_trip(void **state)
{
    (void)state;
    tr_jwt_config_t cfg = hs_cfg;
    cfg.alg = "ES256";
    cfg.secret = NULL;
    cfg.private_key_file = ec_priv;
    cfg.public_key_file = ec_pub;
    tr_jwt_config_t verify_only = cfg;
    verify_only.private_key_file = NULL;
    /* JOSE signatures are raw r||s (64 bytes), not DER. */
    round_trip(&cfg, &verify_only, 64);
}

/* The remaining ways to call the API wrong are refused, not crashed on:
 * empty issuer or audience, no configuration, no room for the message, and
 * signing without claims, with non-object claims or a non-positive TTL. A
 * configured key id travels in the header. */
static void test_api_misuse_and_kid(void **state)
{
    (void)state;
    tr_jwt_keys_t *keys = (tr_jwt_keys_t *)1;
    char err[128] = "";
    assert_int_equal(tr_jwt_keys_load(NULL, &keys, err, sizeof(err)), -EINVAL);
    assert_null(keys);
    assert_true(err[0] != '\0');
    tr_jwt_config_t cfg = hs_cfg;
    cfg.issuer = "";
    assert_int_equal(tr_jwt_keys_load(&cfg, &keys, NULL, 0), -EINVAL); /* no err buffer */
    cfg = hs_cfg;
    cfg.audience = "";
    err[0] = '\0';
    assert_int_equal(tr_jwt_keys_load(&cfg, &keys, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "audience"));

    cfg = hs_cfg;
    cfg.key_id = "k-2026";
    load(&cfg, &keys);
    json_t *claims = json_pack("{s:s}", "sub", "u1");
    json_t *array = json_array();
    char *tok = (char *)1;
    assert_int_equal(tr_jwt_sign(keys, NULL, 60, &tok), -EINVAL);
    assert_null(tok);
    assert_int_equal(tr_jwt_sign(keys, array, 60, &tok), -EINVAL);
    assert_int_equal(tr_jwt_sign(keys, claims, 0, &tok), -EINVAL);
    assert_int_equal(tr_jwt_sign(keys, claims, -5, &tok), -EINVAL);
    assert_int_equal(tr_jwt_sign(NULL, claims, 60, &tok), -EINVAL);
    assert_int_equal(tr_jwt_sign(keys, claims, 60, &tok), 0);
    unsigned char head[256];
    size_t n = segment(tok, 0, head, sizeof(head) - 1);
    head[n] = '\0';
    json_t *h = json_loads((const char *)head, 0, NULL);
    assert_non_null(h);
    assert_string_equal(json_string_value(json_object_get(h, "kid")), "k-2026");
    json_t *out = NULL;
    const char *why = NULL;
    assert_int_equal(tr_jwt_verify(keys, tok, (int64_t)time(NULL), &out, &why), 0);
    json_decref(out);
    assert_int_equal(tr_jwt_verify(keys, NULL, 0, &out, &why), -EINVAL);
    assert_string_equal(why, "missing token");
    assert_int_equal(tr_jwt_verify(NULL, tok, 0, &out, &why), -EINVAL);
    json_decref(h);
    free(tok);
    json_decref(array);
    json_decref(claims);
    tr_jwt_keys_free(keys);
}

static void test_verify_only_cannot_sign(void **state)
{
    (void)state;
    tr_jwt_config_t cfg = hs_cfg;
    cfg.alg = "RS256";
    cfg.public_key_file = rsa_pub;
    tr_jwt_keys_t *keys;
    load(&cfg, &keys);
    json_t *claims = json_object();
    char *tok = (char *)1;
    assert_int_equal(tr_jwt_sign(keys, claims, 60, &tok), -EINVAL);
    assert_null(tok);
    json_decref(claims);
    tr_jwt_keys_free(keys);
}

/* ---- algorithm confusion ---- */

static void test_alg_confusion(void **state)
{
    (void)state;
    tr_jwt_config_t rs = hs_cfg;
    rs.alg = "RS256";
    rs.secret = NULL;
    rs.public_key_file = rsa_pub;
    tr_jwt_keys_t *verifier;
    load(&rs, &verifier);

    /* The classic forgery: HS256 keyed with the (public) RSA key PEM. */
    size_t pem_len;
    char *pem = read_file(rsa_pub, &pem_len);
    const char *payload = "{" GOOD_CLAIMS ",\"exp\":1700000600}";
    char *forged = craft(HS, payload, pem, pem_len);
    json_t *claims = NULL;
    const char *why = NULL;
    assert_int_equal(tr_jwt_verify(verifier, forged, NOW, &claims, &why), -EINVAL);
    assert_string_equal(why, "algorithm not allowed");
    assert_null(claims);
    free(forged);

    /* A genuine HS256 token is no better. */
    tr_jwt_keys_t *hs;
    load(&hs_cfg, &hs);
    json_t *in = json_object();
    char *tok;
    assert_int_equal(tr_jwt_sign(hs, in, 60, &tok), 0);
    assert_int_equal(tr_jwt_verify(verifier, tok, (int64_t)time(NULL), &claims, &why), -EINVAL);
    assert_string_equal(why, "algorithm not allowed");
    free(tok);

    /* Nor is an ES256 token, and RS256 is refused by an ES256 verifier. */
    tr_jwt_config_t es = rs;
    es.alg = "ES256";
    es.private_key_file = ec_priv;
    es.public_key_file = NULL;
    tr_jwt_keys_t *es_keys;
    load(&es, &es_keys);
    assert_int_equal(tr_jwt_sign(es_keys, in, 60, &tok), 0);
    assert_int_equal(tr_jwt_verify(verifier, tok, (int64_t)time(NULL), &claims, &why), -EINVAL);
    assert_string_equal(why, "algorithm not allowed");
    free(tok);

    tr_jwt_config_t rs_signer = rs;
    rs_signer.private_key_file = rsa_priv;
    tr_jwt_keys_t *rs_keys;
    load(&rs_signer, &rs_keys);
    assert_int_equal(tr_jwt_sign(rs_keys, in, 60, &tok), 0);
    assert_int_equal(tr_jwt_verify(es_keys, tok, (int64_t)time(NULL), &claims, &why), -EINVAL);
    assert_string_equal(why, "algorithm not allowed");
    free(tok);

    /* Signed by a different RSA key. */
    rs.public_key_file = rsa_other_pub;
    tr_jwt_keys_t *other;
    load(&rs, &other);
    assert_int_equal(tr_jwt_sign(rs_keys, in, 60, &tok), 0);
    assert_int_equal(tr_jwt_verify(other, tok, (int64_t)time(NULL), &claims, &why), -EINVAL);
    assert_string_equal(why, "bad signature");
    free(tok);

    json_decref(in);
    free(pem);
    tr_jwt_keys_free(other);
    tr_jwt_keys_free(rs_keys);
    tr_jwt_keys_free(es_keys);
    tr_jwt_keys_free(hs);
    tr_jwt_keys_free(verifier);
}

/* ---- tampering with RS256 / ES256 tokens ---- */

static void expect_bad_signature(const tr_jwt_keys_t *keys, const char *tok, const char *what)
{
    json_t *claims = NULL;
    const char *why = NULL;
    if (tr_jwt_verify(keys, tok, (int64_t)time(NULL), &claims, &why) != -EINVAL)
        fail_msg("%s: accepted", what);
    if (strcmp(why, "bad signature") != 0) fail_msg("%s: %s", what, why);
    assert_null(claims);
}

static void test_tampered_signatures(void **state)
{
    (void)state;
    const char *algs[] = {"RS256", "ES256"};
    const char *privs[] = {rsa_priv, ec_priv};
    for (size_t a = 0; a < 2; a++) {
        tr_jwt_config_t cfg = hs_cfg;
        cfg.alg = algs[a];
        cfg.private_key_file = privs[a];
        tr_jwt_keys_t *keys;
        load(&cfg, &keys);
        json_t *in = json_pack("{s:s}", "sub", "u1");
        char *tok;
        assert_int_equal(tr_jwt_sign(keys, in, 60, &tok), 0);
        json_t *claims = NULL;
        assert_int_equal(tr_jwt_verify(keys, tok, (int64_t)time(NULL), &claims, NULL), 0);
        json_decref(claims);

        char *sig = strrchr(tok, '.') + 1;
        size_t sig_chars = strlen(sig);
        char *t = strdup(tok);
        t[sig - tok + (ptrdiff_t)sig_chars / 2] ^= 0x01;
        expect_bad_signature(keys, t, "signature bit flipped");
        free(t);

        /* Same signature over a changed payload (sub "u1" -> "u2"). */
        t = strdup(tok);
        char *dot = strchr(t, '.');
        unsigned char payload[512];
        size_t n = segment(tok, 1, payload, sizeof(payload));
        payload[n] = '\0';
        char *u1 = strstr((char *)payload, "\"u1\"");
        assert_non_null(u1);
        u1[2] = '2';
        char enc[1024];
        b64url(payload, n, enc, sizeof(enc));
        char *forged = malloc(strlen(tok) + 8);
        assert_non_null(forged);
        sprintf(forged, "%.*s.%s.%s", (int)(dot - t), t, enc, sig);
        expect_bad_signature(keys, forged, "payload changed");
        free(forged);
        free(t);

        /* A signature of the wrong size, e.g. DER where JOSE wants r||s. */
        unsigned char raw[600];
        n = segment(tok, 2, raw, sizeof(raw));
        raw[n] = 0;
        b64url(raw, n + 1, enc, sizeof(enc));
        forged = malloc(strlen(tok) + 8);
        assert_non_null(forged);
        sprintf(forged, "%.*s%s", (int)(sig - tok), tok, enc);
        expect_bad_signature(keys, forged, "signature one byte longer");
        free(forged);

        if (a == 1) {
            /* ES256: r and s swapped. */
            unsigned char swapped[64];
            memcpy(swapped, raw + 32, 32);
            memcpy(swapped + 32, raw, 32);
            b64url(swapped, 64, enc, sizeof(enc));
            forged = malloc(strlen(tok) + 8);
            assert_non_null(forged);
            sprintf(forged, "%.*s%s", (int)(sig - tok), tok, enc);
            expect_bad_signature(keys, forged, "r and s swapped");
            free(forged);
        }
        free(tok);
        json_decref(in);
        tr_jwt_keys_free(keys);
    }
}

/* ---- JWKS ---- */

static void expect_b64_param(json_t *jwk, const char *name, const char *pem_path, const char *param,
                             size_t pad)
{
    FILE *fp = fopen(pem_path, "r");
    assert_non_null(fp);
    EVP_PKEY *pkey = PEM_read_PUBKEY(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(pkey);
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, param, &bn), 1);
    unsigned char bin[512];
    int n = pad ? BN_bn2binpad(bn, bin, (int)pad) : BN_bn2bin(bn, bin);
    char want[1024];
    b64url(bin, (size_t)n, want, sizeof(want));
    assert_string_equal(json_string_value(json_object_get(jwk, name)), want);
    BN_free(bn);
    EVP_PKEY_free(pkey);
}

static void test_jwks(void **state)
{
    (void)state;
    tr_jwt_keys_t *keys;

    load(&hs_cfg, &keys);
    json_t *doc = tr_jwt_jwks(keys);
    assert_int_equal(json_array_size(json_object_get(doc, "keys")), 0);
    json_decref(doc);
    tr_jwt_keys_free(keys);

    tr_jwt_config_t rs = hs_cfg;
    rs.alg = "RS256";
    rs.public_key_file = rsa_pub;
    rs.key_id = "rsa-2024";
    load(&rs, &keys);
    doc = tr_jwt_jwks(keys);
    json_t *jwk = json_array_get(json_object_get(doc, "keys"), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "keys")), 1);
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "RSA");
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
    assert_string_equal(json_string_value(json_object_get(jwk, "kid")), "rsa-2024");
    assert_string_equal(json_string_value(json_object_get(jwk, "e")), "AQAB");
    assert_int_equal(strlen(json_string_value(json_object_get(jwk, "n"))), 342); /* 256 bytes */
    expect_b64_param(jwk, "n", rsa_pub, OSSL_PKEY_PARAM_RSA_N, 0);
    assert_null(json_object_get(jwk, "d"));
    json_decref(doc);
    tr_jwt_keys_free(keys);

    tr_jwt_config_t es = hs_cfg;
    es.alg = "ES256";
    es.private_key_file = ec_priv;
    load(&es, &keys);
    doc = tr_jwt_jwks(keys);
    jwk = json_array_get(json_object_get(doc, "keys"), 0);
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "ES256");
    assert_null(json_object_get(jwk, "kid"));
    assert_null(json_object_get(jwk, "d"));
    expect_b64_param(jwk, "x", ec_pub, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    expect_b64_param(jwk, "y", ec_pub, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    json_decref(doc);
    tr_jwt_keys_free(keys);
}

/* ---- configuration errors ---- */

static void test_load_errors(void **state)
{
    (void)state;
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/nope.pem", tmpdir);
    const struct {
        const char *name;
        tr_jwt_config_t cfg;
    } cases[] = {
        {"alg none", {.alg = "none", .secret = SECRET, .issuer = "i", .audience = "a"}},
        {"alg HS512", {.alg = "HS512", .secret = SECRET, .issuer = "i", .audience = "a"}},
        {"alg lowercase", {.alg = "hs256", .secret = SECRET, .issuer = "i", .audience = "a"}},
        {"no alg", {.secret = SECRET, .issuer = "i", .audience = "a"}},
        {"secret 31 bytes",
         {.alg = "HS256",
          .secret = "0123456789abcdef0123456789abcde",
          .issuer = "i",
          .audience = "a"}},
        {"no secret", {.alg = "HS256", .issuer = "i", .audience = "a"}},
        {"no issuer", {.alg = "HS256", .secret = SECRET, .audience = "a"}},
        {"no audience", {.alg = "HS256", .secret = SECRET, .issuer = "i"}},
        {"RS256 without keys", {.alg = "RS256", .issuer = "i", .audience = "a"}},
        {"RS256 missing file",
         {.alg = "RS256", .public_key_file = missing, .issuer = "i", .audience = "a"}},
        {"RS256 with EC key",
         {.alg = "RS256", .public_key_file = ec_pub, .issuer = "i", .audience = "a"}},
        {"RS256 with 1024-bit key",
         {.alg = "RS256", .public_key_file = rsa_small, .issuer = "i", .audience = "a"}},
        {"RS256 public file as private",
         {.alg = "RS256", .private_key_file = rsa_pub, .issuer = "i", .audience = "a"}},
        {"RS256 mismatched pair",
         {.alg = "RS256",
          .private_key_file = rsa_priv,
          .public_key_file = rsa_other_pub,
          .issuer = "i",
          .audience = "a"}},
        {"ES256 with RSA key",
         {.alg = "ES256", .public_key_file = rsa_pub, .issuer = "i", .audience = "a"}},
        {"ES256 on P-384",
         {.alg = "ES256", .public_key_file = ec_p384, .issuer = "i", .audience = "a"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tr_jwt_keys_t *keys = (tr_jwt_keys_t *)1;
        char err[256] = "";
        int rc = tr_jwt_keys_load(&cases[i].cfg, &keys, err, sizeof(err));
        if (rc != -EINVAL) fail_msg("%s: rc %d", cases[i].name, rc);
        assert_null(keys);
        if (err[0] == '\0') fail_msg("%s: no message", cases[i].name);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_table),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_overlong_token),
        cmocka_unit_test(test_hs256_round_trip),
        cmocka_unit_test(test_rs256_round_trip),
        cmocka_unit_test(test_es256_round_trip),
        cmocka_unit_test(test_verify_only_cannot_sign),
        cmocka_unit_test(test_api_misuse_and_kid),
        cmocka_unit_test(test_alg_confusion),
        cmocka_unit_test(test_tampered_signatures),
        cmocka_unit_test(test_jwks),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, make_keys, remove_keys);
}

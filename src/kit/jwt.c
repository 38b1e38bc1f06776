/*
 * jwt.c - access tokens: signed with libjwt, verified here with the
 * algorithm pinned by configuration.
 *
 * DESIGN NOTES
 *
 * 1. The token's header never chooses how it is verified. libjwt 1.10's
 *    jwt_decode verifies with whatever algorithm the header names, using the
 *    key it is handed: given an RS256 public key and a token saying "HS256",
 *    it computes an HMAC keyed with the public PEM -- a key every attacker
 *    has (the algorithm-confusion forgery; it works against 1.10.2). So
 *    tr_jwt_verify parses the header itself and rejects any token whose
 *    "alg" is not byte-for-byte the configured one ("none" included), whose
 *    "typ" is present and not "JWT", or that carries "crit" (we honour no
 *    extensions, so we must refuse them, RFC 7515 4.1.11). The signature is
 *    then checked with the configured algorithm and key only.
 *
 * 2. Why the signature check is ours and not jwt_decode's, although libjwt
 *    signs: (a) libjwt 1.10 compares HMAC signatures with strcmp, which
 *    stops at the first differing byte -- a timing oracle for forging an
 *    HS256 signature byte by byte; we compare in constant time. (b) It
 *    re-parses the PEM key on every call, which costs ~430 us with OpenSSL 3
 *    decoders, twenty times the RSA verification itself. We parse keys once
 *    at load and keep the EVP_PKEY (read-only afterwards, so safe to share
 *    between worker threads). Verification runs on every authenticated
 *    request.
 *
 * 3. JOSE ES256 signatures are raw r||s (32 bytes each), not DER; they are
 *    converted to an ECDSA_SIG for OpenSSL. libjwt 1.10 signs in the JOSE
 *    form, so tokens interoperate with other implementations.
 *
 * 4. Claims come from our own decode of the payload segment -- the bytes the
 *    signature covers. Segments decode into one stack buffer, since a token
 *    is at most MAX_TOKEN bytes.
 *
 * 5. Keys are checked against the algorithm at load (RSA of at least 2048
 *    bits; EC on P-256) and the private key is re-encoded as PEM for libjwt.
 *    The public JWK is built at the same time. When only a private key file
 *    is given, the public key is derived from it.
 *
 * 6. iss and aud are required at load: a verifier that accepts tokens
 *    minted for any audience would honour tokens meant for other systems
 *    sharing the key.
 */
#include "kit/jwt.h"

#include <errno.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kit/alloc.h"
#include "kit/config.h"
#include "kit/log.h"

#define MAX_TOKEN        8192
#define MAX_SEGMENT_BIN  (MAX_TOKEN / 4 * 3 + 3)
#define MIN_HS256_SECRET 32
#define MIN_RSA_BITS     2048
#define B64URL           sodium_base64_VARIANT_URLSAFE_NO_PADDING

struct tr_jwt_keys {
    jwt_alg_t alg;
    char alg_name[8];
    unsigned char *sign_key; /* HS256 secret or private PEM; NULL = verify only */
    size_t sign_key_len;
    EVP_PKEY *public_key; /* RS256/ES256 verification key */
    char *issuer;
    char *audience;
    char *key_id;
    int64_t leeway_s;
    json_t *jwk; /* public JWK for RS256/ES256, NULL for HS256 */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void wipe_free(unsigned char *p, size_t len)
{
    if (!p) return;
    OPENSSL_cleanse(p, len);
    free(p);
}

void tr_jwt_keys_free(tr_jwt_keys_t *keys)
{
    if (!keys) return;
    wipe_free(keys->sign_key, keys->sign_key_len);
    EVP_PKEY_free(keys->public_key);
    free(keys->issuer);
    free(keys->audience);
    free(keys->key_id);
    json_decref(keys->jwk);
    free(keys);
}

/* Never prompts on a terminal for an encrypted key: fail instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static EVP_PKEY *read_pem(const char *path, bool private_key, char *err, size_t errlen)
{
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) {
        set_err(err, errlen, "cannot read key file %s", path);
        return NULL;
    }
    EVP_PKEY *pkey = private_key ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
                                 : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (!pkey)
        set_err(err, errlen, "%s is not an unencrypted PEM %s key", path,
                private_key ? "private" : "public (SubjectPublicKeyInfo)");
    return pkey;
}

/* PEM text of a private key, malloc'ed, for libjwt. The secure-memory BIO
 * clears the key text it held when it is freed. */
static int pem_encode_private(EVP_PKEY *pkey, unsigned char **out, size_t *outlen)
{
    int rc = -EINVAL;
    char *data = NULL;
    BIO *bio = BIO_new(BIO_s_secmem());
    if (!bio) return -ENOMEM;
    if (PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1) goto out;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0) goto out;
    *out = tr_xmalloc((size_t)n + 1);
    memcpy(*out, data, (size_t)n);
    (*out)[n] = '\0';
    *outlen = (size_t)n;
    rc = 0;
out:
    BIO_free(bio);
    return rc;
}

static int check_key_type(const tr_jwt_keys_t *keys, EVP_PKEY *pkey, const char *path, char *err,
                          size_t errlen)
{
    if (keys->alg == JWT_ALG_RS256) {
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
            set_err(err, errlen, "%s: RS256 needs an RSA key", path);
            return -EINVAL;
        }
        if (EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS) {
            set_err(err, errlen, "%s: RSA key must be at least %d bits", path, MIN_RSA_BITS);
            return -EINVAL;
        }
        return 0;
    }
    char group[64];
    size_t glen = 0;
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC ||
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen) != 1 ||
        strcmp(group, "prime256v1") != 0) {
        set_err(err, errlen, "%s: ES256 needs an EC key on curve P-256", path);
        return -EINVAL;
    }
    return 0;
}

/* Adds name: base64url of the big-endian bytes of a key parameter, left-
 * padded to pad bytes when pad is non-zero (EC coordinates are fixed-size). */
static int jwk_add_bn(json_t *jwk, const char *name, EVP_PKEY *pkey, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char bin[1024];
    char b64[sodium_base64_ENCODED_LEN(sizeof(bin), B64URL)];
    int rc = -EINVAL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1) goto out;
    size_t n = (size_t)BN_num_bytes(bn);
    if (pad) {
        if (n > pad || BN_bn2binpad(bn, bin, (int)pad) < 0) goto out;
        n = pad;
    } else {
        if (n == 0 || n > sizeof(bin)) goto out;
        BN_bn2bin(bn, bin);
    }
    sodium_bin2base64(b64, sizeof(b64), bin, n, B64URL);
    json_object_set_new(jwk, name, json_string(b64));
    rc = 0;
out:
    BN_free(bn);
    return rc;
}

static int build_jwk(tr_jwt_keys_t *keys, EVP_PKEY *pub)
{
    int rc;
    json_t *jwk = json_object();
    if (keys->alg == JWT_ALG_RS256) {
        json_object_set_new(jwk, "kty", json_string("RSA"));
        if ((rc = jwk_add_bn(jwk, "n", pub, OSSL_PKEY_PARAM_RSA_N, 0)) != 0) goto out;
        if ((rc = jwk_add_bn(jwk, "e", pub, OSSL_PKEY_PARAM_RSA_E, 0)) != 0) goto out;
    } else {
        json_object_set_new(jwk, "kty", json_string("EC"));
        json_object_set_new(jwk, "crv", json_string("P-256"));
        if ((rc = jwk_add_bn(jwk, "x", pub, OSSL_PKEY_PARAM_EC_PUB_X, 32)) != 0) goto out;
        if ((rc = jwk_add_bn(jwk, "y", pub, OSSL_PKEY_PARAM_EC_PUB_Y, 32)) != 0) goto out;
    }
    json_object_set_new(jwk, "alg", json_string(keys->alg_name));
    json_object_set_new(jwk, "use", json_string("sig"));
    if (keys->key_id) json_object_set_new(jwk, "kid", json_string(keys->key_id));
    keys->jwk = jwk;
    jwk = NULL;
out:
    json_decref(jwk);
    return rc;
}

/* The public half of a key, as a key holding nothing private. */
static EVP_PKEY *public_half(EVP_PKEY *pkey)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pkey, &der);
    if (n <= 0) return NULL;
    const unsigned char *p = der;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, n);
    OPENSSL_free(der);
    return pub;
}

static int load_asymmetric(tr_jwt_keys_t *keys, const tr_jwt_config_t *cfg, char *err,
                           size_t errlen)
{
    int rc = -EINVAL;
    EVP_PKEY *priv = NULL, *pub = NULL;
    const char *pub_path = cfg->public_key_file ? cfg->public_key_file : cfg->private_key_file;

    if (!cfg->public_key_file && !cfg->private_key_file) {
        set_err(err, errlen, "%s needs a public key file (and a private one to sign)",
                keys->alg_name);
        goto out;
    }
    if (cfg->private_key_file) {
        if (!(priv = read_pem(cfg->private_key_file, true, err, errlen))) goto out;
        if ((rc = check_key_type(keys, priv, cfg->private_key_file, err, errlen)) != 0) goto out;
        if ((rc = pem_encode_private(priv, &keys->sign_key, &keys->sign_key_len)) != 0) {
            set_err(err, errlen, "%s: cannot encode the private key", cfg->private_key_file);
            goto out;
        }
    }
    rc = -EINVAL;
    if (cfg->public_key_file) {
        if (!(pub = read_pem(cfg->public_key_file, false, err, errlen))) goto out;
        if ((rc = check_key_type(keys, pub, cfg->public_key_file, err, errlen)) != 0) goto out;
        if (priv && EVP_PKEY_eq(priv, pub) != 1) {
            set_err(err, errlen, "%s does not match %s", cfg->public_key_file,
                    cfg->private_key_file);
            rc = -EINVAL;
            goto out;
        }
    } else if (!(pub = public_half(priv))) {
        set_err(err, errlen, "%s: cannot derive the public key", pub_path);
        goto out;
    }
    if ((rc = build_jwk(keys, pub)) != 0) {
        set_err(err, errlen, "%s: cannot export the public key as a JWK", pub_path);
        goto out;
    }
    keys->public_key = pub;
    pub = NULL;
out:
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    return rc;
}

int tr_jwt_keys_load(const tr_jwt_config_t *cfg, tr_jwt_keys_t **out, char *err, size_t errlen)
{
    int rc = -EINVAL;
    tr_jwt_keys_t *keys = NULL;
    *out = NULL;

    if (!cfg || !cfg->alg) {
        set_err(err, errlen, "jwt algorithm not set");
        goto out;
    }
    if (!cfg->issuer || !*cfg->issuer || !cfg->audience || !*cfg->audience) {
        set_err(err, errlen, "jwt issuer and audience are required");
        goto out;
    }
    /* Idempotent and thread-safe; verification uses libsodium's HMAC. */
    if (sodium_init() < 0) {
        set_err(err, errlen, "libsodium failed to initialise");
        goto out;
    }
    keys = tr_xcalloc(1, sizeof(*keys));
    if (strcmp(cfg->alg, "HS256") == 0) {
        keys->alg = JWT_ALG_HS256;
    } else if (strcmp(cfg->alg, "RS256") == 0) {
        keys->alg = JWT_ALG_RS256;
    } else if (strcmp(cfg->alg, "ES256") == 0) {
        keys->alg = JWT_ALG_ES256;
    } else {
        set_err(err, errlen, "unsupported jwt algorithm \"%s\" (HS256, RS256 or ES256)", cfg->alg);
        goto out;
    }
    snprintf(keys->alg_name, sizeof(keys->alg_name), "%s", cfg->alg);
    keys->issuer = tr_xstrdup(cfg->issuer);
    keys->audience = tr_xstrdup(cfg->audience);
    keys->key_id = cfg->key_id && *cfg->key_id ? tr_xstrdup(cfg->key_id) : NULL;
    keys->leeway_s = cfg->leeway_s > 0 ? cfg->leeway_s : 0;

    if (keys->alg == JWT_ALG_HS256) {
        size_t len = cfg->secret ? strlen(cfg->secret) : 0;
        if (len < MIN_HS256_SECRET) {
            set_err(err, errlen, "HS256 secret must be at least %d bytes", MIN_HS256_SECRET);
            goto out;
        }
        keys->sign_key = (unsigned char *)tr_xstrdup(cfg->secret);
        keys->sign_key_len = len;
    } else if ((rc = load_asymmetric(keys, cfg, err, errlen)) != 0) {
        goto out;
    }
    *out = keys;
    keys = NULL;
    rc = 0;
out:
    if (rc != 0) ERR_clear_error();
    tr_jwt_keys_free(keys);
    return rc;
}

int tr_jwt_sign(const tr_jwt_keys_t *keys, json_t *claims, int64_t ttl_s, char **token)
{
    int rc = -EINVAL;
    json_t *payload = NULL;
    char *text = NULL;
    jwt_t *jwt = NULL;
    *token = NULL;

    if (!keys || !keys->sign_key || !json_is_object(claims) || ttl_s <= 0) goto out;
    int64_t now = (int64_t)time(NULL);
    payload = json_copy(claims);
    json_object_set_new(payload, "iss", json_string(keys->issuer));
    json_object_set_new(payload, "aud", json_string(keys->audience));
    json_object_set_new(payload, "iat", json_integer(now));
    json_object_set_new(payload, "nbf", json_integer(now));
    json_object_set_new(payload, "exp", json_integer(now + ttl_s));
    if (!(text = json_dumps(payload, JSON_COMPACT))) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = -jwt_new(&jwt)) != 0) goto out;
    if ((rc = -jwt_add_grants_json(jwt, text)) != 0) goto out;
    if ((rc = -jwt_set_alg(jwt, keys->alg, keys->sign_key, (int)keys->sign_key_len)) != 0) goto out;
    if (keys->key_id && (rc = -jwt_add_header(jwt, "kid", keys->key_id)) != 0) goto out;
    errno = 0;
    if (!(*token = jwt_encode_str(jwt))) rc = errno > 0 ? -errno : -ENOMEM;
out:
    jwt_free(jwt);
    free(text);
    json_decref(payload);
    return rc;
}

/* Decodes one base64url segment (no padding, canonical) into buf and parses
 * it as a JSON object. */
static json_t *decode_segment(const char *seg, size_t len, unsigned char *buf, size_t buflen)
{
    size_t n;
    if (sodium_base642bin(buf, buflen, seg, len, NULL, &n, NULL, B64URL) != 0) return NULL;
    json_t *obj = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* Checks the base64url signature sig over signing_input with the pinned
 * algorithm and key. HMAC tags are compared in constant time. */
static bool signature_ok(const tr_jwt_keys_t *keys, const char *signing_input, size_t input_len,
                         const char *sig, size_t sig_len)
{
    unsigned char raw[1024 + 1]; /* up to RSA-8192; one spare byte catches longer */
    unsigned char der[80];       /* DER ECDSA-Sig-Value for P-256 is at most 72 bytes */
    const unsigned char *check = raw;
    size_t n, check_len;
    bool ok = false;
    EVP_MD_CTX *ctx = NULL;
    ECDSA_SIG *es = NULL;

    if (sodium_base642bin(raw, sizeof(raw), sig, sig_len, NULL, &n, NULL, B64URL) != 0)
        return false;
    check_len = n;

    if (keys->alg == JWT_ALG_HS256) {
        unsigned char want[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        if (n != sizeof(want)) return false;
        crypto_auth_hmacsha256_init(&st, keys->sign_key, keys->sign_key_len);
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)signing_input, input_len);
        crypto_auth_hmacsha256_final(&st, want);
        sodium_memzero(&st, sizeof(st));
        return sodium_memcmp(want, raw, sizeof(want)) == 0;
    }

    if (keys->alg == JWT_ALG_ES256) {
        if (n != 64 || !(es = ECDSA_SIG_new())) goto out;
        BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
        if (!r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
            BN_free(r);
            BN_free(s);
            goto out;
        }
        unsigned char *p = der;
        int len = i2d_ECDSA_SIG(es, NULL);
        if (len <= 0 || (size_t)len > sizeof(der) || i2d_ECDSA_SIG(es, &p) != len) goto out;
        check = der;
        check_len = (size_t)len;
    } else if (n != (size_t)EVP_PKEY_get_size(keys->public_key)) {
        goto out;
    }
    if (!(ctx = EVP_MD_CTX_new())) goto out;
    ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, keys->public_key) == 1 &&
         EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)signing_input, input_len) ==
             1;
out:
    EVP_MD_CTX_free(ctx);
    ECDSA_SIG_free(es);
    /* A forged token must not leave errors queued for the next OpenSSL user
     * on this thread. */
    if (!ok) ERR_clear_error();
    return ok;
}

static bool audience_ok(const json_t *aud, const char *want)
{
    if (json_is_string(aud)) return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud)) return false;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0) return true;
    }
    return false;
}

/* The first reason the claims are unacceptable at now, or NULL. */
static const char *check_claims(const tr_jwt_keys_t *keys, const json_t *payload, int64_t now)
{
    const json_t *exp = json_object_get(payload, "exp");
    const json_t *nbf = json_object_get(payload, "nbf");
    const json_t *iss = json_object_get(payload, "iss");

    /* NumericDate may be fractional (RFC 7519 2), hence doubles. */
    if (!json_is_number(exp)) return "missing exp";
    if (json_number_value(exp) <= (double)now - (double)keys->leeway_s) return "token expired";
    if (nbf) {
        if (!json_is_number(nbf)) return "invalid nbf";
        if (json_number_value(nbf) > (double)now + (double)keys->leeway_s)
            return "token not yet valid";
    }
    if (!json_is_string(iss) || strcmp(json_string_value(iss), keys->issuer) != 0)
        return "wrong issuer";
    if (!audience_ok(json_object_get(payload, "aud"), keys->audience)) return "wrong audience";
    return NULL;
}

int tr_jwt_verify(const tr_jwt_keys_t *keys, const char *token, int64_t now, json_t **claims,
                  const char **why)
{
    unsigned char buf[MAX_SEGMENT_BIN];
    const char *reason = NULL;
    json_t *header = NULL, *payload = NULL;
    *claims = NULL;

    if (!keys || !token) {
        reason = "missing token";
        goto out;
    }
    size_t len = strnlen(token, MAX_TOKEN + 1);
    if (len > MAX_TOKEN) {
        reason = "token too long";
        goto out;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    const char *end = token + len;
    if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) || dot1 == token ||
        dot2 == dot1 + 1 || dot2 + 1 == end) {
        reason = "malformed token";
        goto out;
    }

    if (!(header = decode_segment(token, (size_t)(dot1 - token), buf, sizeof(buf)))) {
        reason = "malformed header";
        goto out;
    }
    const json_t *alg = json_object_get(header, "alg");
    const json_t *typ = json_object_get(header, "typ");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), keys->alg_name) != 0) {
        reason = "algorithm not allowed";
        goto out;
    }
    if (typ && (!json_is_string(typ) || strcmp(json_string_value(typ), "JWT") != 0)) {
        reason = "unsupported token type";
        goto out;
    }
    if (json_object_get(header, "crit")) {
        reason = "unsupported critical header";
        goto out;
    }

    if (!signature_ok(keys, token, (size_t)(dot2 - token), dot2 + 1, (size_t)(end - dot2 - 1))) {
        reason = "bad signature";
        goto out;
    }

    if (!(payload = decode_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf, sizeof(buf)))) {
        reason = "malformed payload";
        goto out;
    }
    if ((reason = check_claims(keys, payload, now)) != NULL) goto out;
    *claims = payload;
    payload = NULL;
out:
    json_decref(header);
    json_decref(payload);
    if (why) *why = reason;
    return reason ? -EINVAL : 0;
}

json_t *tr_jwt_jwks(const tr_jwt_keys_t *keys)
{
    json_t *list = json_array();
    if (keys && keys->jwk) json_array_append_new(list, json_deep_copy(keys->jwk));
    return json_pack("{s:o}", "keys", list);
}

int tr_jwt_keys_from_config(const tr_config_t *cfg, const char *data_dir, bool for_signing,
                            int64_t leeway_s, tr_jwt_keys_t **out)
{
    char err[256] = "";
    char *secret = NULL;
    int rc;
    tr_jwt_config_t jc = {
        .alg = tr_config_get(cfg, "jwt-alg"),
        .private_key_file = tr_config_get(cfg, "jwt-private-key"),
        .public_key_file = tr_config_get(cfg, "jwt-public-key"),
        .issuer = tr_config_get(cfg, "jwt-issuer"),
        .audience = tr_config_get(cfg, "jwt-audience"),
        .key_id = tr_config_get(cfg, "jwt-key-id"),
        .leeway_s = leeway_s,
    };
    *out = NULL;
    if (jc.alg && strcmp(jc.alg, "HS256") == 0) {
        rc = tr_config_secret(cfg, "jwt-secret", data_dir, "jwt_secret", 32, &secret);
        if (rc != 0) {
            tr_log_error("cannot load or create the JWT secret: %s", strerror(-rc));
            return rc;
        }
        jc.secret = secret;
    } else if (for_signing && !jc.private_key_file) {
        tr_log_error("--jwt-alg %s needs --jwt-private-key to sign tokens", jc.alg ? jc.alg : "");
        return -EINVAL;
    } else if (!jc.public_key_file && !jc.private_key_file) {
        tr_log_error("--jwt-alg %s needs --jwt-public-key or --jwt-private-key to verify tokens",
                     jc.alg ? jc.alg : "");
        return -EINVAL;
    }
    rc = tr_jwt_keys_load(&jc, out, err, sizeof(err));
    if (rc != 0) tr_log_error("invalid JWT configuration: %s", err);
    if (secret) {
        sodium_memzero(secret, strlen(secret));
        free(secret);
    }
    return rc;
}

/*
 * jwt.h - signing and verifying access tokens with a pinned algorithm.
 *
 * A verifier is configured with exactly one algorithm (HS256 by default, or
 * RS256 / ES256 with PEM key files). A token whose header names any other
 * algorithm -- including "none" -- is rejected before its signature is
 * looked at. exp and nbf are checked with a small leeway; iss and aud must
 * equal the configured values.
 */
#ifndef TR_JWT_H
#define TR_JWT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tr_jwt_keys tr_jwt_keys_t;

typedef struct tr_jwt_config {
    const char *alg;              /* "HS256", "RS256" or "ES256" */
    const char *secret;           /* HS256 shared secret */
    const char *private_key_file; /* RS256/ES256 PEM for signing (may be NULL to verify only) */
    const char *public_key_file;  /* RS256/ES256 PEM for verifying */
    const char *issuer;           /* iss to set and require */
    const char *audience;         /* aud to set and require */
    const char *key_id;           /* kid in the header and JWKS (optional) */
    int64_t leeway_s;             /* clock skew allowed for exp/nbf */
} tr_jwt_config_t;

/* Loads keys. Returns 0, or -EINVAL (unknown alg, missing or unreadable key,
 * HS256 secret under 32 bytes, issuer or audience unset) with a message in
 * err. For RS256/ES256 the public key is derived from the private one when
 * public_key_file is NULL. */
int tr_jwt_keys_load(const tr_jwt_config_t *cfg, tr_jwt_keys_t **out, char *err, size_t errlen);
void tr_jwt_keys_free(tr_jwt_keys_t *keys);

/* Signs claims (borrowed) after adding iss, aud, iat, nbf and exp = now +
 * ttl_s. *token is malloc'ed. Returns 0 or a negative code. */
int tr_jwt_sign(const tr_jwt_keys_t *keys, json_t *claims, int64_t ttl_s, char **token);
/* Verifies signature, algorithm, exp, nbf, iss and aud at time now (unix
 * seconds). On success *claims is a new reference to the payload. Returns 0
 * or -EINVAL (any defect; the reason goes to *why when why is non-NULL). */
int tr_jwt_verify(const tr_jwt_keys_t *keys, const char *token, int64_t now, json_t **claims,
                  const char **why);
/* The JWKS document ({"keys":[...]}) with the public key for RS256/ES256;
 * {"keys":[]} for HS256 (a shared secret is never published). New ref. */
json_t *tr_jwt_jwks(const tr_jwt_keys_t *keys);

/* Loads keys from a service's jwt-* options (jwt-alg, jwt-secret,
 * jwt-private-key, jwt-public-key, jwt-issuer, jwt-audience, jwt-key-id).
 * For HS256 the secret comes from tr_config_secret() (option, else
 * <data_dir>/secrets/jwt_secret, generated on first use), so every service
 * sharing a data directory verifies the same tokens. For RS256/ES256 a signer
 * (for_signing) needs jwt-private-key, a verifier either key file. Problems
 * are logged. Returns 0 or a negative code (-EINVAL for bad options). */
struct tr_config;
int tr_jwt_keys_from_config(const struct tr_config *cfg, const char *data_dir, bool for_signing,
                            int64_t leeway_s, tr_jwt_keys_t **out);

#endif

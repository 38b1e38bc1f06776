/*
 * cors.h - Cross-Origin Resource Sharing at the edge: which origins may
 * call the API from a browser, the answer to preflight requests, and the
 * headers of actual responses (https://fetch.spec.whatwg.org/#http-cors-protocol).
 *
 * Origins come from an allow-list (--cors-origins): exact origins compared
 * case-insensitively ("https://app.example.com"), or "*" for any origin.
 * With credentials allowed, "*" is never sent back: the caller's origin is
 * echoed (as the spec requires), which is also why every answer carries
 * "Vary: Origin" once CORS is on, so a cache never serves one origin's
 * answer to another. Preflights are answered here and never reach a
 * service. Pure functions: no I/O, no allocation after gw_cors_parse.
 */
#ifndef TR_GATEWAY_CORS_H
#define TR_GATEWAY_CORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/http.h"

typedef struct gw_cors {
    char **origins; /* lowercased */
    size_t norigins;
    bool any;         /* "*" was listed */
    bool credentials; /* Access-Control-Allow-Credentials: true */
    char max_age[24]; /* seconds, as text */
} gw_cors_t;

#define GW_CORS_MAX_HEADERS 6

typedef struct gw_cors_headers {
    tr_header_t h[GW_CORS_MAX_HEADERS];
    size_t n;
} gw_cors_headers_t;

/* Parses a comma-separated allow-list ("" or NULL: CORS off). Returns 0, or
 * -EINVAL with a message in err for an entry that is not "*" or
 * scheme://host[:port] without a path. */
int gw_cors_parse(gw_cors_t *c, const char *origins, bool credentials, uint64_t max_age_ms,
                  char *err, size_t errlen);
void gw_cors_free(gw_cors_t *c);
/* True when any origin is allowed (CORS is on). */
bool gw_cors_enabled(const gw_cors_t *c);
/* True when origin may call the API. */
bool gw_cors_origin_allowed(const gw_cors_t *c, const char *origin);

/* True when the request is a preflight: OPTIONS with Origin and
 * Access-Control-Request-Method. */
bool gw_cors_is_preflight(const char *method, const char *origin, const char *request_method);

typedef enum gw_cors_verdict {
    GW_CORS_ALLOW,          /* answer 204 with the headers */
    GW_CORS_ORIGIN_DENIED,  /* answer 403 */
    GW_CORS_HEADERS_INVALID /* Access-Control-Request-Headers is not a token list: 400 */
} gw_cors_verdict_t;

/* The answer to a preflight. request_headers may be NULL. The header values
 * point into c and the arguments. */
gw_cors_verdict_t gw_cors_preflight(const gw_cors_t *c, const char *origin,
                                    const char *request_method, const char *request_headers,
                                    gw_cors_headers_t *out);
/* The CORS headers of an actual answer (none when CORS is off; only
 * "Vary: Origin" for an origin that is not allowed or absent). */
void gw_cors_actual(const gw_cors_t *c, const char *origin, gw_cors_headers_t *out);

#endif

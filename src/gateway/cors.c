/*
 * cors.c - CORS decisions at the edge (see cors.h).
 *
 * The preflight answer allows the methods the gateway proxies and echoes
 * the requested headers when they are a well-formed token list: the routes
 * decide what a request may do, CORS only decides which pages may ask, so
 * restricting header names here would add configuration without adding
 * safety. Exposed headers are the ones a browser client needs to read:
 * the request id and the rate-limit state.
 */
#include "gateway/cors.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kit/alloc.h"

#define ALLOW_METHODS "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
#define EXPOSE_HEADERS                                                                             \
    "X-Request-Id, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After"
#define MAX_ORIGINS 256

static bool valid_origin(const char *s, size_t len)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < len; i++) {
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            sep = s + i;
            break;
        }
    }
    if (!sep || sep == s) return false;
    for (const char *p = s; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.') return false;
    const char *host = sep + 3, *end = s + len;
    if (host == end) return false;
    for (const char *p = host; p < end; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".-:[]_", *p)) return false;
    return true;
}

int gw_cors_parse(gw_cors_t *c, const char *origins, bool credentials, uint64_t max_age_ms,
                  char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->credentials = credentials;
    snprintf(c->max_age, sizeof(c->max_age), "%llu", (unsigned long long)(max_age_ms / 1000));
    if (!origins) return 0;
    for (const char *p = origins; *p;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        while (p < end && isspace((unsigned char)*p))
            p++;
        const char *e = end;
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        size_t len = (size_t)(e - p);
        if (len == 1 && *p == '*') {
            c->any = true;
        } else if (len > 0) {
            if (!valid_origin(p, len) || len > 255 || c->norigins == MAX_ORIGINS) {
                snprintf(err, errlen,
                         "--cors-origins: \"%.*s\" is not an origin such as "
                         "https://app.example.com (no path), or *",
                         (int)(len > 100 ? 100 : len), p);
                gw_cors_free(c);
                return -EINVAL;
            }
            c->origins = tr_xrealloc(c->origins, (c->norigins + 1) * sizeof(char *));
            char *o = tr_xstrndup(p, len);
            for (char *q = o; *q; q++)
                *q = (char)tolower((unsigned char)*q);
            c->origins[c->norigins++] = o;
        }
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

void gw_cors_free(gw_cors_t *c)
{
    for (size_t i = 0; i < c->norigins; i++)
        free(c->origins[i]);
    free(c->origins);
    c->origins = NULL;
    c->norigins = 0;
    c->any = false;
}

bool gw_cors_enabled(const gw_cors_t *c)
{
    return c->any || c->norigins > 0;
}

bool gw_cors_origin_allowed(const gw_cors_t *c, const char *origin)
{
    if (!origin || !*origin) return false;
    if (c->any) return true;
    for (size_t i = 0; i < c->norigins; i++)
        if (strcasecmp(c->origins[i], origin) == 0) return true;
    return false;
}

bool gw_cors_is_preflight(const char *method, const char *origin, const char *request_method)
{
    return strcmp(method, "OPTIONS") == 0 && origin && request_method;
}

static bool is_tchar(unsigned char ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A comma-separated list of header names, spaces allowed around commas. */
static bool token_list(const char *s)
{
    bool in_token = false, seen = false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (is_tchar(ch)) {
            in_token = seen = true;
        } else if (ch == ',') {
            if (!in_token && !seen) return false;
            in_token = false;
        } else if (ch != ' ' && ch != '\t') {
            return false;
        }
    }
    return true;
}

static void add(gw_cors_headers_t *out, const char *name, const char *value)
{
    if (out->n < GW_CORS_MAX_HEADERS) out->h[out->n++] = (tr_header_t){name, value};
}

static void allow_origin(const gw_cors_t *c, const char *origin, gw_cors_headers_t *out)
{
    add(out, "Access-Control-Allow-Origin", c->any && !c->credentials ? "*" : origin);
    if (c->credentials) add(out, "Access-Control-Allow-Credentials", "true");
}

gw_cors_verdict_t gw_cors_preflight(const gw_cors_t *c, const char *origin,
                                    const char *request_method, const char *request_headers,
                                    gw_cors_headers_t *out)
{
    out->n = 0;
    add(out, "Vary", "Origin");
    if (!gw_cors_origin_allowed(c, origin) || !request_method) return GW_CORS_ORIGIN_DENIED;
    if (request_headers && !token_list(request_headers)) return GW_CORS_HEADERS_INVALID;
    allow_origin(c, origin, out);
    add(out, "Access-Control-Allow-Methods", ALLOW_METHODS);
    if (request_headers && *request_headers)
        add(out, "Access-Control-Allow-Headers", request_headers);
    add(out, "Access-Control-Max-Age", c->max_age);
    return GW_CORS_ALLOW;
}

void gw_cors_actual(const gw_cors_t *c, const char *origin, gw_cors_headers_t *out)
{
    out->n = 0;
    if (!gw_cors_enabled(c)) return;
    add(out, "Vary", "Origin");
    if (!gw_cors_origin_allowed(c, origin)) return;
    allow_origin(c, origin, out);
    add(out, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
}

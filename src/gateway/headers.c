/*
 * headers.c - which headers cross the gateway, in each direction (pure).
 *
 * RFC 9110 §7.6.1: a proxy removes the hop-by-hop headers -- Connection and
 * every header it names, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade -- and Proxy-Authenticate/-Authorization, which
 * are for the proxy itself. Towards an upstream the gateway also drops what
 * it decides alone: the identity headers (a client must never be able to
 * say who it is by header), the internal token, framing (the client library
 * writes its own), Expect (the gateway answers 100-continue itself), and
 * the headers it sets again (X-Request-Id, traceparent, X-Forwarded-*,
 * Host, Via). Towards the client it drops what the server writes itself and
 * the security headers it sets on every answer.
 *
 * Names are compared case-insensitively, length first (the compiler counts
 * the literals), so the common header costs a few integer compares.
 */
#include "gateway/headers.h"

#include <string.h>
#include <strings.h>

#define IS(lit) (len == sizeof(lit) - 1 && strcasecmp(name, lit) == 0)

static bool hop_by_hop(const char *name, size_t len)
{
    return IS("Connection") || IS("Keep-Alive") || IS("Proxy-Connection") || IS("TE") ||
           IS("Trailer") || IS("Transfer-Encoding") || IS("Upgrade") || IS("Proxy-Authenticate") ||
           IS("Proxy-Authorization");
}

gw_header_action_t gw_request_header_action(const char *name, bool websocket)
{
    size_t len = strlen(name);
    if (websocket && IS("Upgrade")) return GW_HDR_UPGRADE;
    if (hop_by_hop(name, len)) return GW_HDR_DROP;
    if (IS("Host")) return GW_HDR_HOST;
    if (IS("Via")) return GW_HDR_VIA;
    if (IS("X-Forwarded-For")) return GW_HDR_XFF;
    if (IS("X-User-Id") || IS("X-User-Role") || IS("X-Session-Id") || IS("X-Internal-Token") ||
        IS("Content-Length") || IS("Expect") || IS("X-Request-Id") || IS("traceparent") ||
        IS("X-Forwarded-Host") || IS("X-Forwarded-Proto"))
        return GW_HDR_DROP;
    return GW_HDR_KEEP;
}

bool gw_response_header_dropped(const char *name, bool cors)
{
    size_t len = strlen(name);
    if (hop_by_hop(name, len)) return true;
    if (IS("Content-Length") || IS("Content-Type") || IS("Date") || IS("X-Request-Id") ||
        IS("Via") || IS("X-Content-Type-Options") || IS("Referrer-Policy") ||
        IS("Strict-Transport-Security"))
        return true;
    /* With CORS decided at the edge, an upstream's own CORS headers would
     * contradict it. */
    return cors && len >= 15 && strncasecmp(name, "Access-Control-", 15) == 0;
}

bool gw_header_has_token(const char *value, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = value; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == n && len > 0 && strncasecmp(p, token, n) == 0) return true;
        p = end;
    }
    return false;
}

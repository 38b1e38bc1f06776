/*
 * headers.h - which headers cross the gateway, each way (headers.c,
 * pure).
 */
#ifndef TR_GATEWAY_HEADERS_H
#define TR_GATEWAY_HEADERS_H

#include <stdbool.h>

typedef enum gw_header_action {
    GW_HDR_KEEP,   /* forwarded as is */
    GW_HDR_DROP,   /* never forwarded */
    GW_HDR_HOST,   /* becomes X-Forwarded-Host */
    GW_HDR_VIA,    /* extended with the gateway's hop */
    GW_HDR_XFF,    /* X-Forwarded-For: replaced, or extended with --trust-forwarded */
    GW_HDR_UPGRADE /* Upgrade, kept for a WebSocket pass-through */
} gw_header_action_t;

/* What happens to a client request header on its way to the upstream (a
 * header named in the request's Connection header is dropped too: see
 * gw_header_has_token). */
gw_header_action_t gw_request_header_action(const char *name, bool websocket);
/* True when an upstream response header is not relayed to the client. */
bool gw_response_header_dropped(const char *name, bool cors);
/* True when the comma-separated list value (e.g. a Connection header)
 * holds token, compared case-insensitively. */
bool gw_header_has_token(const char *value, const char *token);

#endif

/*
 * edge_auth.h - JWT verification at the edge and the identity of the
 * caller (edge_auth.c).
 */
#ifndef TR_GATEWAY_EDGE_AUTH_H
#define TR_GATEWAY_EDGE_AUTH_H

#include "gateway/routes.h"
#include "gateway/state.h"
#include "kit/http.h"

typedef enum gw_cred {
    GW_CRED_NONE,    /* no credentials given (or none accepted on this route) */
    GW_CRED_OK,      /* req->identity filled from a verified token */
    GW_CRED_API_KEY, /* an X-API-Key to check asynchronously (apikeys.c) */
    GW_CRED_INVALID  /* refused: *why says why (client-safe) */
} gw_cred_t;

/* Loads the JWT keys from the gateway's options (the same options and
 * secret file as auth). Returns 0 or -EINVAL after logging why. */
int gw_edge_auth_init(gw_state_t *st);
/* Looks at the credentials of a request for route r. Worker thread. */
gw_cred_t gw_edge_authenticate(gw_worker_t *gw, tr_req_t *req, const gw_route_t *r,
                               const char **why);

#endif

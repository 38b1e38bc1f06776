/*
 * router.h - method + path template routing.
 *
 * Templates are literal segments and {name} parameters, e.g.
 * "/api/auth/sessions/{id}". A parameter matches exactly one non-empty
 * segment. When several templates match a path, the one with a literal
 * segment at the first point where they differ wins, so "/users/me" beats
 * "/users/{id}". A path that matches a template under another method gives
 * TR_MATCH_METHOD_NOT_ALLOWED with the Allow list filled; HEAD is served by
 * GET routes. The router keeps pointers to the routes it was given: they must
 * outlive it (service route tables are static).
 */
#ifndef TR_ROUTER_H
#define TR_ROUTER_H

#include <stddef.h>

#include "kit/http.h"

/* What a route demands of its caller (the kit checks it, kit/authn.h). */
typedef enum tr_auth_mode {
    TR_AUTH_NONE = 0,     /* credentials are ignored */
    TR_AUTH_OPTIONAL = 1, /* identity filled when valid credentials come; bad ones get 401 */
    TR_AUTH_REQUIRED = 2, /* 401 without valid credentials */
    /* OR'ed with OPTIONAL or REQUIRED: an X-API-Key is accepted as well as a
     * bearer token ({..., TR_AUTH_REQUIRED | TR_AUTH_API_KEY, ...}). */
    TR_AUTH_API_KEY = 0x100
} tr_auth_mode_t;

/* The NONE/OPTIONAL/REQUIRED part of a route's auth, without flags. */
#define TR_AUTH_MODE(auth) ((tr_auth_mode_t)((auth)&0xff))

typedef void (*tr_handler_fn)(tr_req_t *req);

struct tr_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* path template */
    tr_handler_fn handler;
    tr_auth_mode_t auth;
    const char *roles; /* comma-separated roles allowed, NULL = any authenticated */
    size_t max_body;   /* request body limit in bytes; 0 = the server default */
};

typedef enum tr_match_result {
    TR_MATCH_OK,
    TR_MATCH_NOT_FOUND,
    TR_MATCH_METHOD_NOT_ALLOWED
} tr_match_result_t;

typedef struct tr_match {
    const tr_route_t *route;
    size_t nparams;
    struct {
        const char *name;
        const char *value; /* points into the matched path, not decoded */
        size_t value_len;
    } params[TR_MAX_PARAMS];
    char allow[128]; /* "GET, HEAD, POST" for METHOD_NOT_ALLOWED */
} tr_match_t;

typedef struct tr_router tr_router_t;

tr_router_t *tr_router_new(void);
void tr_router_free(tr_router_t *router);
/* Adds a route. Returns 0, -EINVAL for a malformed template (not starting with
 * '/', empty or unclosed {}, more than TR_MAX_PARAMS parameters) or -EEXIST
 * when the same method and template are already present. */
int tr_router_add(tr_router_t *router, const tr_route_t *route);
/* Matches method and path (path_len bytes, no query string). */
tr_match_result_t tr_router_match(const tr_router_t *router, const char *method, const char *path,
                                  size_t path_len, tr_match_t *out);

#endif

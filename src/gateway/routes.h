/*
 * routes.h - the gateway's route table: parsed and validated from a
 * declarative JSON file (docs/gateway.md, "Routes file"), matched against
 * request paths, and used to build the upstream request target.
 *
 * A table is immutable once parsed: the gateway shares one table between
 * all its worker threads and replaces it whole on SIGHUP (gateway.c), so
 * nothing here locks or allocates per request. Everything in a table is
 * owned by it and freed by gw_table_free.
 *
 * MATCHING. A route's path is a template of literal segments and {name}
 * parameters ("/api/users/{id}"), optionally ending in "/\*", which makes it
 * a prefix route: "/api/auth/\*" matches "/api/auth" and every path below it,
 * never "/api/authx". Paths are matched as sent (not percent-decoded). The
 * candidates are tried in one fixed order: exact templates before prefix
 * routes; among templates, the one with a literal segment at the first
 * position where two differ ("/users/me" before "/users/{id}"); among
 * prefix routes, the longest (most segments) first, then the same literal
 * rule. The first candidate that matches the path and allows the method
 * wins. When some matched the path but none allowed the method, the answer
 * is 405 with their methods in Allow. HEAD is allowed wherever GET is.
 *
 * REWRITE. Without a rewrite the upstream gets the path and query as sent.
 * A rewrite is a target template: {name} is replaced by that parameter
 * (percent-decoded, then re-encoded for where it lands: as a path segment
 * before '?', as a query value after it), and a trailing "/\*" by the rest of
 * the path below a prefix route's prefix ("" or "/..."). The request's own
 * query string is appended (after '&' when the rewrite has a query).
 */
#ifndef TR_GATEWAY_ROUTES_H
#define TR_GATEWAY_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/http.h"
#include "kit/ratelimit.h"
#include "kit/retry.h"
#include "kit/router.h"
#include "kit/upstream.h"

#define GW_MAX_SEGMENTS 32
#define GW_MAX_PARAMS   TR_MAX_PARAMS /* per route: keeps a match small (it is per request) */

/* Methods a route allows, as bits. 0 means any method at all. */
enum {
    GW_M_GET = 1u << 0,
    GW_M_HEAD = 1u << 1,
    GW_M_POST = 1u << 2,
    GW_M_PUT = 1u << 3,
    GW_M_PATCH = 1u << 4,
    GW_M_DELETE = 1u << 5,
    GW_M_OPTIONS = 1u << 6,
};

typedef struct gw_upstream_spec {
    char *name;
    tr_upstream_config_t config; /* name and instances point into this spec */
    char **instances;
    size_t ninstances;
    bool required;               /* /healthz answers 503 while it is down */
    uint64_t connect_timeout_ms; /* per connection attempt */
} gw_upstream_spec_t;

typedef struct gw_limit_spec {
    char *name;
    double rate;
    uint32_t burst;
    tr_ratelimit_key_kind_t key;
} gw_limit_spec_t;

typedef struct gw_segment {
    const char *text; /* literal text or parameter name; points into the route's path */
    size_t len;
    bool is_param;
} gw_segment_t;

/* A piece of a compiled rewrite. */
typedef struct gw_rewrite_part {
    enum { GW_RW_LITERAL, GW_RW_PARAM, GW_RW_REST } kind;
    const char *text; /* literal text; points into the route's rewrite string */
    size_t len;
    size_t param;  /* index of the parameter in the route's path (GW_RW_PARAM) */
    bool in_query; /* the part lands after the '?' */
} gw_rewrite_part_t;

typedef struct gw_route {
    char *name; /* label in metrics and logs; the path when not given */
    char *path; /* as written, e.g. "/api/users/{id}" or "/api/auth/\*" */
    gw_segment_t segments[GW_MAX_SEGMENTS];
    size_t nsegments;
    size_t nparams;
    bool prefix; /* the path ended in "/\*" */
    uint32_t literal_mask;
    unsigned methods; /* GW_M_* bits; 0 = any */
    size_t upstream;  /* index into the table's upstreams */
    tr_auth_mode_t auth;
    char *roles;         /* comma-separated, NULL = any authenticated caller */
    bool api_key;        /* X-API-Key is accepted as a credential */
    int limit;           /* index into the table's limits, -1 = none */
    uint64_t timeout_ms; /* total, to the response head */
    uint64_t try_timeout_ms;
    tr_retry_policy_t retry;
    size_t max_body;
    bool websocket; /* Upgrade: websocket is passed through */
    char *rewrite;  /* NULL = none */
    gw_rewrite_part_t *parts;
    size_t nparts;
    bool rewrite_has_query;
} gw_route_t;

typedef struct gw_table {
    gw_route_t *routes; /* in match order (see MATCHING) */
    size_t nroutes;
    gw_upstream_spec_t *upstreams;
    size_t nupstreams;
    gw_limit_spec_t *limits;
    size_t nlimits;
    char *source; /* the file it came from, or "built-in" */
} gw_table_t;

/* What default upstream addresses are made of: an upstream named after a
 * service of the registry (services/registry.h) with no "instances" gets
 * host:(port_base + its port offset). */
typedef struct gw_routes_env {
    const char *upstream_host;
    int port_base;
} gw_routes_env_t;

/* The built-in default routes: deploy/routes.json, embedded by the build
 * (cmake/EmbedText.cmake). */
extern const char gw_default_routes_json[];

/* Parses and validates a routes document. source names it in messages.
 * Returns 0 with *out, or -EINVAL with a one-line message in err naming the
 * offending field (e.g. "routes[3].timeout: expected a duration such as
 * \"30s\""); *out is then NULL. */
int gw_table_parse(const char *text, size_t len, const char *source, const gw_routes_env_t *env,
                   gw_table_t **out, char *err, size_t errlen);
/* Reads the file and parses it as above; a missing or unreadable file is
 * -ENOENT / -EIO with the reason in err. */
int gw_table_load_file(const char *path, const gw_routes_env_t *env, gw_table_t **out, char *err,
                       size_t errlen);
void gw_table_free(gw_table_t *t);

/* The index of the upstream with that name, or -1. */
int gw_table_upstream_index(const gw_table_t *t, const char *name);

/* Method name (as on the wire) -> GW_M_* bit; 0 for other methods. */
unsigned gw_method_bit(const char *method);

typedef enum gw_match_result {
    GW_MATCH_OK,
    GW_MATCH_NOT_FOUND,
    GW_MATCH_METHOD_NOT_ALLOWED
} gw_match_result_t;

typedef struct gw_match {
    const gw_route_t *route;
    struct {
        const char *value; /* raw, points into the matched path */
        size_t len;
    } params[GW_MAX_PARAMS];
    const char *rest; /* below a prefix route's prefix: "" or "/..." */
    size_t rest_len;
    char allow[96]; /* "GET, HEAD, POST" for METHOD_NOT_ALLOWED */
} gw_match_t;

/* Finds the route for method and path (path_len bytes, no query). */
gw_match_result_t gw_table_match(const gw_table_t *t, const char *method, const char *path,
                                 size_t path_len, gw_match_t *out);

/* An upper bound of the target length gw_route_target writes for a path of
 * path_len and a query of query_len bytes, NUL included. */
size_t gw_route_target_max(const gw_route_t *r, size_t path_len, size_t query_len);
/* Writes the upstream request target for a match (see REWRITE) into out
 * (outlen >= gw_route_target_max). path and query are the request's (query
 * without '?', "" when none). Returns the length, or -EINVAL when a
 * parameter the rewrite uses holds a malformed or NUL percent-escape. */
int gw_route_target(const gw_route_t *r, const gw_match_t *m, const char *path, size_t path_len,
                    const char *query, char *out, size_t outlen);

/* What a request path is, for the checks that come before matching. */
typedef enum gw_path_kind {
    GW_PATH_OK,       /* an ordinary absolute path */
    GW_PATH_INTERNAL, /* /internal or below, also when spelled with escapes: never routed */
    GW_PATH_INVALID   /* not absolute, a "." or ".." segment (also escaped), an escaped NUL, a
                       * malformed escape, or a raw control character or space: refused with 400
                       * so no upstream can resolve it to somewhere else */
} gw_path_kind_t;
gw_path_kind_t gw_path_classify(const char *path, size_t len);

#endif

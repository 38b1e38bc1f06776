/*
 * router.c - method + path template matching.
 *
 * Routes are few (tens per service) and fixed at start, so they are kept as a
 * flat array of pre-split templates and matched by a linear scan that
 * compares segments in place: no allocation per request, and the cost of a
 * match is a few hundred byte comparisons.
 *
 * SPECIFICITY. Among templates that match a path, a literal segment beats a
 * parameter at the first position where two templates differ ("/users/me"
 * beats "/users/{id}" whatever the order they were added in). That is
 * computed as a bitmask per template, bit i (from the most significant) set
 * when segment i is literal; the larger mask wins.
 */
#include "kit/router.h"
#include "kit/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_SEGMENTS 32

typedef struct segment {
    const char *text; /* literal text, or the parameter name */
    size_t len;
    int is_param;
} segment_t;

typedef struct entry {
    const tr_route_t *route;
    segment_t segments[MAX_SEGMENTS];
    size_t nsegments;
    uint32_t literal_mask;
    char *names; /* storage for parameter names (NUL-terminated copies) */
} entry_t;

struct tr_router {
    entry_t *entries;
    size_t count;
    size_t cap;
};

tr_router_t *tr_router_new(void)
{
    return tr_xcalloc(1, sizeof(tr_router_t));
}

void tr_router_free(tr_router_t *router)
{
    if (!router) return;
    for (size_t i = 0; i < router->count; i++)
        free(router->entries[i].names);
    free(router->entries);
    free(router);
}

/* Splits a template into segments. Parameter names are copied into
 * e->names so they can be handed out NUL-terminated. */
static int compile(const char *pattern, entry_t *e)
{
    if (!pattern || pattern[0] != '/') return -EINVAL;
    size_t plen = strlen(pattern);
    e->names = tr_xmalloc(plen + 1);
    char *names = e->names;
    size_t nparams = 0;
    const char *p = pattern + 1;

    e->nsegments = 0;
    e->literal_mask = 0;
    if (*p == '\0') return 0; /* "/" has no segments */
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || e->nsegments == MAX_SEGMENTS) return -EINVAL;
        segment_t *s = &e->segments[e->nsegments];
        if (p[0] == '{') {
            if (len < 3 || p[len - 1] != '}' || ++nparams > TR_MAX_PARAMS) return -EINVAL;
            if (memchr(p + 1, '{', len - 2) || memchr(p + 1, '}', len - 2)) return -EINVAL;
            memcpy(names, p + 1, len - 2);
            names[len - 2] = '\0';
            s->text = names;
            s->len = len - 2;
            s->is_param = 1;
            names += len - 1;
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len)) return -EINVAL;
            s->text = p;
            s->len = len;
            s->is_param = 0;
            e->literal_mask |= 1u << (MAX_SEGMENTS - 1 - e->nsegments);
        }
        e->nsegments++;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

static int same_template(const entry_t *a, const entry_t *b)
{
    if (a->nsegments != b->nsegments) return 0;
    for (size_t i = 0; i < a->nsegments; i++) {
        const segment_t *x = &a->segments[i], *y = &b->segments[i];
        if (x->is_param != y->is_param) return 0;
        if (!x->is_param && (x->len != y->len || memcmp(x->text, y->text, x->len) != 0)) return 0;
    }
    return 1;
}

int tr_router_add(tr_router_t *router, const tr_route_t *route)
{
    entry_t e = {.route = route};
    int rc = route->method && route->handler ? compile(route->pattern, &e) : -EINVAL;
    if (rc != 0) goto fail;
    for (size_t i = 0; i < router->count; i++) {
        if (strcmp(router->entries[i].route->method, route->method) == 0 &&
            same_template(&router->entries[i], &e)) {
            rc = -EEXIST;
            goto fail;
        }
    }
    if (router->count == router->cap) {
        router->cap = router->cap ? router->cap * 2 : 16;
        router->entries = tr_xrealloc(router->entries, router->cap * sizeof(entry_t));
    }
    router->entries[router->count++] = e;
    return 0;
fail:
    free(e.names);
    return rc;
}

/* Matches one template against the path; fills params when out is non-NULL. */
static int match_entry(const entry_t *e, const char *path, size_t path_len, tr_match_t *out)
{
    const char *p = path + 1, *end = path + path_len;
    size_t nparams = 0;

    if (path_len == 0 || path[0] != '/') return 0;
    if (e->nsegments == 0) return path_len == 1;
    for (size_t i = 0; i < e->nsegments; i++) {
        if (p > end) return 0;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        size_t len = (size_t)(seg_end - p);
        const segment_t *s = &e->segments[i];
        if (len == 0) return 0;
        if (s->is_param) {
            if (out) {
                out->params[nparams].name = s->text;
                out->params[nparams].value = p;
                out->params[nparams].value_len = len;
            }
            nparams++;
        } else if (len != s->len || memcmp(p, s->text, len) != 0) {
            return 0;
        }
        if (i + 1 == e->nsegments) {
            if (slash) return 0; /* path is longer than the template */
        } else if (!slash) {
            return 0; /* path is shorter */
        }
        p = seg_end + 1;
    }
    if (out) out->nparams = nparams;
    return 1;
}

static int method_matches(const char *route_method, const char *method)
{
    if (strcmp(route_method, method) == 0) return 1;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

static void allow_add(char *allow, size_t size, const char *method)
{
    /* Keep the list free of duplicates; it is short. */
    size_t mlen = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += mlen) {
        int starts = p == allow || p[-1] == ' ';
        int ends = p[mlen] == ',' || p[mlen] == '\0';
        if (starts && ends) return;
    }
    size_t used = strlen(allow);
    if (used + mlen + 3 >= size) return;
    if (used) {
        memcpy(allow + used, ", ", 2);
        used += 2;
    }
    memcpy(allow + used, method, mlen + 1);
}

tr_match_result_t tr_router_match(const tr_router_t *router, const char *method, const char *path,
                                  size_t path_len, tr_match_t *out)
{
    const entry_t *best = NULL;
    int path_known = 0;

    out->route = NULL;
    out->nparams = 0;
    out->allow[0] = '\0';
    for (size_t i = 0; i < router->count; i++) {
        const entry_t *e = &router->entries[i];
        if (!match_entry(e, path, path_len, NULL)) continue;
        path_known = 1;
        if (!method_matches(e->route->method, method)) continue;
        if (!best || e->literal_mask > best->literal_mask) best = e;
    }
    if (best) {
        match_entry(best, path, path_len, out);
        out->route = best->route;
        return TR_MATCH_OK;
    }
    if (!path_known) return TR_MATCH_NOT_FOUND;

    /* Any method that some matching template accepts is allowed. */
    for (size_t i = 0; i < router->count; i++) {
        const entry_t *e = &router->entries[i];
        if (!match_entry(e, path, path_len, NULL)) continue;
        allow_add(out->allow, sizeof(out->allow), e->route->method);
        if (strcmp(e->route->method, "GET") == 0) allow_add(out->allow, sizeof(out->allow), "HEAD");
    }
    return TR_MATCH_METHOD_NOT_ALLOWED;
}

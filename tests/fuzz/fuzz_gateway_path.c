/*
 * fuzz_gateway_path.c - libFuzzer target for the gateway's handling of
 * request paths, the untrusted input it routes on.
 *
 * Each input is a request path (and, after the first NUL, a query). It goes
 * through what the gateway does before proxying: classification (dot
 * segments, /internal), matching against the built-in routes and a table
 * with parameters and rewrites, building the upstream target, and mapping
 * to a file below the web root. Checks the contracts: a target always fits
 * the announced bound and never holds CR, LF or a NUL; a static path never
 * leaves the root (no "..", no absolute path, no hidden names).
 *
 * Seed corpus: tests/fuzz/corpus/gateway_path/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gw_table_t *defaults, *rewrites;

static void load_tables(void)
{
    static const gw_routes_env_t env = {"127.0.0.1", 8000};
    static const char doc[] =
        "{\"routes\": ["
        " {\"path\": \"/s/{q}\", \"upstream\": \"users\", \"rewrite\": \"/search?q={q}\"},"
        " {\"path\": \"/p/{a}/x/{b}\", \"upstream\": \"posts\", \"rewrite\": \"/{b}/{a}?k={a}\"},"
        " {\"path\": \"/w/*\", \"upstream\": \"wallet\", \"rewrite\": \"/api/wallet/*\"},"
        " {\"path\": \"/*\", \"upstream\": \"auth\"}"
        "]}";
    char err[256];
    if (gw_table_parse(gw_default_routes_json, strlen(gw_default_routes_json), "d", &env, &defaults,
                       err, sizeof(err)) != 0 ||
        gw_table_parse(doc, sizeof(doc) - 1, "r", &env, &rewrites, err, sizeof(err)) != 0)
        abort();
}

static void route(const gw_table_t *t, const char *path, size_t len, const char *query)
{
    gw_match_t m;
    if (gw_table_match(t, "GET", path, len, &m) != GW_MATCH_OK) return;
    size_t max = gw_route_target_max(m.route, len, strlen(query));
    char *out = malloc(max);
    int n = gw_route_target(m.route, &m, path, len, query, out, max);
    if (n >= 0) {
        if ((size_t)n >= max || strlen(out) != (size_t)n) abort();
        if (strpbrk(out, "\r\n")) abort();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!defaults) load_tables();
    /* path NUL query */
    char *buf = malloc(size + 2);
    memcpy(buf, data, size);
    buf[size] = '\0';
    buf[size + 1] = '\0';
    size_t plen = strlen(buf);
    const char *query = plen < size ? buf + plen + 1 : "";
    if (strpbrk(query, "\r\n")) query = "";

    if (gw_path_classify(buf, plen) == GW_PATH_OK && plen > 0) {
        route(defaults, buf, plen, query);
        route(rewrites, buf, plen, query);
    }
    char rel[512];
    if (gw_static_relpath(buf, plen, rel, sizeof(rel)) == 0) {
        /* Relative, no empty segment, no segment starting with '.' (so no
         * "." or ".."), no backslash. */
        if (rel[0] == '/' || rel[0] == '.' || strstr(rel, "/.") || strstr(rel, "//") ||
            strchr(rel, '\\'))
            abort();
    }
    free(buf);
    return 0;
}

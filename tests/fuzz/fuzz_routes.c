/*
 * fuzz_routes.c - libFuzzer target for the gateway routes file parser
 * (gateway/routes.c, gw_table_parse from memory): JSON, the schema checks,
 * quantities (durations, sizes), path templates and rewrites, and ordering.
 *
 * The input is the file's text. A refused file must say why (a NUL-
 * terminated message); an accepted table is matched against a few paths
 * and, for each match, the upstream target is built within the bound the
 * table announces and holds no CR, LF or NUL. Then the table is freed (a
 * leak fails the run under ASan). Seeds: tests/fuzz/corpus/routes/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void try_path(const gw_table_t *t, const char *method, const char *path, const char *query)
{
    gw_match_t m;
    size_t len = strlen(path);
    if (gw_table_match(t, method, path, len, &m) != GW_MATCH_OK) return;
    size_t max = gw_route_target_max(m.route, len, strlen(query));
    char *out = malloc(max);
    int n = gw_route_target(m.route, &m, path, len, query, out, max);
    if (n >= 0) {
        if ((size_t)n >= max || strlen(out) != (size_t)n || strpbrk(out, "\r\n")) abort();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const gw_routes_env_t env = {"127.0.0.1", 8000};
    gw_table_t *t = NULL;
    char err[256];
    err[0] = '\x7f';
    if (gw_table_parse((const char *)data, size, "fuzz", &env, &t, err, sizeof(err)) != 0) {
        if (t || !memchr(err, '\0', sizeof(err)) || err[0] == '\x7f') abort();
        return 0;
    }
    if (!t) abort();
    try_path(t, "GET", "/", "");
    try_path(t, "GET", "/api/users/42", "x=1");
    try_path(t, "POST", "/api/a%2Fb/c/d", "q=%20");
    try_path(t, "DELETE", "/api/wallet/x/y/z", "");
    try_path(t, "HEAD", "/s/%E2%82%AC", "k=v&k=w");
    gw_table_free(t);
    return 0;
}

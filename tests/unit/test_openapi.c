/*
 * test_openapi.c - docs/api/openapi.yaml documents every public route of
 * every service this binary runs (path and method), so the API description
 * cannot silently fall behind a route table. The /internal/ routes are not
 * public API: docs/gateway.md documents them, and openapi.yaml must not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "services/registry.h"

/* Reads a file of the repository (found from this source's path). */
static void read_repo_file(const char *rel, char *doc, size_t size)
{
    char path[4096];
    const char *marker = strstr(__FILE__, "tests/unit/");
    assert_non_null(marker);
    snprintf(path, sizeof(path), "%.*s%s", (int)(marker - __FILE__), __FILE__, rel);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s", path);
    size_t n = fread(doc, 1, size - 1, f);
    fclose(f);
    doc[n] = '\0';
}

/* Fails unless r is documented: in doc (public) or internal_doc. */
static void check_route(const char *service, const tr_route_t *r, const char *doc,
                        const char *internal_doc)
{
    char key[256], method[16];
    if (strncmp(r->pattern, "/internal/", 10) == 0) {
        snprintf(key, sizeof(key), "%s %s", r->method, r->pattern);
        if (!strstr(internal_doc, key)) fail_msg("docs/gateway.md lacks %s (%s)", key, service);
        if (strstr(doc, r->pattern)) fail_msg("openapi.yaml must not list %s", r->pattern);
        return;
    }
    snprintf(key, sizeof(key), "\n  %s:\n", r->pattern);
    const char *at = strstr(doc, key);
    if (!at) fail_msg("openapi.yaml lacks path %s (%s)", r->pattern, service);
    at += strlen(key);
    /* The path's block ends at the next path (two-space indent + '/'). */
    const char *end = strstr(at, "\n  /");
    size_t len = end ? (size_t)(end - at) : strlen(at);
    size_t m = 0;
    for (; r->method[m] && m < sizeof(method) - 1; m++)
        method[m] = (char)(r->method[m] - 'A' + 'a');
    method[m] = '\0';
    snprintf(key, sizeof(key), "\n    %s:\n", method);
    const char *hit = strstr(at - 1, key);
    if (!hit || (size_t)(hit - (at - 1)) > len)
        fail_msg("openapi.yaml lacks %s %s (%s)", r->method, r->pattern, service);
}

static void test_every_route_documented(void **state)
{
    (void)state;
    static char doc[512 * 1024], internal_doc[256 * 1024];
    read_repo_file("docs/api/openapi.yaml", doc, sizeof(doc));
    read_repo_file("docs/gateway.md", internal_doc, sizeof(internal_doc));
    size_t routes = 0;
    for (size_t k = 0; k < trellis_service_count(); k++) {
        const tr_service_def_t *def = trellis_service_at(k);
        for (size_t i = 0; i < def->nroutes; i++, routes++)
            check_route(def->name, &def->routes[i], doc, internal_doc);
    }
    assert_true(routes >= 25); /* auth's and the example's at least */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

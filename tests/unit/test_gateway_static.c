/* test_gateway_static.c - the dashboard's path handling: what a request path
 * may name below the web root (traversal attempts in every spelling),
 * content types and ETag matching. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/static.h"

static void test_relpath_table(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        int rc;
        const char *rel;
    } cases[] = {
        {"/", 0, "index.html"},
        {"/index.html", 0, "index.html"},
        {"/app.js", 0, "app.js"},
        {"/assets/", 0, "assets/index.html"},
        {"/assets/app.css", 0, "assets/app.css"},
        {"//assets//app.css", 0, "assets/app.css"},
        {"/a%20b.txt", 0, "a b.txt"},
        {"/caf%C3%A9.html", 0, "caf\xc3\xa9.html"},
        {"/a..b", 0, "a..b"},
        {"/..", -EINVAL, NULL},
        {"/../etc/passwd", -EINVAL, NULL},
        {"/assets/../../etc/passwd", -EINVAL, NULL},
        {"/./index.html", -EINVAL, NULL},
        {"/%2e%2e/etc/passwd", -EINVAL, NULL},
        {"/%2E%2E/etc/passwd", -EINVAL, NULL},
        {"/.%2e/etc/passwd", -EINVAL, NULL},
        {"/%2e/index.html", -EINVAL, NULL},
        {"/assets%2f..%2f..%2fetc%2fpasswd", -EINVAL, NULL},
        {"/..%5c..%5cetc%5cpasswd", -EINVAL, NULL},
        {"/a\\b", -EINVAL, NULL},
        {"/index.html%00.png", -EINVAL, NULL},
        {"/%zz", -EINVAL, NULL},
        {"/%4", -EINVAL, NULL},
        {"/.git/config", -EINVAL, NULL},
        {"/.env", -EINVAL, NULL},
        {"/assets/.hidden", -EINVAL, NULL},
        {"/%2egit/config", -EINVAL, NULL},
        {"", -EINVAL, NULL},
        {"relative", -EINVAL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256] = "";
        int rc = gw_static_relpath(cases[i].path, strlen(cases[i].path), out, sizeof(out));
        if (rc != cases[i].rc)
            fail_msg("case %zu (%s): rc %d, expected %d", i, cases[i].path, rc, cases[i].rc);
        if (rc == 0 && strcmp(out, cases[i].rel) != 0)
            fail_msg("case %zu (%s): \"%s\", expected \"%s\"", i, cases[i].path, out, cases[i].rel);
    }
}

static void test_relpath_bounds(void **state)
{
    (void)state;
    char small[16], path[600];
    assert_int_equal(gw_static_relpath("/abcdefghijklmnopqrstuvwxyz", 27, small, sizeof(small)),
                     -ENAMETOOLONG);
    /* The index name must fit too. */
    assert_int_equal(gw_static_relpath("/abcdefgh/", 10, small, sizeof(small)), -ENAMETOOLONG);
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    char out[512];
    assert_int_equal(gw_static_relpath(path, sizeof(path), out, sizeof(out)), -ENAMETOOLONG);
}

static void test_content_types(void **state)
{
    (void)state;
    static const struct {
        const char *name, *type;
    } cases[] = {
        {"index.html", "text/html; charset=utf-8"},
        {"a/b/app.JS", "text/javascript; charset=utf-8"},
        {"style.css", "text/css; charset=utf-8"},
        {"data.json", "application/json"},
        {"logo.svg", "image/svg+xml"},
        {"x.png", "image/png"},
        {"f.woff2", "font/woff2"},
        {"noext", "application/octet-stream"},
        {"dir.d/noext", "application/octet-stream"},
        {"archive.tar.gz", "application/octet-stream"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(gw_static_content_type(cases[i].name), cases[i].type);
}

static void test_etag_matching(void **state)
{
    (void)state;
    const char *etag = "\"2e1-18ea\"";
    assert_true(gw_static_etag_matches("\"2e1-18ea\"", etag));
    assert_true(gw_static_etag_matches("W/\"2e1-18ea\"", etag));
    assert_true(gw_static_etag_matches("\"x\", \"2e1-18ea\"", etag));
    assert_true(gw_static_etag_matches("*", etag));
    assert_false(gw_static_etag_matches("\"2e1-18eb\"", etag));
    assert_false(gw_static_etag_matches("\"2e1-18ea", etag));
    assert_false(gw_static_etag_matches("\"2e1-18ea\"x", etag));
    assert_false(gw_static_etag_matches("", etag));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relpath_table),
        cmocka_unit_test(test_relpath_bounds),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_etag_matching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

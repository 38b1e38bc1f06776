/* test_gateway_cors.c - the CORS allow-list, preflight answers and the
 * headers of actual answers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/cors.h"

static const char *header(const gw_cors_headers_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->h[i].name, name) == 0) return h->h[i].value;
    return NULL;
}

static void test_parse(void **state)
{
    (void)state;
    gw_cors_t c;
    char err[256];
    static const struct {
        const char *list;
        int rc;
        size_t n;
        bool any;
    } cases[] = {
        {NULL, 0, 0, false},
        {"", 0, 0, false},
        {"*", 0, 0, true},
        {"https://a.example", 0, 1, false},
        {" https://a.example , http://localhost:3000,* ", 0, 2, true},
        {"https://[::1]:8443", 0, 1, false},
        {"https://a.example/path", -EINVAL, 0, false},
        {"a.example", -EINVAL, 0, false},
        {"https://", -EINVAL, 0, false},
        {"https://a.example,ftp//x", -EINVAL, 0, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = gw_cors_parse(&c, cases[i].list, false, 600000, err, sizeof(err));
        if (rc != cases[i].rc) fail_msg("case %zu: rc %d (%s)", i, rc, err);
        if (rc == 0) {
            assert_int_equal(c.norigins, cases[i].n);
            assert_int_equal(c.any, cases[i].any);
            assert_int_equal(gw_cors_enabled(&c), cases[i].n > 0 || cases[i].any);
            gw_cors_free(&c);
        } else {
            assert_non_null(strstr(err, "--cors-origins"));
        }
    }
}

static void test_origins(void **state)
{
    (void)state;
    gw_cors_t c;
    char err[256];
    assert_int_equal(
        gw_cors_parse(&c, "https://App.Example, http://localhost:3000", false, 0, err, sizeof(err)),
        0);
    assert_true(gw_cors_origin_allowed(&c, "https://app.example"));
    assert_true(gw_cors_origin_allowed(&c, "HTTPS://APP.EXAMPLE"));
    assert_true(gw_cors_origin_allowed(&c, "http://localhost:3000"));
    assert_false(gw_cors_origin_allowed(&c, "http://localhost:3001"));
    assert_false(gw_cors_origin_allowed(&c, "https://app.example.evil"));
    assert_false(gw_cors_origin_allowed(&c, "https://evil.app.example"));
    assert_false(gw_cors_origin_allowed(&c, "null"));
    assert_false(gw_cors_origin_allowed(&c, ""));
    assert_false(gw_cors_origin_allowed(&c, NULL));
    gw_cors_free(&c);
}

static void test_preflight(void **state)
{
    (void)state;
    gw_cors_t c;
    gw_cors_headers_t h;
    char err[256];
    assert_true(gw_cors_is_preflight("OPTIONS", "https://a.example", "POST"));
    assert_false(gw_cors_is_preflight("OPTIONS", NULL, "POST"));
    assert_false(gw_cors_is_preflight("OPTIONS", "https://a.example", NULL));
    assert_false(gw_cors_is_preflight("POST", "https://a.example", "POST"));

    assert_int_equal(gw_cors_parse(&c, "https://a.example", false, 600000, err, sizeof(err)), 0);
    assert_int_equal(
        gw_cors_preflight(&c, "https://a.example", "PUT", "authorization, content-type", &h),
        GW_CORS_ALLOW);
    assert_string_equal(header(&h, "Vary"), "Origin");
    assert_string_equal(header(&h, "Access-Control-Allow-Origin"), "https://a.example");
    assert_non_null(strstr(header(&h, "Access-Control-Allow-Methods"), "PUT"));
    assert_string_equal(header(&h, "Access-Control-Allow-Headers"), "authorization, content-type");
    assert_string_equal(header(&h, "Access-Control-Max-Age"), "600");
    assert_null(header(&h, "Access-Control-Allow-Credentials"));

    assert_int_equal(gw_cors_preflight(&c, "https://evil.example", "PUT", NULL, &h),
                     GW_CORS_ORIGIN_DENIED);
    assert_string_equal(header(&h, "Vary"), "Origin");
    assert_null(header(&h, "Access-Control-Allow-Origin"));
    assert_int_equal(gw_cors_preflight(&c, "https://a.example", "PUT", "x-a\r\nx-b: 1", &h),
                     GW_CORS_HEADERS_INVALID);
    assert_int_equal(gw_cors_preflight(&c, "https://a.example", "PUT", "x(a)", &h),
                     GW_CORS_HEADERS_INVALID);
    assert_int_equal(gw_cors_preflight(&c, "https://a.example", "GET", "", &h), GW_CORS_ALLOW);
    assert_null(header(&h, "Access-Control-Allow-Headers"));
    gw_cors_free(&c);
}

static void test_wildcard_and_credentials(void **state)
{
    (void)state;
    gw_cors_t c;
    gw_cors_headers_t h;
    char err[256];
    /* Without credentials "*" is answered as "*". */
    assert_int_equal(gw_cors_parse(&c, "*", false, 0, err, sizeof(err)), 0);
    gw_cors_actual(&c, "https://any.example", &h);
    assert_string_equal(header(&h, "Access-Control-Allow-Origin"), "*");
    assert_non_null(strstr(header(&h, "Access-Control-Expose-Headers"), "RateLimit-Remaining"));
    gw_cors_free(&c);
    /* With credentials the origin is echoed, never "*". */
    assert_int_equal(gw_cors_parse(&c, "*", true, 0, err, sizeof(err)), 0);
    gw_cors_actual(&c, "https://any.example", &h);
    assert_string_equal(header(&h, "Access-Control-Allow-Origin"), "https://any.example");
    assert_string_equal(header(&h, "Access-Control-Allow-Credentials"), "true");
    gw_cors_free(&c);
}

static void test_actual(void **state)
{
    (void)state;
    gw_cors_t c;
    gw_cors_headers_t h;
    char err[256];
    /* CORS off: nothing at all. */
    assert_int_equal(gw_cors_parse(&c, NULL, false, 0, err, sizeof(err)), 0);
    gw_cors_actual(&c, "https://a.example", &h);
    assert_int_equal(h.n, 0);
    gw_cors_free(&c);
    /* On: Vary always, the rest only for allowed origins. */
    assert_int_equal(gw_cors_parse(&c, "https://a.example", false, 0, err, sizeof(err)), 0);
    gw_cors_actual(&c, NULL, &h);
    assert_int_equal(h.n, 1);
    assert_string_equal(header(&h, "Vary"), "Origin");
    gw_cors_actual(&c, "https://b.example", &h);
    assert_int_equal(h.n, 1);
    gw_cors_actual(&c, "https://a.example", &h);
    assert_string_equal(header(&h, "Access-Control-Allow-Origin"), "https://a.example");
    gw_cors_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),     cmocka_unit_test(test_origins),
        cmocka_unit_test(test_preflight), cmocka_unit_test(test_wildcard_and_credentials),
        cmocka_unit_test(test_actual),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_router.c - template matching, specificity, 404 vs 405, bad templates. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "kit/router.h"

static void handler(tr_req_t *req)
{
    (void)req;
}

static const tr_route_t routes[] = {
    {"GET", "/", handler, TR_AUTH_NONE, NULL, 0},
    {"GET", "/api/users/{id}", handler, TR_AUTH_NONE, NULL, 0},
    {"GET", "/api/users/me", handler, TR_AUTH_NONE, NULL, 0},
    {"DELETE", "/api/users/{id}", handler, TR_AUTH_NONE, NULL, 0},
    {"POST", "/api/posts/{id}/like", handler, TR_AUTH_NONE, NULL, 0},
    {"GET", "/api/a/{x}/b/{y}", handler, TR_AUTH_NONE, NULL, 0},
    {"PUT", "/api/a/{x}/b/{y}", handler, TR_AUTH_NONE, NULL, 0},
};

static tr_router_t *make_router(void)
{
    tr_router_t *r = tr_router_new();
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        assert_int_equal(tr_router_add(r, &routes[i]), 0);
    return r;
}

static void test_match_table(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
        tr_match_result_t result;
        int route; /* index into routes, -1 when none */
        const char *param0;
    } cases[] = {
        {"GET", "/", TR_MATCH_OK, 0, NULL},
        {"GET", "/api/users/42", TR_MATCH_OK, 1, "42"},
        {"GET", "/api/users/me", TR_MATCH_OK, 2, NULL},
        {"HEAD", "/api/users/me", TR_MATCH_OK, 2, NULL},
        {"DELETE", "/api/users/me", TR_MATCH_OK, 3, "me"},
        {"POST", "/api/posts/7/like", TR_MATCH_OK, 4, "7"},
        {"GET", "/api/a/1/b/2", TR_MATCH_OK, 5, "1"},
        {"GET", "/api/users", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "/api/users/", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "/api/users/42/", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "/api/users//", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "/api/posts/7/like/x", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "nope", TR_MATCH_NOT_FOUND, -1, NULL},
        {"GET", "/api/posts/7/like", TR_MATCH_METHOD_NOT_ALLOWED, -1, NULL},
        {"POST", "/api/users/me", TR_MATCH_METHOD_NOT_ALLOWED, -1, NULL},
    };
    tr_router_t *r = make_router();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tr_match_t m;
        tr_match_result_t res =
            tr_router_match(r, cases[i].method, cases[i].path, strlen(cases[i].path), &m);
        assert_int_equal(res, cases[i].result);
        if (cases[i].route >= 0) assert_ptr_equal(m.route, &routes[cases[i].route]);
        if (cases[i].param0) {
            assert_true(m.nparams >= 1);
            assert_int_equal(m.params[0].value_len, strlen(cases[i].param0));
            assert_memory_equal(m.params[0].value, cases[i].param0, strlen(cases[i].param0));
        }
    }
    tr_router_free(r);
}

static void test_two_params(void **state)
{
    (void)state;
    tr_router_t *r = make_router();
    tr_match_t m;
    const char *path = "/api/a/one/b/two";
    assert_int_equal(tr_router_match(r, "PUT", path, strlen(path), &m), TR_MATCH_OK);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[0].name, "x");
    assert_string_equal(m.params[1].name, "y");
    assert_memory_equal(m.params[1].value, "two", 3);
    tr_router_free(r);
}

static void test_allow_lists_every_method(void **state)
{
    (void)state;
    tr_router_t *r = make_router();
    tr_match_t m;
    const char *path = "/api/users/me";
    assert_int_equal(tr_router_match(r, "POST", path, strlen(path), &m),
                     TR_MATCH_METHOD_NOT_ALLOWED);
    /* /me is served by the literal GET and by DELETE /{id}. */
    assert_non_null(strstr(m.allow, "GET"));
    assert_non_null(strstr(m.allow, "HEAD"));
    assert_non_null(strstr(m.allow, "DELETE"));
    assert_null(strstr(m.allow, "POST"));
    tr_router_free(r);
}

static void test_bad_templates(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",      "nope",  "/a//b",   "/a/{",     "/a/{}",
        "/a/{x", "/a/x}", "/a/{x}y", "/a/{{x}}", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}",
    };
    tr_router_t *r = tr_router_new();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tr_route_t route = {"GET", bad[i], handler, TR_AUTH_NONE, NULL, 0};
        assert_int_equal(tr_router_add(r, &route), -EINVAL);
    }
    tr_route_t ok = {"GET", "/x/{id}", handler, TR_AUTH_NONE, NULL, 0};
    tr_route_t dup = {"GET", "/x/{other}", handler, TR_AUTH_NONE, NULL, 0};
    assert_int_equal(tr_router_add(r, &ok), 0);
    assert_int_equal(tr_router_add(r, &dup), -EEXIST);
    tr_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_two_params),
        cmocka_unit_test(test_allow_lists_every_method),
        cmocka_unit_test(test_bad_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

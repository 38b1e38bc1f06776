/* test_gateway_routes.c - the gateway's routes file: validation messages,
 * matching precedence, rewrites (parameters into the path and the query,
 * percent-encoding), path classification, and the built-in default. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "gateway/routes.h"

static const gw_routes_env_t env = {"127.0.0.1", 9000};

static gw_table_t *parse_ok(const char *json)
{
    char err[512] = "";
    gw_table_t *t = NULL;
    int rc = gw_table_parse(json, strlen(json), "test.json", &env, &t, err, sizeof(err));
    if (rc != 0) fail_msg("unexpected parse error: %s", err);
    return t;
}

static void test_validation_messages(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *message; /* expected substring of the error */
    } cases[] = {
        {"[", "test.json: line 1 column 1"},
        {"[]", "top level: expected an object"},
        {"{}", "routes: required"},
        {"{\"routes\": [], \"extra\": 1}", "top level: unknown field \"extra\""},
        {"{\"version\": 2, \"routes\": []}", "version: only version 1"},
        {"{\"routes\": [{\"upstream\": \"auth\"}]}", "routes[0].path: required"},
        {"{\"routes\": [{\"path\": \"api\", \"upstream\": \"auth\"}]}",
         "routes[0].path: must start with '/'"},
        {"{\"routes\": [{\"path\": \"/a//b\", \"upstream\": \"auth\"}]}",
         "routes[0].path: empty segment"},
        {"{\"routes\": [{\"path\": \"/a/*/b\", \"upstream\": \"auth\"}]}",
         "routes[0].path: invalid character '*'"},
        {"{\"routes\": [{\"path\": \"/a/{x\", \"upstream\": \"auth\"}]}",
         "routes[0].path: a parameter is a whole segment"},
        {"{\"routes\": [{\"path\": \"/a/{x}/{x}\", \"upstream\": \"auth\"}]}",
         "parameter {x} appears twice"},
        {"{\"routes\": [{\"path\": \"/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}\", \"upstream\": "
         "\"auth\"}]}",
         "routes[0].path: more than 8 parameters"},
        {"{\"routes\": [{\"path\": \"/a\"}]}", "routes[0].upstream: required"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"nope\"}]}",
         "routes[0].upstream: unknown upstream \"nope\""},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"methdos\": [\"GET\"]}]}",
         "routes[0]: unknown field \"methdos\""},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"methods\": [\"GETT\"]}]}",
         "routes[0].methods: element 0"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"methods\": []}]}",
         "routes[0].methods: expected a non-empty array"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"auth\": \"maybe\"}]}",
         "routes[0].auth: expected \"none\""},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"roles\": [\"admin\"]}]}",
         "routes[0].roles: roles need \"auth\": \"required\""},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"api_key\": true}]}",
         "routes[0].api_key: api_key needs"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"timeout\": 30}]}",
         "routes[0].timeout: expected a duration"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"timeout\": \"30x\"}]}",
         "routes[0].timeout: expected a duration"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"timeout\": \"0s\"}]}",
         "routes[0].timeout: must be more than 0"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"max_body\": \"10x\"}]}",
         "routes[0].max_body: expected a size"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"rate_limit\": \"x\"}]}",
         "routes[0].rate_limit: no policy \"x\""},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"retry\": {\"on\": "
         "[\"sometimes\"]}}]}",
         "routes[0].retry.on: element 0"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"retry\": {\"max\": 99}}]}",
         "routes[0].retry.max: expected an integer from 0 to 10"},
        {"{\"routes\": [{\"path\": \"/a/{id}\", \"upstream\": \"auth\", \"rewrite\": "
         "\"/b/{other}\"}]}",
         "routes[0].rewrite: {other} is not a parameter of the path"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"rewrite\": \"/b/*\"}]}",
         "routes[0].rewrite: \"/*\" (the rest of the path) needs a prefix route"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\", \"rewrite\": \"b\"}]}",
         "routes[0].rewrite: must start with '/'"},
        {"{\"routes\": [{\"path\": \"/a\", \"upstream\": \"auth\"}, {\"path\": \"/a\", "
         "\"upstream\": \"users\", \"methods\": [\"GET\"]}]}",
         "routes[1]: same path and method as routes[0]"},
        {"{\"routes\": [{\"path\": \"/a/{x}\", \"upstream\": \"auth\", \"methods\": [\"POST\"]}, "
         "{\"path\": \"/a/{y}\", \"upstream\": \"auth\", \"methods\": [\"POST\"]}]}",
         "routes[1]: same path and method as routes[0]"},
        {"{\"defaults\": {\"path\": \"/x\"}, \"routes\": []}", "defaults: unknown field \"path\""},
        {"{\"defaults\": {\"timeout\": \"soon\"}, \"routes\": [{\"path\": \"/a\", \"upstream\": "
         "\"auth\"}]}",
         "defaults.timeout: expected a duration"},
        {"{\"rate_limits\": {\"x\": {\"rate\": 0, \"burst\": 1, \"key\": \"ip\"}}, \"routes\": []}",
         "rate_limits.x.rate: expected requests per second"},
        {"{\"rate_limits\": {\"x\": {\"rate\": 1, \"burst\": 1, \"key\": \"cookie\"}}, "
         "\"routes\": []}",
         "rate_limits.x.key: expected \"ip\""},
        {"{\"rate_limits\": {\"x\": {\"rate\": 1, \"key\": \"ip\"}}, \"routes\": []}",
         "rate_limits.x.burst: required"},
        {"{\"upstreams\": {\"billing\": {}}, \"routes\": []}",
         "upstreams.billing: \"instances\" is required"},
        {"{\"upstreams\": {\"b\": {\"instances\": [\"nohost\"]}}, \"routes\": []}",
         "upstreams.b.instances: element 0"},
        {"{\"upstreams\": {\"b\": {\"instances\": [\"h:70000\"]}}, \"routes\": []}",
         "upstreams.b.instances: element 0"},
        {"{\"upstreams\": {\"b\": {\"instances\": [\"h:1\"], \"lb\": \"random\"}}, \"routes\": []}",
         "upstreams.b.lb: expected \"round_robin\""},
        {"{\"upstreams\": {\"b\": {\"instances\": [\"h:1\"], \"health\": {\"path\": \"x\"}}}, "
         "\"routes\": []}",
         "upstreams.b.health.path: expected a path"},
        {"{\"upstreams\": {\"b\": {\"instances\": [\"h:1\"], \"breaker\": {\"failures\": -1}}}, "
         "\"routes\": []}",
         "upstreams.b.breaker.failures: expected an integer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512] = "";
        gw_table_t *t = (gw_table_t *)0x1;
        int rc = gw_table_parse(cases[i].json, strlen(cases[i].json), "test.json", &env, &t, err,
                                sizeof(err));
        if (rc != -EINVAL || t != NULL || strstr(err, cases[i].message) == NULL)
            fail_msg("case %zu: rc %d, error \"%s\", expected \"%s\"", i, rc, err,
                     cases[i].message);
    }
}

static const char *const match_doc =
    "{\"defaults\": {\"auth\": \"optional\"},"
    " \"routes\": ["
    "  {\"name\": \"users-any\", \"path\": \"/api/users/*\", \"upstream\": \"users\"},"
    "  {\"name\": \"user\", \"path\": \"/api/users/{id}\", \"methods\": [\"GET\", \"DELETE\"],"
    "   \"upstream\": \"users\"},"
    "  {\"name\": \"me\", \"path\": \"/api/users/me\", \"methods\": [\"GET\"], \"upstream\": "
    "\"users\"},"
    "  {\"name\": \"search\", \"path\": \"/api/users/search/{q}\", \"methods\": [\"GET\"],"
    "   \"upstream\": \"users\", \"rewrite\": \"/api/users/search?q={q}\"},"
    "  {\"name\": \"wallet\", \"path\": \"/api/user/wallet\", \"methods\": [\"GET\"],"
    "   \"upstream\": \"wallet\", \"rewrite\": \"/api/wallet\"},"
    "  {\"name\": \"old-wallet\", \"path\": \"/api/user/wallet/*\", \"upstream\": \"wallet\","
    "   \"rewrite\": \"/api/wallet/*\"},"
    "  {\"name\": \"post-like\", \"path\": \"/api/posts/{id}/like\", \"methods\": [\"POST\"],"
    "   \"upstream\": \"posts\", \"rewrite\": \"/api/posts/{id}/reactions?kind=like\"},"
    "  {\"name\": \"posts\", \"path\": \"/api/posts/*\", \"methods\": [\"GET\"], \"upstream\": "
    "\"posts\"},"
    "  {\"name\": \"auth-deep\", \"path\": \"/api/auth/admin/*\", \"upstream\": \"auth\","
    "   \"auth\": \"required\", \"roles\": [\"admin\", \"moderator\"]},"
    "  {\"name\": \"auth\", \"path\": \"/api/auth/*\", \"upstream\": \"auth\"},"
    "  {\"name\": \"ws\", \"path\": \"/ws\", \"methods\": [\"GET\"], \"upstream\": \"realtime\","
    "   \"websocket\": true}"
    " ]}";

static void test_match_precedence(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
        gw_match_result_t result;
        const char *route; /* name, or the Allow list for 405 */
        const char *rest;
    } cases[] = {
        {"GET", "/api/users/me", GW_MATCH_OK, "me", ""},
        {"HEAD", "/api/users/me", GW_MATCH_OK, "me", ""},
        {"GET", "/api/users/42", GW_MATCH_OK, "user", ""},
        {"DELETE", "/api/users/42", GW_MATCH_OK, "user", ""},
        /* the template does not allow PUT: the prefix route takes it */
        {"PUT", "/api/users/42", GW_MATCH_OK, "users-any", "/42"},
        {"DELETE", "/api/users/me", GW_MATCH_OK, "user", ""},
        {"GET", "/api/users/42/stats", GW_MATCH_OK, "users-any", "/42/stats"},
        {"GET", "/api/users", GW_MATCH_OK, "users-any", ""},
        {"GET", "/api/users/", GW_MATCH_OK, "users-any", "/"},
        {"GET", "/api/usersx", GW_MATCH_NOT_FOUND, NULL, NULL},
        {"GET", "/api/users/search/bob", GW_MATCH_OK, "search", ""},
        {"GET", "/api/user/wallet", GW_MATCH_OK, "wallet", ""},
        {"POST", "/api/user/wallet", GW_MATCH_OK, "old-wallet", ""},
        {"GET", "/api/user/wallet/tx/1", GW_MATCH_OK, "old-wallet", "/tx/1"},
        {"POST", "/api/posts/7/like", GW_MATCH_OK, "post-like", ""},
        {"GET", "/api/posts/7/like", GW_MATCH_OK, "posts", "/7/like"},
        {"DELETE", "/api/posts/7/like", GW_MATCH_METHOD_NOT_ALLOWED, "GET, HEAD, POST", NULL},
        {"DELETE", "/api/posts", GW_MATCH_METHOD_NOT_ALLOWED, "GET, HEAD", NULL},
        {"GET", "/api/auth/admin/outbox", GW_MATCH_OK, "auth-deep", "/outbox"},
        {"GET", "/api/auth/login", GW_MATCH_OK, "auth", "/login"},
        {"PROPFIND", "/api/auth/login", GW_MATCH_OK, "auth", "/login"},
        {"GET", "/ws", GW_MATCH_OK, "ws", ""},
        {"POST", "/ws", GW_MATCH_METHOD_NOT_ALLOWED, "GET, HEAD", NULL},
        {"GET", "/ws/x", GW_MATCH_NOT_FOUND, NULL, NULL},
        {"GET", "/", GW_MATCH_NOT_FOUND, NULL, NULL},
        {"GET", "/index.html", GW_MATCH_NOT_FOUND, NULL, NULL},
        {"GET", "", GW_MATCH_NOT_FOUND, NULL, NULL},
    };
    gw_table_t *t = parse_ok(match_doc);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_match_t m;
        gw_match_result_t r =
            gw_table_match(t, cases[i].method, cases[i].path, strlen(cases[i].path), &m);
        if (r != cases[i].result)
            fail_msg("case %zu (%s %s): result %d, expected %d", i, cases[i].method, cases[i].path,
                     r, cases[i].result);
        if (r == GW_MATCH_OK) {
            if (strcmp(m.route->name, cases[i].route) != 0)
                fail_msg("case %zu (%s %s): route %s, expected %s", i, cases[i].method,
                         cases[i].path, m.route->name, cases[i].route);
            if (m.rest_len != strlen(cases[i].rest) ||
                memcmp(m.rest, cases[i].rest, m.rest_len) != 0)
                fail_msg("case %zu: rest \"%.*s\", expected \"%s\"", i, (int)m.rest_len, m.rest,
                         cases[i].rest);
        } else if (r == GW_MATCH_METHOD_NOT_ALLOWED) {
            assert_string_equal(m.allow, cases[i].route);
        }
    }
    /* What the parse made of the fields. */
    gw_match_t m;
    assert_int_equal(gw_table_match(t, "GET", "/api/auth/admin/x", 17, &m), GW_MATCH_OK);
    assert_int_equal(m.route->auth, TR_AUTH_REQUIRED);
    assert_string_equal(m.route->roles, "admin,moderator");
    assert_string_equal(t->upstreams[m.route->upstream].name, "auth");
    assert_int_equal(gw_table_match(t, "GET", "/ws", 3, &m), GW_MATCH_OK);
    assert_true(m.route->websocket);
    assert_int_equal(m.route->auth, TR_AUTH_OPTIONAL);
    assert_int_equal(m.route->timeout_ms, 30000);
    gw_table_free(t);
}

static void test_rewrite(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *query;
        const char *target; /* NULL: the rewrite refuses the parameter */
    } cases[] = {
        {"GET", "/api/users/42", "", "/api/users/42"},
        {"GET", "/api/users/42", "x=1&y=2", "/api/users/42?x=1&y=2"},
        {"GET", "/api/users/search/bob", "", "/api/users/search?q=bob"},
        {"GET", "/api/users/search/bob", "limit=5", "/api/users/search?q=bob&limit=5"},
        /* decoded, then encoded for a query value: '&', '=', '+' and ' ' cannot escape it */
        {"GET", "/api/users/search/a%26b%3Dc", "", "/api/users/search?q=a%26b%3Dc"},
        {"GET", "/api/users/search/john%20doe", "", "/api/users/search?q=john%20doe"},
        {"GET", "/api/users/search/a+b", "", "/api/users/search?q=a%2Bb"},
        {"GET", "/api/users/search/%C3%A9t%c3%a9", "", "/api/users/search?q=%C3%A9t%C3%A9"},
        {"GET", "/api/users/search/x%2Fy", "", "/api/users/search?q=x%2Fy"},
        {"GET", "/api/users/search/%zz", "", NULL},
        {"GET", "/api/users/search/%4", "", NULL},
        {"GET", "/api/users/search/a%00b", "", NULL},
        {"GET", "/api/user/wallet", "", "/api/wallet"},
        {"GET", "/api/user/wallet", "currency=irr", "/api/wallet?currency=irr"},
        {"POST", "/api/user/wallet", "", "/api/wallet"},
        {"POST", "/api/user/wallet/tx/1", "a=b", "/api/wallet/tx/1?a=b"},
        /* in a path segment: '/' and '?' stay escaped, sub-delims are kept */
        {"POST", "/api/posts/a%2Fb%3F/like", "", "/api/posts/a%2Fb%3F/reactions?kind=like"},
        {"POST", "/api/posts/it's+ok/like", "n=1", "/api/posts/it's+ok/reactions?kind=like&n=1"},
    };
    gw_table_t *t = parse_ok(match_doc);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_match_t m;
        size_t plen = strlen(cases[i].path);
        assert_int_equal(gw_table_match(t, cases[i].method, cases[i].path, plen, &m), GW_MATCH_OK);
        size_t max = gw_route_target_max(m.route, plen, strlen(cases[i].query));
        char *out = malloc(max);
        int n = gw_route_target(m.route, &m, cases[i].path, plen, cases[i].query, out, max);
        if (!cases[i].target) {
            if (n != -EINVAL) fail_msg("case %zu: %d \"%s\", expected -EINVAL", i, n, out);
        } else {
            if (n < 0 || strcmp(out, cases[i].target) != 0 || (size_t)n != strlen(out))
                fail_msg("case %zu: %d \"%s\", expected \"%s\"", i, n, n >= 0 ? out : "",
                         cases[i].target);
        }
        free(out);
    }
    /* Too small a buffer is refused, not overrun. */
    gw_match_t m;
    char small[4];
    assert_int_equal(gw_table_match(t, "GET", "/api/users/42", 13, &m), GW_MATCH_OK);
    assert_int_equal(gw_route_target(m.route, &m, "/api/users/42", 13, "", small, sizeof(small)),
                     -ENOSPC);
    gw_table_free(t);
}

static void test_path_classify(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        gw_path_kind_t kind;
    } cases[] = {
        {"/", GW_PATH_OK},
        {"/api/users/42", GW_PATH_OK},
        {"/api/users/a%20b", GW_PATH_OK},
        {"/api/.well-known/x", GW_PATH_OK},
        {"/api/users/..x", GW_PATH_OK},
        {"/api/users/...", GW_PATH_OK},
        {"/internalize", GW_PATH_OK},
        {"/api/internal/x", GW_PATH_OK},
        {"/internal", GW_PATH_INTERNAL},
        {"/internal/", GW_PATH_INTERNAL},
        {"/internal/revocations", GW_PATH_INTERNAL},
        {"/Internal/revocations", GW_PATH_INTERNAL},
        {"/%69nternal/revocations", GW_PATH_INTERNAL},
        {"//internal/revocations", GW_PATH_INTERNAL},
        {"/internal%2Frevocations", GW_PATH_INTERNAL},
        {"", GW_PATH_INVALID},
        {"api", GW_PATH_INVALID},
        {"/api/../internal/x", GW_PATH_INVALID},
        {"/api/./x", GW_PATH_INVALID},
        {"/api/..", GW_PATH_INVALID},
        {"/api/.", GW_PATH_INVALID},
        {"/..", GW_PATH_INVALID},
        {"/api/%2e%2e/internal", GW_PATH_INVALID},
        {"/api/%2E./x", GW_PATH_INVALID},
        {"/api/.%2e/x", GW_PATH_INVALID},
        {"/api/a%2F..%2Fb", GW_PATH_INVALID},
        {"/api/a%5C..%5Cb", GW_PATH_INVALID},
        {"/api/%00", GW_PATH_INVALID},
        {"/api/%zz", GW_PATH_INVALID},
        {"/api/%4", GW_PATH_INVALID},
        {"/api/%", GW_PATH_INVALID},
        {"/api/a b", GW_PATH_INVALID},
        {"/api/a\rb", GW_PATH_INVALID},
        {"/api/a\x7f", GW_PATH_INVALID},
        {"/api/caf\xc3\xa9", GW_PATH_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gw_path_kind_t k = gw_path_classify(cases[i].path, strlen(cases[i].path));
        if (k != cases[i].kind)
            fail_msg("case %zu (%s): %d, expected %d", i, cases[i].path, k, cases[i].kind);
    }
}

static void test_defaults_and_upstreams(void **state)
{
    (void)state;
    gw_table_t *t = parse_ok(
        "{\"defaults\": {\"auth\": \"optional\", \"api_key\": true, \"timeout\": \"5s\","
        "  \"max_body\": \"2m\", \"rate_limit\": \"user\","
        "  \"retry\": {\"max\": 1, \"on\": [\"5xx\"], \"base\": \"10ms\", \"cap\": \"100ms\"}},"
        " \"rate_limits\": {\"user\": {\"rate\": 2.5, \"burst\": 5, \"key\": \"user\"},"
        "                   \"ip\": {\"rate\": 10, \"burst\": 20, \"key\": \"ip\"}},"
        " \"upstreams\": {\"billing\": {\"instances\": [\"10.0.0.1:81\", \"[::1]:82\"],"
        "   \"lb\": \"least_request\", \"required\": true, \"connect_timeout\": \"250ms\","
        "   \"health\": {\"path\": \"/ping\", \"interval\": \"1s\"},"
        "   \"breaker\": {\"failures\": 3, \"cooldown\": \"2s\"}},"
        "   \"users\": {\"health\": null}},"
        " \"routes\": ["
        "  {\"path\": \"/a\", \"upstream\": \"billing\"},"
        "  {\"path\": \"/b\", \"upstream\": \"auth\", \"auth\": \"none\", \"rate_limit\": null,"
        "   \"retry\": false, \"max_body\": 100, \"timeout\": \"1m\"},"
        "  {\"path\": \"/c\", \"upstream\": \"users\", \"rate_limit\": \"ip\"}"
        " ]}");
    gw_match_t m;

    assert_int_equal(gw_table_match(t, "GET", "/a", 2, &m), GW_MATCH_OK);
    const gw_route_t *a = m.route;
    assert_int_equal(a->auth, TR_AUTH_OPTIONAL);
    assert_true(a->api_key);
    assert_int_equal(a->timeout_ms, 5000);
    assert_int_equal(a->max_body, 2u << 20);
    assert_string_equal(t->limits[a->limit].name, "user");
    assert_int_equal(a->retry.max_retries, 1);
    assert_int_equal(a->retry.retry_on, TR_RETRY_ON_5XX);
    assert_int_equal(a->retry.base_ms, 10);
    const gw_upstream_spec_t *u = &t->upstreams[a->upstream];
    assert_string_equal(u->name, "billing");
    assert_int_equal(u->config.ninstances, 2);
    assert_string_equal(u->config.instances[1], "[::1]:82");
    assert_int_equal(u->config.lb, TR_LB_LEAST_REQUEST);
    assert_true(u->required);
    assert_int_equal(u->connect_timeout_ms, 250);
    assert_string_equal(u->config.health_path, "/ping");
    assert_int_equal(u->config.health_interval_ms, 1000);
    assert_int_equal(u->config.breaker.failure_threshold, 3);

    assert_int_equal(gw_table_match(t, "GET", "/b", 2, &m), GW_MATCH_OK);
    /* api_key from the defaults does not apply where auth is none */
    assert_int_equal(m.route->auth, TR_AUTH_NONE);
    assert_false(m.route->api_key);
    assert_int_equal(m.route->limit, -1);
    assert_int_equal(m.route->retry.max_retries, 0);
    assert_int_equal(m.route->max_body, 100);
    assert_int_equal(m.route->timeout_ms, 60000);
    /* a known service without instances: host:port-base+offset */
    u = &t->upstreams[m.route->upstream];
    assert_string_equal(u->name, "auth");
    assert_string_equal(u->config.instances[0], "127.0.0.1:9001");
    assert_false(u->required);
    assert_string_equal(u->config.health_path, "/readyz");

    assert_int_equal(gw_table_match(t, "GET", "/c", 2, &m), GW_MATCH_OK);
    u = &t->upstreams[m.route->upstream];
    assert_string_equal(u->config.instances[0], "127.0.0.1:9002");
    assert_null(u->config.health_path);
    assert_string_equal(t->limits[m.route->limit].name, "ip");
    assert_int_equal(t->limits[m.route->limit].key, TR_RATELIMIT_KEY_IP);
    gw_table_free(t);

    /* An IPv6 upstream host is bracketed. */
    gw_routes_env_t v6 = {"::1", 7000};
    char err[256];
    const char *doc = "{\"routes\": [{\"path\": \"/x/*\", \"upstream\": \"media\"}]}";
    assert_int_equal(gw_table_parse(doc, strlen(doc), "v6", &v6, &t, err, sizeof(err)), 0);
    assert_string_equal(t->upstreams[0].config.instances[0], "[::1]:7004");
    gw_table_free(t);
}

/* The shipped deploy/routes.json (the built-in default: test_registry.c)
 * parses to the routes the services expect. */
static void test_default_routes(void **state)
{
    (void)state;
    char path[4096], err[512] = "";
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/");
    assert_non_null(tail);
    snprintf(path, sizeof(path), "%.*sdeploy/routes.json", (int)(tail - self), self);

    gw_table_t *t = NULL;
    assert_int_equal(gw_table_load_file(path, &env, &t, err, sizeof(err)), 0);
    gw_match_t m;
    static const struct {
        const char *method, *path, *upstream, *limit;
        tr_auth_mode_t auth;
    } cases[] = {
        {"POST", "/api/auth/login", "auth", "auth-sensitive", TR_AUTH_NONE},
        {"POST", "/api/auth/register", "auth", "auth-sensitive", TR_AUTH_NONE},
        {"POST", "/api/auth/refresh", "auth", "auth-sensitive", TR_AUTH_NONE},
        {"POST", "/api/auth/password/forgot", "auth", "auth-sensitive", TR_AUTH_NONE},
        {"GET", "/api/auth/me", "auth", "per-user", TR_AUTH_NONE},
        {"GET", "/api/users/1", "users", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/api/posts/1", "posts", "per-user", TR_AUTH_OPTIONAL},
        {"PUT", "/api/media/1", "media", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/api/wallet", "wallet", "per-user", TR_AUTH_OPTIONAL},
        {"POST", "/api/payments/x", "wallet", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/api/notifications", "notify", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/ws", "realtime", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/api/tournaments/1", "tournaments", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/api/groups/1", "groups", "per-user", TR_AUTH_OPTIONAL},
        {"GET", "/api/bot/x", "bot", "per-user", TR_AUTH_OPTIONAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (gw_table_match(t, cases[i].method, cases[i].path, strlen(cases[i].path), &m) !=
            GW_MATCH_OK)
            fail_msg("case %zu (%s): no route", i, cases[i].path);
        assert_string_equal(t->upstreams[m.route->upstream].name, cases[i].upstream);
        assert_string_equal(t->limits[m.route->limit].name, cases[i].limit);
        assert_int_equal(m.route->auth, cases[i].auth);
    }
    int auth = gw_table_upstream_index(t, "auth");
    assert_true(auth >= 0);
    assert_true(t->upstreams[auth].required);
    assert_string_equal(t->upstreams[auth].config.instances[0], "127.0.0.1:9001");
    assert_int_equal(gw_table_match(t, "GET", "/api/media/x", 12, &m), GW_MATCH_OK);
    assert_int_equal(m.route->max_body, 1u << 30);
    gw_table_free(t);

    assert_int_equal(gw_table_load_file("/nonexistent/routes.json", &env, &t, err, sizeof(err)),
                     -ENOENT);
    assert_null(t);
    assert_non_null(strstr(err, "/nonexistent/routes.json"));
}

/* Each blueprint parses and serves its system's paths on Trellis's. */
static void test_blueprints(void **state)
{
    (void)state;
    static const struct {
        const char *file, *method, *path, *target; /* target NULL: not served */
    } cases[] = {
        {"grover", "POST", "/api/auth/session", "/api/auth/login"},
        {"grover", "GET", "/api/auth/me", "/api/auth/me"},
        {"grover", "POST", "/api/auth/logout", "/api/auth/logout"},
        {"grover", "POST", "/api/auth/refresh", NULL},
        {"metargb", "POST", "/api/auth/me", "/api/auth/me"},
        {"metargb", "POST", "/api/auth/logout", "/api/auth/logout"},
        {"gymit", "POST", "/api/auth/register", "/api/auth/register"},
        {"gymit", "POST", "/api/auth/login", "/api/auth/login"},
        {"v3", "POST", "/api/auth/login", NULL},
        {"messaging", "POST", "/api/auth/login", "/api/auth/login"},
        {"messaging", "GET", "/api/auth/sessions", "/api/auth/sessions"},
    };
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/");
    assert_non_null(tail);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[4096], err[512] = "", target[256];
        gw_table_t *t = NULL;
        gw_match_t m;
        snprintf(path, sizeof(path), "%.*sdeploy/blueprints/%s.json", (int)(tail - self), self,
                 cases[i].file);
        if (gw_table_load_file(path, &env, &t, err, sizeof(err)) != 0)
            fail_msg("%s: %s", cases[i].file, err);
        size_t plen = strlen(cases[i].path);
        gw_match_result_t r = gw_table_match(t, cases[i].method, cases[i].path, plen, &m);
        if (!cases[i].target) {
            if (r == GW_MATCH_OK) fail_msg("case %zu: %s is served", i, cases[i].path);
        } else {
            if (r != GW_MATCH_OK) fail_msg("case %zu: %s not served", i, cases[i].path);
            assert_string_equal(t->upstreams[m.route->upstream].name, "auth");
            assert_true(
                gw_route_target(m.route, &m, cases[i].path, plen, "", target, sizeof(target)) > 0);
            assert_string_equal(target, cases[i].target);
        }
        gw_table_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation_messages),
        cmocka_unit_test(test_match_precedence),
        cmocka_unit_test(test_rewrite),
        cmocka_unit_test(test_path_classify),
        cmocka_unit_test(test_defaults_and_upstreams),
        cmocka_unit_test(test_default_routes),
        cmocka_unit_test(test_blueprints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

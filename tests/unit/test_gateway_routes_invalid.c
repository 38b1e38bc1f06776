/* test_gateway_routes_invalid.c - a routes file with one mistake is refused
 * with a message naming where the mistake is (the JSON path) and what was
 * expected, for every field of upstreams, health checks, breakers, outlier
 * detection, rate limits and routes; the near-misses that are valid parse.
 * (test_gateway_routes.c has the common cases and the matching; this is the
 * long tail an operator meets when editing the file by hand.) A mistake in
 * "defaults" is reported where it applies: at the first route using it.
 *
 * The documents are written with ' for " to stay readable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/routes.h"

static const gw_routes_env_t env = {"127.0.0.1", 9000};

/* json with every ' turned into ", in a static buffer. */
static const char *dq(const char *s)
{
    static char buf[4096];
    size_t n = strlen(s);
    assert_true(n < sizeof(buf));
    for (size_t i = 0; i <= n; i++)
        buf[i] = s[i] == '\'' ? '"' : s[i];
    return buf;
}

static int parse(const char *doc, char *err, size_t errlen)
{
    const char *json = dq(doc);
    gw_table_t *t = NULL;
    err[0] = '\0';
    int rc = gw_table_parse(json, strlen(json), "r.json", &env, &t, err, errlen);
    if (rc == 0) gw_table_free(t);
    return rc;
}

/* An upstream "b" with the given extra fields, and one route to it. */
#define UP(fields) "{'upstreams': {'b': {'instances': ['h:1'], " fields "}}, 'routes': []}"
/* One route to the built-in upstream "auth" with the given extra fields. */
#define ROUTE(fields) "{'routes': [{'path': '/a', 'upstream': 'auth', " fields "}]}"
#define LIMIT(fields)                                                                              \
    "{'rate_limits': {'x': {" fields "}}, 'routes': [{'path': '/a', 'upstream': 'auth', "          \
    "'rate_limit': 'x'}]}"

static void test_refused_with_where_and_why(void **state)
{
    (void)state;
    static const struct {
        const char *doc;
        const char *message; /* expected substring of the error */
    } cases[] = {
        /* top level */
        {"{'version': '1', 'routes': []}", "version:"},
        {"{'upstreams': [], 'routes': []}", "upstreams: expected an object"},
        {"{'rate_limits': [], 'routes': []}", "rate_limits: expected an object"},
        {"{'defaults': [], 'routes': []}", "defaults: expected an object"},
        {"{'routes': {}}", "routes:"},
        {"{'routes': [5]}", "routes[0]:"},
        /* upstream names and shapes */
        {"{'upstreams': {'bad name': {'instances': ['h:1']}}, 'routes': []}",
         "name must be 1-64 of [A-Za-z0-9_.-]"},
        {"{'upstreams': {'b': 1}, 'routes': []}", "upstreams.b: expected an object"},
        {UP("'colour': 'red'"), "upstreams.b: unknown field \"colour\""},
        /* instances */
        {"{'upstreams': {'b': {'instances': []}}, 'routes': []}",
         "upstreams.b.instances: expected an array of 1 to"},
        {"{'upstreams': {'b': {'instances': 'h:1'}}, 'routes': []}",
         "upstreams.b.instances: expected an array of 1 to"},
        {"{'upstreams': {'b': {'instances': [5]}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['h:1', 'h:0']}}, 'routes': []}",
         "upstreams.b.instances: element 1"},
        {"{'upstreams': {'b': {'instances': ['h:65536']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['h:80x']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': [':80']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['a:b:80']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['h@st:80']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['[::1]']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['[::1:80']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['[]:80']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        {"{'upstreams': {'b': {'instances': ['[::1]80']}}, 'routes': []}",
         "upstreams.b.instances: element 0"},
        /* plain upstream fields */
        {UP("'lb': 5"), "upstreams.b.lb: expected \"round_robin\""},
        {UP("'required': 'yes'"), "upstreams.b.required: expected true or false"},
        {UP("'connect_timeout': '0s'"), "upstreams.b.connect_timeout: must be more than 0"},
        {UP("'connect_timeout': 5"), "upstreams.b.connect_timeout: expected a duration"},
        {UP("'max_idle': 100001"), "upstreams.b.max_idle:"},
        {UP("'max_idle': -1"), "upstreams.b.max_idle:"},
        {UP("'max_idle': 1.5"), "upstreams.b.max_idle:"},
        {UP("'idle_timeout': true"), "upstreams.b.idle_timeout: expected a duration"},
        {UP("'idle_timeout': '5 parsecs'"), "upstreams.b.idle_timeout: expected a duration"},
        /* health */
        {UP("'health': 5"), "upstreams.b.health: expected an object, or null"},
        {UP("'health': true"), "upstreams.b.health: expected an object, or null"},
        {UP("'health': {'colour': 1}"), "upstreams.b.health: unknown field \"colour\""},
        {UP("'health': {'path': 5}"), "upstreams.b.health.path: expected a path"},
        {UP("'health': {'path': '/a b'}"), "upstreams.b.health.path: expected a path"},
        {UP("'health': {'path': '/a#b'}"), "upstreams.b.health.path: expected a path"},
        {UP("'health': {'interval': 'often'}"), "upstreams.b.health.interval: expected a duration"},
        {UP("'health': {'timeout': []}"), "upstreams.b.health.timeout: expected a duration"},
        {UP("'health': {'unhealthy_threshold': 'x'}"), "upstreams.b.health.unhealthy_threshold:"},
        {UP("'health': {'healthy_threshold': -3}"), "upstreams.b.health.healthy_threshold:"},
        /* breaker and outlier detection */
        {UP("'breaker': 3"), "upstreams.b.breaker: expected an object"},
        {UP("'breaker': {'colour': 1}"), "upstreams.b.breaker: unknown field \"colour\""},
        {UP("'breaker': {'failures': 1001}"), "upstreams.b.breaker.failures:"},
        {UP("'breaker': {'cooldown': 'x'}"), "upstreams.b.breaker.cooldown: expected a duration"},
        {UP("'outlier': []"), "upstreams.b.outlier: expected an object"},
        {UP("'outlier': {'colour': 1}"), "upstreams.b.outlier: unknown field \"colour\""},
        {UP("'outlier': {'failures': 1001}"), "upstreams.b.outlier.failures:"},
        {UP("'outlier': {'base_ejection': 5}"), "upstreams.b.outlier.base_ejection:"},
        {UP("'outlier': {'max_ejection': 'forever'}"), "upstreams.b.outlier.max_ejection:"},
        {UP("'outlier': {'max_percent': 101}"), "upstreams.b.outlier.max_percent:"},
        /* rate limits */
        {"{'rate_limits': {'bad name': {'rate': 1, 'burst': 1}}, 'routes': []}",
         "name must be 1-64"},
        {"{'rate_limits': {'x': 5}, 'routes': []}", "rate_limits.x: expected an object"},
        {LIMIT("'rate': 0, 'burst': 1"), "rate_limits.x.rate: expected requests per second"},
        {LIMIT("'rate': 1e7, 'burst': 1"), "rate_limits.x.rate: expected requests per second"},
        {LIMIT("'rate': 'fast', 'burst': 1"), "rate_limits.x.rate: expected requests per second"},
        {LIMIT("'burst': 1"), "rate_limits.x.rate:"},
        {LIMIT("'rate': 1, 'burst': 0"), "rate_limits.x.burst:"},
        {LIMIT("'rate': 1, 'burst': 1000001"), "rate_limits.x.burst:"},
        {LIMIT("'rate': 1, 'burst': 1, 'key': 'cookie'"), "rate_limits.x.key: expected \"ip\""},
        {LIMIT("'rate': 1, 'burst': 1, 'colour': 1"), "rate_limits.x: unknown field \"colour\""},
        {"{'routes': [{'path': '/a', 'upstream': 'auth', 'rate_limit': 'nope'}]}",
         "routes[0].rate_limit: no policy \"nope\""},
        {"{'routes': [{'path': '/a', 'upstream': 'auth', 'rate_limit': 5}]}",
         "routes[0].rate_limit:"},
        /* route paths */
        {"{'routes': [{'path': 5, 'upstream': 'auth'}]}", "routes[0].path: required"},
        {"{'routes': [{'path': '/a?b', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': '/a#b', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': '/a b', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': '/a/{}', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': '/a/{b-c}', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': '/a/}', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': '/a/b*', 'upstream': 'auth'}]}", "routes[0].path:"},
        /* route fields */
        {ROUTE("'name': ''"), "routes[0].name: expected 1-128 characters"},
        {ROUTE("'name': 'a\\\\b'"), "routes[0].name: expected 1-128 characters"},
        {ROUTE("'name': 5"), "routes[0].name:"},
        {ROUTE("'methods': []"), "routes[0].methods: expected a non-empty array"},
        {ROUTE("'methods': 'GET'"), "routes[0].methods: expected a non-empty array"},
        {ROUTE("'methods': ['GET', 5]"), "routes[0].methods: element 1"},
        {"{'routes': [{'path': '/a', 'upstream': 5}]}", "routes[0].upstream:"},
        {ROUTE("'auth': 'sometimes'"), "routes[0].auth: expected \"none\", \"optional\""},
        {ROUTE("'auth': 5"), "routes[0].auth: expected \"none\", \"optional\""},
        {ROUTE("'roles': ['admin']"), "routes[0].roles: roles need \"auth\": \"required\""},
        {ROUTE("'auth': 'required', 'roles': []"), "routes[0].roles: expected a non-empty array"},
        {ROUTE("'auth': 'required', 'roles': 'admin'"),
         "routes[0].roles: expected a non-empty array"},
        {ROUTE("'auth': 'required', 'roles': ['a,b']"), "routes[0].roles: element 0"},
        {ROUTE("'auth': 'required', 'roles': ['admin', 5]"), "routes[0].roles: element 1"},
        {ROUTE("'auth': 'required', 'roles': ['abcdefghijklmnopqrstuvwxyz']"),
         "routes[0].roles: element 0"},
        {ROUTE("'api_key': true"), "routes[0].api_key: api_key needs \"auth\""},
        {ROUTE("'auth': 'required', 'api_key': 'yes'"),
         "routes[0].api_key: expected true or false"},
        {ROUTE("'timeout': 'later'"), "routes[0].timeout: expected a duration"},
        {ROUTE("'try_timeout': 5"), "routes[0].try_timeout:"},
        {ROUTE("'max_body': 'big'"), "routes[0].max_body:"},
        {ROUTE("'websocket': 'yes'"), "routes[0].websocket: expected true or false"},
        /* retries */
        {ROUTE("'retry': 5"), "routes[0].retry: expected an object, or false"},
        {ROUTE("'retry': true"), "routes[0].retry: expected an object, or false"},
        {ROUTE("'retry': {'colour': 1}"), "routes[0].retry: unknown field \"colour\""},
        {ROUTE("'retry': {'max': 11}"), "routes[0].retry.max:"},
        {ROUTE("'retry': {'on': 'reset'}"), "routes[0].retry.on: expected an array of conditions"},
        {ROUTE("'retry': {'on': ['reset', 'tuesday']}"), "routes[0].retry.on:"},
        {ROUTE("'retry': {'on': [5]}"), "routes[0].retry.on:"},
        /* rewrites */
        {ROUTE("'rewrite': 5"), "routes[0].rewrite: expected a target"},
        {ROUTE("'rewrite': 'x'"), "routes[0].rewrite:"},
        {ROUTE("'rewrite': '/x/{id}'"), "routes[0].rewrite:"},
        {ROUTE("'rewrite': '/x/*'"), "routes[0].rewrite:"},
        {ROUTE("'rewrite': '/x#y'"), "routes[0].rewrite:"},
        {ROUTE("'rewrite': '/x y'"), "routes[0].rewrite:"},
        {ROUTE("'rewrite': '/x/{'"), "routes[0].rewrite:"},
        /* more limits and shapes */
        {UP("'health': {'interval': '50ms'}"),
         "upstreams.b.health.interval: must be at least 100ms"},
        {UP("'outlier': 5"), "upstreams.b.outlier: expected an object"},
        {LIMIT("'rate': 1, 'burst': 1, 'key': 5"), "rate_limits.x.key: expected \"ip\""},
        {"{'version': 1.0, 'routes': []}", "version:"},
        {"{'routes': [{'path': '', 'upstream': 'auth'}]}", "routes[0].path: must start with '/'"},
        {"{'routes': [{'path': '//*', 'upstream': 'auth'}]}", "routes[0].path:"},
        {"{'routes': [{'path': "
         "'/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/a/b/c/d/e/f/g/h', "
         "'upstream': 'auth'}]}",
         "routes[0].path:"},
        {ROUTE("'max_body': '99999999999999GB'"), "routes[0].max_body:"},
        {ROUTE("'max_body': 1.5"), "routes[0].max_body:"},
        {ROUTE("'retry': {'base': 'x'}"), "routes[0].retry.base: expected a duration"},
        {ROUTE("'retry': {'cap': []}"), "routes[0].retry.cap: expected a duration"},
        {ROUTE("'retry': {'base': '1s', 'cap': '10ms'}"), "routes[0].retry: cap is below base"},
        {"{'routes': [{'path': '/a/{id}', 'upstream': 'auth', 'rewrite': '/b?x={id}?y=1'}]}",
         "routes[0].rewrite: more than one '?'"},
        {"{'routes': [{'path': '/a', 'upstream': 'auth'}, {'path': '/a', 'upstream': 'auth'}]}",
         "routes[1]"},
        /* defaults */
        {"{'defaults': {'auth': 'maybe'}, 'routes': [{'path': '/a', 'upstream': 'auth'}]}",
         "defaults.auth:"},
        {"{'defaults': {'retry': 7}, 'routes': [{'path': '/a', 'upstream': 'auth'}]}",
         "defaults.retry:"},
        {"{'defaults': {'max_body': -1}, 'routes': [{'path': '/a', 'upstream': 'auth'}]}",
         "defaults.max_body:"},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[512];
        int rc = parse(cases[i].doc, err, sizeof(err));
        if (rc == 0 || !strstr(err, cases[i].message) || strncmp(err, "r.json: ", 8) != 0) {
            print_error("case %zu: %s\n  rc %d, error \"%s\"\n  expected \"%s\"\n", i,
                        dq(cases[i].doc), rc, err, cases[i].message);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void test_near_misses_parse(void **state)
{
    (void)state;
    static const char *const ok[] = {
        UP("'health': null"),
        UP("'health': false"),
        UP("'health': {'path': '/readyz', 'interval': '1s', 'timeout': '500ms'}"),
        UP("'lb': 'least_request', 'required': false, 'connect_timeout': '1ms'"),
        UP("'breaker': {'failures': 0, 'cooldown': '0s'}"),
        UP("'outlier': {'failures': 1000, 'max_percent': 100, 'base_ejection': '1s', "
           "'max_ejection': '1m'}"),
        UP("'max_idle': 0, 'idle_timeout': '1h'"),
        "{'upstreams': {'b': {'instances': ['[::1]:80', 'host-1.example:65535', 'a_b.c:1']}}, "
        "'routes': []}",
        LIMIT("'rate': 0.001, 'burst': 1000000, 'key': 'api_key'"),
        LIMIT("'rate': 1000000, 'burst': 1, 'key': 'user'"),
        ROUTE("'retry': false"),
        ROUTE("'retry': {'max': 0, 'on': []}"),
        ROUTE("'retry': {'on': ['connect_failure', 'reset', 'timeout', 'gateway_error', '5xx']}"),
        ROUTE("'auth': 'required', 'roles': null"),
        ROUTE("'auth': 'optional', 'api_key': true, 'rate_limit': null, 'rewrite': null"),
        ROUTE("'methods': ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']"),
        "{'routes': [{'path': '/a/{id}/*', 'upstream': 'auth', 'rewrite': '/b/{id}?x={id}'}]}",
        ROUTE("'max_body': 1024, 'retry': {'base': '10ms', 'cap': '1s'}"),
        ROUTE("'max_body': '1m'"),
        "{'routes': [{'path': '/a', 'upstream': 'auth', 'methods': ['GET']}, "
        "{'path': '/a', 'upstream': 'auth', 'methods': ['POST']}]}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char err[512];
        if (parse(ok[i], err, sizeof(err)) != 0)
            fail_msg("valid document %zu refused: %s\n  %s", i, err, dq(ok[i]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_with_where_and_why),
        cmocka_unit_test(test_near_misses_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

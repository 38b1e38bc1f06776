/* test_gateway_headers.c - which headers the gateway forwards, drops or
 * rewrites in each direction, in any letter case. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/headers.h"

/* Checks a name as given, lowercased and uppercased. */
static void check_up(const char *name, bool websocket, gw_header_action_t want)
{
    char lower[64], upper[64];
    size_t n = strlen(name);
    assert_true(n < sizeof(lower));
    for (size_t i = 0; i <= n; i++) {
        lower[i] = (char)tolower((unsigned char)name[i]);
        upper[i] = (char)toupper((unsigned char)name[i]);
    }
    const char *forms[] = {name, lower, upper};
    for (size_t i = 0; i < 3; i++) {
        gw_header_action_t got = gw_request_header_action(forms[i], websocket);
        if (got != want)
            fail_msg("%s (websocket %d): %d, expected %d", forms[i], websocket, got, want);
    }
}

static void test_request_headers(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        gw_header_action_t plain, websocket;
    } cases[] = {
        /* hop-by-hop */
        {"Connection", GW_HDR_DROP, GW_HDR_DROP},
        {"Keep-Alive", GW_HDR_DROP, GW_HDR_DROP},
        {"Proxy-Connection", GW_HDR_DROP, GW_HDR_DROP},
        {"Proxy-Authorization", GW_HDR_DROP, GW_HDR_DROP},
        {"Proxy-Authenticate", GW_HDR_DROP, GW_HDR_DROP},
        {"TE", GW_HDR_DROP, GW_HDR_DROP},
        {"Trailer", GW_HDR_DROP, GW_HDR_DROP},
        {"Transfer-Encoding", GW_HDR_DROP, GW_HDR_DROP},
        {"Upgrade", GW_HDR_DROP, GW_HDR_UPGRADE},
        /* identity and the internal token: never from a client */
        {"X-User-Id", GW_HDR_DROP, GW_HDR_DROP},
        {"X-User-Role", GW_HDR_DROP, GW_HDR_DROP},
        {"X-Session-Id", GW_HDR_DROP, GW_HDR_DROP},
        {"X-Internal-Token", GW_HDR_DROP, GW_HDR_DROP},
        /* set again by the gateway */
        {"Content-Length", GW_HDR_DROP, GW_HDR_DROP},
        {"Expect", GW_HDR_DROP, GW_HDR_DROP},
        {"X-Request-Id", GW_HDR_DROP, GW_HDR_DROP},
        {"traceparent", GW_HDR_DROP, GW_HDR_DROP},
        {"X-Forwarded-Host", GW_HDR_DROP, GW_HDR_DROP},
        {"X-Forwarded-Proto", GW_HDR_DROP, GW_HDR_DROP},
        {"X-Forwarded-For", GW_HDR_XFF, GW_HDR_XFF},
        {"Host", GW_HDR_HOST, GW_HDR_HOST},
        {"Via", GW_HDR_VIA, GW_HDR_VIA},
        /* the rest passes */
        {"Authorization", GW_HDR_KEEP, GW_HDR_KEEP},
        {"X-API-Key", GW_HDR_KEEP, GW_HDR_KEEP},
        {"Content-Type", GW_HDR_KEEP, GW_HDR_KEEP},
        {"Idempotency-Key", GW_HDR_KEEP, GW_HDR_KEEP},
        {"Sec-WebSocket-Key", GW_HDR_KEEP, GW_HDR_KEEP},
        {"tracestate", GW_HDR_KEEP, GW_HDR_KEEP},
        {"X-User-Ids", GW_HDR_KEEP, GW_HDR_KEEP},
        {"X-User", GW_HDR_KEEP, GW_HDR_KEEP},
        {"X-Internal", GW_HDR_KEEP, GW_HDR_KEEP},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_up(cases[i].name, false, cases[i].plain);
        check_up(cases[i].name, true, cases[i].websocket);
    }
}

static void test_response_headers(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool dropped, dropped_with_cors;
    } cases[] = {
        {"Connection", true, true},
        {"keep-alive", true, true},
        {"Transfer-Encoding", true, true},
        {"Upgrade", true, true},
        {"Trailer", true, true},
        {"Content-Length", true, true},
        {"Content-Type", true, true},
        {"Date", true, true},
        {"X-Request-Id", true, true},
        {"Via", true, true},
        {"X-Content-Type-Options", true, true},
        {"Referrer-Policy", true, true},
        {"Strict-Transport-Security", true, true},
        {"Access-Control-Allow-Origin", false, true},
        {"access-control-allow-credentials", false, true},
        {"Access-Control", false, false},
        {"Set-Cookie", false, false},
        {"Cache-Control", false, false},
        {"ETag", false, false},
        {"Location", false, false},
        {"Vary", false, false},
        {"RateLimit-Limit", false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (gw_response_header_dropped(cases[i].name, false) != cases[i].dropped ||
            gw_response_header_dropped(cases[i].name, true) != cases[i].dropped_with_cors)
            fail_msg("case %zu (%s)", i, cases[i].name);
    }
}

static void test_token_lists(void **state)
{
    (void)state;
    assert_true(gw_header_has_token("keep-alive, X-Secret", "x-secret"));
    assert_true(gw_header_has_token("Upgrade", "upgrade"));
    assert_true(gw_header_has_token("  close ,\tUpgrade\t", "upgrade"));
    assert_true(gw_header_has_token("websocket", "websocket"));
    assert_false(gw_header_has_token("keep-alive, X-Secrets", "x-secret"));
    assert_false(gw_header_has_token("X-Secret-2", "x-secret"));
    assert_false(gw_header_has_token("", "upgrade"));
    assert_false(gw_header_has_token(",,", "upgrade"));
    assert_false(gw_header_has_token(NULL, "upgrade"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_response_headers),
        cmocka_unit_test(test_token_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

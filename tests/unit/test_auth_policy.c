/*
 * test_auth_policy.c - the auth service's pure decisions
 * (services/auth/auth_policy.c): roles, the login lockout window, what a
 * presented refresh token deserves, the account-wide login backoff, Bearer parsing, API key
 * shapes and option validation. Table-driven: each row is a case a user of
 * the API would recognise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/config.h"
#include "services/auth/auth_internal.h"
#include "services/registry.h"

#define S      1000LL
#define MINUTE (60 * S)

static void test_roles(void **state)
{
    (void)state;
    static const struct {
        const char *role;
        bool valid;
    } cases[] = {
        {"admin", true}, {"moderator", true}, {"verified_user", true},
        {"user", true},  {"Admin", false},    {"root", false},
        {"", false},     {"user ", false},    {"verified", false},
        {NULL, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(auth_role_valid(cases[i].role), cases[i].valid);
}

static void test_lockout_window(void **state)
{
    (void)state;
    const int64_t now = 100 * MINUTE, window = 15 * MINUTE;
    static const struct {
        const char *what;
        int64_t recent[6]; /* minutes before now, newest first */
        size_t n;
        int64_t max;
        int64_t want_s;
    } cases[] = {
        {"no failures", {0}, 0, 5, 0},
        {"four failures are allowed a fifth try", {1, 2, 3, 4}, 4, 5, 0},
        {"five just now: locked for the whole window", {0, 0, 0, 0, 0}, 5, 5, 15 * 60},
        {"five, oldest 10 min ago: 5 min left", {1, 2, 3, 4, 10}, 5, 5, 5 * 60},
        {"one failure allowed, one 14 min ago", {14}, 1, 1, 60},
        {"max 3: the third newest decides", {1, 2, 12}, 3, 3, 3 * 60},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t recent[6];
        for (size_t j = 0; j < cases[i].n; j++)
            recent[j] = now - cases[i].recent[j] * MINUTE;
        int64_t got = auth_lockout_retry_after_s(recent, cases[i].n, now, window, cases[i].max);
        if (got != cases[i].want_s) fail_msg("%s: got %lld s", cases[i].what, (long long)got);
    }
}

static void test_lockout_rounds_up_and_ends(void **state)
{
    (void)state;
    const int64_t window = 15 * MINUTE;
    int64_t t0 = 1000000;
    int64_t recent[5] = {t0, t0, t0, t0, t0};
    /* 1 ms before the oldest failure leaves the window: still locked, 1 s. */
    assert_int_equal(auth_lockout_retry_after_s(recent, 5, t0 + window - 1, window, 5), 1);
    /* 1.5 s before: rounded up to 2 s, never down to a value that is too early. */
    assert_int_equal(auth_lockout_retry_after_s(recent, 5, t0 + window - 1500, window, 5), 2);
    /* At the edge the failure no longer counts. */
    assert_int_equal(auth_lockout_retry_after_s(recent, 5, t0 + window, window, 5), 0);
}

static void test_refresh_decisions(void **state)
{
    (void)state;
    const int64_t now = 50 * MINUTE;
    static const struct {
        const char *what;
        auth_refresh_facts_t facts;
        auth_refresh_verdict_t want;
    } cases[] = {
        {"unknown token", {.found = false}, AUTH_REFRESH_UNKNOWN},
        {"fresh token rotates", {.found = true, .expires_at_ms = 60 * MINUTE}, AUTH_REFRESH_ROTATE},
        {"used token is reuse",
         {.found = true, .used = true, .expires_at_ms = 60 * MINUTE},
         AUTH_REFRESH_REUSED},
        {"reuse wins over expiry",
         {.found = true, .used = true, .expires_at_ms = 10 * MINUTE},
         AUTH_REFRESH_REUSED},
        {"reuse wins over a revoked session",
         {.found = true, .used = true, .session_revoked = true, .expires_at_ms = 60 * MINUTE},
         AUTH_REFRESH_REUSED},
        {"revoked session",
         {.found = true, .session_revoked = true, .expires_at_ms = 60 * MINUTE},
         AUTH_REFRESH_REVOKED},
        {"expired at exactly now",
         {.found = true, .expires_at_ms = 50 * MINUTE},
         AUTH_REFRESH_EXPIRED},
        {"banned user",
         {.found = true, .banned = true, .expires_at_ms = 60 * MINUTE},
         AUTH_REFRESH_BANNED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        auth_refresh_facts_t f = cases[i].facts;
        f.now_ms = now;
        auth_refresh_verdict_t got = auth_refresh_decide(&f);
        if (got != cases[i].want)
            fail_msg("%s: got %s", cases[i].what, auth_refresh_verdict_name(got));
    }
    assert_string_equal(auth_refresh_verdict_name(AUTH_REFRESH_ROTATE), "success");
    assert_string_equal(auth_refresh_verdict_name(AUTH_REFRESH_REUSED), "reused");
}

/* The account-wide backoff (auth_policy.c, LOCKOUT) with ceiling 20, base
 * 1 s, cap 60 s. */
static void test_account_backoff(void **state)
{
    (void)state;
    auth_settings_t cfg = {.login_window_ms = 15 * MINUTE,
                           .login_max_failures = 5,
                           .login_account_max_failures = 20,
                           .login_backoff_base_ms = 1 * S,
                           .login_backoff_max_ms = 60 * S};
    const int64_t now = 100 * MINUTE;
    static const struct {
        const char *what;
        int64_t account_n;
        int64_t newest_ago_ms; /* the account's newest failure, before now */
        int64_t want_s;
    } cases[] = {
        {"below the ceiling: no delay", 19, 0, 0},
        {"at the ceiling, failure just now: base delay", 20, 0, 1},
        {"one past: doubled", 21, 0, 2},
        {"three past: 8 s", 23, 0, 8},
        {"three past, 5 s ago: 3 s left", 23, 5 * S, 3},
        {"three past, 8 s ago: free", 23, 8 * S, 0},
        {"far past: capped at 60 s", 60, 0, 60},
        {"absurdly far past: still capped, no overflow", 1000000, 0, 60},
        {"capped, 59.5 s ago: rounded up to 1 s", 60, 59500, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got =
            auth_backoff_retry_after_s(&cfg, cases[i].account_n, now - cases[i].newest_ago_ms, now);
        if (got != cases[i].want_s) fail_msg("%s: got %lld s", cases[i].what, (long long)got);
    }
}

/* The whole login decision: the pair's lockout and the account's backoff,
 * the longer wait winning -- and failures from other clients never lock a
 * client out, they only delay it once the account ceiling is passed. */
static void test_login_decision(void **state)
{
    (void)state;
    auth_settings_t cfg = {.login_window_ms = 15 * MINUTE,
                           .login_max_failures = 5,
                           .login_account_max_failures = 20,
                           .login_backoff_base_ms = 1 * S,
                           .login_backoff_max_ms = 60 * S};
    const int64_t now = 100 * MINUTE;
    int64_t five_now[5] = {now, now, now, now, now};
    int64_t two[2] = {now - MINUTE, now - 2 * MINUTE};
    static const struct {
        const char *what;
        int which_recent; /* 0 none, 1 five just now, 2 two a minute ago */
        int64_t account_n, newest_ago_ms, want_s;
    } cases[] = {
        {"fresh account, fresh client", 0, 0, 0, 0},
        {"this client failed 5 times: locked for the window", 1, 5, 0, 15 * 60},
        {"19 failures elsewhere, none here: allowed", 0, 19, 0, 0},
        {"20 failures elsewhere just now, none here: only the base delay", 0, 20, 0, 1},
        {"25 failures elsewhere: 32 s, never the window", 0, 25, 0, 32},
        {"80 failures elsewhere: the cap, never the window", 0, 80, 0, 60},
        {"80 elsewhere, a minute ago: free for this client", 0, 80, MINUTE, 0},
        {"two here and 21 in all: the backoff decides", 2, 21, 0, 2},
        {"five here and 25 in all: the longer lockout decides", 1, 25, 0, 15 * 60},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        auth_login_facts_t f = {.account_n = cases[i].account_n,
                                .account_newest_ms = now - cases[i].newest_ago_ms,
                                .now_ms = now};
        if (cases[i].which_recent == 1) {
            f.client_recent = five_now;
            f.client_n = 5;
        } else if (cases[i].which_recent == 2) {
            f.client_recent = two;
            f.client_n = 2;
        }
        int64_t got = auth_login_retry_after_s(&cfg, &f);
        if (got != cases[i].want_s) fail_msg("%s: got %lld s", cases[i].what, (long long)got);
    }
}

static void test_bearer(void **state)
{
    (void)state;
    static const struct {
        const char *header, *token;
    } cases[] = {
        {"Bearer abc.def.ghi", "abc.def.ghi"},
        {"bearer abc", "abc"},
        {"BEARER   abc", "abc"},
        {"Bearer", NULL},
        {"Bearer ", NULL},
        {"Bearerabc", NULL},
        {"Basic YTpi", NULL},
        {"Bearer a b", NULL},
        {"", NULL},
        {NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = auth_bearer_token(cases[i].header);
        if (!cases[i].token)
            assert_null(got);
        else
            assert_string_equal(got, cases[i].token);
    }
}

static void test_api_keys(void **state)
{
    (void)state;
    char a[AUTH_API_KEY_LEN + 1], b[AUTH_API_KEY_LEN + 1];
    auth_api_key_generate(a);
    auth_api_key_generate(b);
    assert_int_equal(strlen(a), AUTH_API_KEY_LEN);
    assert_memory_equal(a, "trk_", 4);
    assert_true(auth_api_key_well_formed(a));
    assert_string_not_equal(a, b);

    char bad[AUTH_API_KEY_LEN + 2];
    memcpy(bad, a, sizeof(a));
    bad[10] = '+'; /* not base64url */
    assert_false(auth_api_key_well_formed(bad));
    memcpy(bad, a, sizeof(a));
    bad[AUTH_API_KEY_LEN - 1] = '\0'; /* one short */
    assert_false(auth_api_key_well_formed(bad));
    memcpy(bad, a, sizeof(a));
    bad[AUTH_API_KEY_LEN] = 'x'; /* one long */
    bad[AUTH_API_KEY_LEN + 1] = '\0';
    assert_false(auth_api_key_well_formed(bad));
    memcpy(bad, a, sizeof(a));
    bad[0] = 'x'; /* wrong tag */
    assert_false(auth_api_key_well_formed(bad));
    assert_false(auth_api_key_well_formed("trk_this_key_does_not_exist_0123456789"));
    assert_false(auth_api_key_well_formed(NULL));
}

/* Loads the auth options from argv (no environment: TRELLIS_* are unset by
 * main) and validates them. */
static int load_settings(int argc, char **argv, auth_settings_t *out, char *err, size_t errlen)
{
    const tr_option_t *sets[] = {tr_config_common_options, auth_service.options, NULL};
    tr_config_t *cfg = NULL;
    int rc = tr_config_load(&cfg, sets, argc, argv, err, errlen);
    if (rc == 0) rc = auth_settings_load(cfg, out, err, errlen);
    tr_config_free(cfg);
    return rc;
}

static void test_settings_defaults(void **state)
{
    (void)state;
    auth_settings_t s;
    char err[256] = "";
    assert_int_equal(load_settings(0, NULL, &s, err, sizeof(err)), 0);
    assert_int_equal(s.access_ttl_s, 15 * 60);
    assert_int_equal(s.refresh_ttl_ms, 30LL * 86400 * S);
    assert_int_equal(s.reset_ttl_ms, 60 * MINUTE);
    assert_int_equal(s.login_window_ms, 15 * MINUTE);
    assert_int_equal(s.login_max_failures, 5);
    assert_int_equal(s.login_account_max_failures, 20);
    assert_int_equal(s.login_backoff_base_ms, 1 * S);
    assert_int_equal(s.login_backoff_max_ms, 60 * S);
    assert_int_equal(s.pwhash.memlimit, 19u * 1024 * 1024);
    assert_int_equal(s.pwhash.opslimit, 2);
}

static void test_settings_refused(void **state)
{
    (void)state;
    static const struct {
        const char *flag, *value, *named;
    } cases[] = {
        {"--argon2-memory", "18m", "argon2-memory"},
        {"--argon2-memory", "19000k", "argon2-memory"},
        {"--argon2-memory", "lots", "argon2-memory"},
        {"--argon2-iterations", "1", "argon2-iterations"},
        {"--argon2-iterations", "0", "argon2-iterations"},
        {"--access-ttl", "0s", "access-ttl"},
        {"--access-ttl", "1500ms", "access-ttl"},
        {"--refresh-ttl", "soon", "refresh-ttl"},
        {"--reset-ttl", "0", "reset-ttl"},
        {"--login-max-failures", "0", "login-max-failures"},
        {"--login-failure-window", "0s", "login-failure-window"},
        {"--login-account-max-failures", "0", "login-account-max-failures"},
        {"--login-backoff-base", "0s", "login-backoff-base"},
        {"--login-backoff-max", "forever", "login-backoff-max"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = {(char *)cases[i].flag, (char *)cases[i].value, NULL};
        auth_settings_t s;
        char err[256] = "";
        int rc = load_settings(2, argv, &s, err, sizeof(err));
        if (rc != -EINVAL || !strstr(err, cases[i].named))
            fail_msg("%s %s: rc %d, err \"%s\"", cases[i].flag, cases[i].value, rc, err);
    }
}

static void test_settings_accepted(void **state)
{
    (void)state;
    char *argv[] = {"--argon2-memory",
                    "64m",
                    "--argon2-iterations",
                    "3",
                    "--access-ttl",
                    "2s",
                    "--login-max-failures",
                    "3",
                    NULL};
    auth_settings_t s;
    char err[256] = "";
    assert_int_equal(load_settings(8, argv, &s, err, sizeof(err)), 0);
    assert_int_equal(s.pwhash.memlimit, 64u * 1024 * 1024);
    assert_int_equal(s.pwhash.opslimit, 3);
    assert_int_equal(s.access_ttl_s, 2);
    assert_int_equal(s.login_max_failures, 3);
}

/* The service runs the schema generated from its migrations/ folder, each
 * version present for both engines and numbered without gaps. */
static void test_migrations_declared(void **state)
{
    (void)state;
    assert_ptr_equal(trellis_service_find("auth")->migrations, &auth_migrations);
    assert_true(auth_migrations.count >= 2);
    for (size_t i = 0; i < auth_migrations.count; i++) {
        assert_int_equal(auth_migrations.list[i].version, (int)i + 1);
        assert_non_null(auth_migrations.list[i].sqlite);
        assert_non_null(auth_migrations.list[i].pg);
    }
}

/* Every route is well formed, unique, and admin routes demand the role. */
static void test_route_table(void **state)
{
    (void)state;
    tr_router_t *router = tr_router_new();
    for (size_t i = 0; i < auth_service.nroutes; i++) {
        const tr_route_t *r = &auth_service.routes[i];
        if (tr_router_add(router, r) != 0) fail_msg("route %s %s refused", r->method, r->pattern);
        bool admin_path =
            strstr(r->pattern, "/admin/") || strncmp(r->pattern, "/api/auth/users", 15) == 0;
        if (admin_path && (!r->roles || strcmp(r->roles, "admin") != 0))
            fail_msg("%s %s is not admin-only", r->method, r->pattern);
    }
    tr_router_free(router);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_lockout_window),
        cmocka_unit_test(test_lockout_rounds_up_and_ends),
        cmocka_unit_test(test_refresh_decisions),
        cmocka_unit_test(test_account_backoff),
        cmocka_unit_test(test_login_decision),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_api_keys),
        cmocka_unit_test(test_settings_defaults),
        cmocka_unit_test(test_settings_refused),
        cmocka_unit_test(test_settings_accepted),
        cmocka_unit_test(test_migrations_declared),
        cmocka_unit_test(test_route_table),
    };
    /* The options are also read from TRELLIS_* variables; keep them out. */
    static const char *const vars[] = {"TRELLIS_ARGON2_MEMORY",       "TRELLIS_ARGON2_ITERATIONS",
                                       "TRELLIS_ACCESS_TTL",          "TRELLIS_REFRESH_TTL",
                                       "TRELLIS_RESET_TTL",           "TRELLIS_LOGIN_MAX_FAILURES",
                                       "TRELLIS_LOGIN_FAILURE_WINDOW"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

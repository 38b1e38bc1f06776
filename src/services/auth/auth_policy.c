/*
 * auth_policy.c - the auth service's decisions that need no I/O: which
 * roles exist, when a login is locked out, what a presented refresh token
 * deserves, how options and query parameters are read, what an API key
 * looks like. Kept pure so tests/unit/test_auth_policy.c can check them
 * with plain tables.
 *
 * LOCKOUT. A failure at time t counts while now < t + window. With at most
 * max_failures allowed inside the window, attempts are refused once
 * max_failures failures are inside it, until the oldest of the newest
 * max_failures leaves (no failures are recorded while locked, so in
 * practice that is the oldest failure in the window).
 */
#include "services/auth/auth_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const roles[] = {"admin", "moderator", "verified_user", "user"};

bool auth_role_valid(const char *role)
{
    if (!role) return false;
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(role, roles[i]) == 0) return true;
    return false;
}

/* One option through a parser, within [min, max]. */
static int option_in_range(const tr_config_t *cfg, const char *name,
                           int (*parse)(const tr_config_t *, const char *, int64_t *), int64_t min,
                           int64_t max, const char *range_text, int64_t *out, char *err,
                           size_t errlen)
{
    int rc = parse(cfg, name, out);
    if (rc == 0 && (*out < min || *out > max)) rc = -EINVAL;
    if (rc != 0) {
        const char *value = tr_config_get(cfg, name);
        snprintf(err, errlen, "invalid --%s \"%s\": must be %s", name, value ? value : "",
                 range_text);
        return -EINVAL;
    }
    return 0;
}

#define SECOND_MS 1000LL
#define DAY_MS    (86400LL * SECOND_MS)
#define MIB       (1024LL * 1024LL)

int auth_pwhash_params_from_config(const tr_config_t *cfg, tr_pwhash_params_t *out, char *err,
                                   size_t errlen)
{
    int64_t memory, iterations;
    if (option_in_range(cfg, "argon2-memory", tr_config_size, 19 * MIB, 4096 * MIB,
                        "between 19m and 4g (OWASP minimum 19 MiB)", &memory, err, errlen) ||
        option_in_range(cfg, "argon2-iterations", tr_config_int, 2, 100,
                        "between 2 and 100 (OWASP minimum 2)", &iterations, err, errlen))
        return -EINVAL;
    out->memlimit = (size_t)memory;
    out->opslimit = (uint64_t)iterations;
    return 0;
}

int auth_settings_load(const tr_config_t *cfg, auth_settings_t *out, char *err, size_t errlen)
{
    int64_t access_ms;
    memset(out, 0, sizeof(*out));
    if (option_in_range(cfg, "access-ttl", tr_config_duration_ms, SECOND_MS, DAY_MS,
                        "a duration between 1s and 1d", &access_ms, err, errlen) ||
        option_in_range(cfg, "refresh-ttl", tr_config_duration_ms, SECOND_MS, 365 * DAY_MS,
                        "a duration between 1s and 365d", &out->refresh_ttl_ms, err, errlen) ||
        option_in_range(cfg, "reset-ttl", tr_config_duration_ms, SECOND_MS, 7 * DAY_MS,
                        "a duration between 1s and 7d", &out->reset_ttl_ms, err, errlen) ||
        option_in_range(cfg, "login-failure-window", tr_config_duration_ms, SECOND_MS, DAY_MS,
                        "a duration between 1s and 1d", &out->login_window_ms, err, errlen) ||
        option_in_range(cfg, "login-max-failures", tr_config_int, 1, 1000,
                        "an integer between 1 and 1000", &out->login_max_failures, err, errlen))
        return -EINVAL;
    if (access_ms % SECOND_MS != 0) {
        snprintf(err, errlen, "invalid --access-ttl: must be whole seconds (JWT exp is seconds)");
        return -EINVAL;
    }
    out->access_ttl_s = access_ms / SECOND_MS;
    return auth_pwhash_params_from_config(cfg, &out->pwhash, err, errlen);
}

int64_t auth_lockout_retry_after_s(const int64_t *recent, size_t n, int64_t now_ms,
                                   int64_t window_ms, int64_t max_failures)
{
    if (max_failures < 1 || (int64_t)n < max_failures) return 0;
    int64_t free_at = recent[max_failures - 1] + window_ms;
    if (free_at <= now_ms) return 0;
    return (free_at - now_ms + SECOND_MS - 1) / SECOND_MS;
}

auth_refresh_verdict_t auth_refresh_decide(const auth_refresh_facts_t *f)
{
    if (!f->found) return AUTH_REFRESH_UNKNOWN;
    if (f->used) return AUTH_REFRESH_REUSED;
    if (f->session_revoked) return AUTH_REFRESH_REVOKED;
    if (f->now_ms >= f->expires_at_ms) return AUTH_REFRESH_EXPIRED;
    if (f->banned) return AUTH_REFRESH_BANNED;
    return AUTH_REFRESH_ROTATE;
}

const char *auth_refresh_verdict_name(auth_refresh_verdict_t v)
{
    switch (v) {
    case AUTH_REFRESH_ROTATE:
        return "success";
    case AUTH_REFRESH_UNKNOWN:
        return "unknown";
    case AUTH_REFRESH_REUSED:
        return "reused";
    case AUTH_REFRESH_REVOKED:
        return "revoked";
    case AUTH_REFRESH_EXPIRED:
        return "expired";
    case AUTH_REFRESH_BANNED:
        return "banned";
    }
    return "unknown";
}

int auth_parse_limit(const char *text, int *out)
{
    if (!text) {
        *out = AUTH_PAGE_DEFAULT;
        return 0;
    }
    if (!*text) return -EINVAL;
    long long v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return -EINVAL;
        /* Anything past the maximum is clamped, so stop growing early. */
        if (v <= AUTH_PAGE_MAX) v = v * 10 + (*p - '0');
    }
    if (v < 1) return -EINVAL;
    *out = v > AUTH_PAGE_MAX ? AUTH_PAGE_MAX : (int)v;
    return 0;
}

const char *auth_bearer_token(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer", 6) != 0) return NULL;
    const char *p = authorization + 6;
    if (*p != ' ' && *p != '\t') return NULL;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p || strpbrk(p, " \t")) return NULL;
    return p;
}

void auth_api_key_generate(char out[AUTH_API_KEY_LEN + 1])
{
    memcpy(out, AUTH_API_KEY_TAG, 4);
    tr_token_generate(out + 4);
}

bool auth_api_key_well_formed(const char *key)
{
    if (!key || strncmp(key, AUTH_API_KEY_TAG, 4) != 0) return false;
    size_t i = 4;
    for (; key[i]; i++) {
        char c = key[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || i >= AUTH_API_KEY_LEN) return false;
    }
    return i == AUTH_API_KEY_LEN;
}

/*
 * auth_policy.c - the auth service's decisions that need no I/O: which
 * roles exist, when a login is locked out, what a presented refresh token
 * deserves, how options and query parameters are read, what an API key
 * looks like. Kept pure so tests/unit/test_auth_policy.c can check them
 * with plain tables.
 *
 * LOCKOUT. Failures are counted per (account, client address) and per
 * account, so that nobody can lock a victim out from elsewhere:
 *   - per pair: a failure at time t counts while now < t + window. With at
 *     most login_max_failures allowed inside the window, attempts from that
 *     client are refused once that many failures are inside it, until the
 *     oldest of the newest max_failures leaves (no failures are recorded
 *     while refused, so in practice that is the oldest in the window).
 *     This is the old per-email rule, now only for the client that failed.
 *   - per account, across all clients: up to login_account_max_failures
 *     failures in the window cost nothing; from then on every attempt must
 *     wait base * 2^(failures - ceiling) after the account's newest failure,
 *     the delay capped at login_backoff_max (OWASP Authentication Cheat
 *     Sheet: exponential backoff rather than a hard lock). An attacker with
 *     many addresses therefore gets at most a few dozen guesses per window,
 *     and the owner, from their own client, is only ever delayed by at most
 *     the cap -- never locked for the whole window.
 * An attempt is refused (429, Retry-After) for the longer of the two waits.
 * Unknown emails are counted exactly like known ones.
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
                        "an integer between 1 and 1000", &out->login_max_failures, err, errlen) ||
        option_in_range(cfg, "login-account-max-failures", tr_config_int, 1, 100000,
                        "an integer between 1 and 100000", &out->login_account_max_failures, err,
                        errlen) ||
        option_in_range(cfg, "login-backoff-base", tr_config_duration_ms, 1, 3600 * SECOND_MS,
                        "a duration between 1ms and 1h", &out->login_backoff_base_ms, err,
                        errlen) ||
        option_in_range(cfg, "login-backoff-max", tr_config_duration_ms, 1, DAY_MS,
                        "a duration between 1ms and 1d", &out->login_backoff_max_ms, err, errlen))
        return -EINVAL;
    if (out->login_backoff_max_ms < out->login_backoff_base_ms) {
        snprintf(err, errlen,
                 "invalid --login-backoff-max: must not be below --login-backoff-base");
        return -EINVAL;
    }
    if (access_ms % SECOND_MS != 0) {
        snprintf(err, errlen, "invalid --access-ttl: must be whole seconds (JWT exp is seconds)");
        return -EINVAL;
    }
    out->access_ttl_s = access_ms / SECOND_MS;
    return auth_pwhash_params_from_config(cfg, &out->pwhash, err, errlen);
}

/* Seconds from now until at_ms, rounded up; 0 when it has come. */
static int64_t seconds_until(int64_t at_ms, int64_t now_ms)
{
    return at_ms <= now_ms ? 0 : (at_ms - now_ms + SECOND_MS - 1) / SECOND_MS;
}

int64_t auth_lockout_retry_after_s(const int64_t *recent, size_t n, int64_t now_ms,
                                   int64_t window_ms, int64_t max_failures)
{
    if (max_failures < 1 || (int64_t)n < max_failures) return 0;
    return seconds_until(recent[max_failures - 1] + window_ms, now_ms);
}

int64_t auth_backoff_retry_after_s(const auth_settings_t *cfg, int64_t account_n,
                                   int64_t account_newest_ms, int64_t now_ms)
{
    if (account_n < cfg->login_account_max_failures) return 0;
    int64_t excess = account_n - cfg->login_account_max_failures;
    int64_t delay = cfg->login_backoff_base_ms;
    /* Doubling stops at the cap, so no shift can overflow. */
    while (excess-- > 0 && delay < cfg->login_backoff_max_ms)
        delay *= 2;
    if (delay > cfg->login_backoff_max_ms) delay = cfg->login_backoff_max_ms;
    return seconds_until(account_newest_ms + delay, now_ms);
}

int64_t auth_login_retry_after_s(const auth_settings_t *cfg, const auth_login_facts_t *f)
{
    int64_t pair = auth_lockout_retry_after_s(f->client_recent, f->client_n, f->now_ms,
                                              cfg->login_window_ms, cfg->login_max_failures);
    int64_t account =
        auth_backoff_retry_after_s(cfg, f->account_n, f->account_newest_ms, f->now_ms);
    return pair > account ? pair : account;
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

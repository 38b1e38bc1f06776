/*
 * routes.c - parsing, validating and matching the gateway's route table
 * (see routes.h for the matching and rewrite rules, docs/gateway.md for the
 * file format).
 *
 * VALIDATION is strict on purpose: an unknown field, a duration without a
 * unit or a rewrite naming a parameter the path does not have is an error
 * naming the field ("routes[4].rewrite: ..."), because a routes file is
 * edited by hand and reloaded into a running gateway, where a silently
 * ignored typo would become an open route. Every value a route leaves out
 * comes from the file's "defaults" object, then from the built-in defaults.
 *
 * MATCHING splits the request path into segments once and then walks the
 * routes in their precomputed order (sorted at load), comparing segments in
 * place: no allocation, no locking, a few hundred byte comparisons for a
 * table of tens of routes.
 */
#include "gateway/routes.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kit/alloc.h"
#include "services/registry.h"

#define MAX_ROUTES_FILE_BYTES (4u << 20)
#define MAX_ROUTES            4096
#define MAX_DURATION_MS       (24ull * 3600 * 1000)

/* ---- methods -------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} method_bits[] = {
    {"GET", GW_M_GET},     {"HEAD", GW_M_HEAD},     {"POST", GW_M_POST},       {"PUT", GW_M_PUT},
    {"PATCH", GW_M_PATCH}, {"DELETE", GW_M_DELETE}, {"OPTIONS", GW_M_OPTIONS},
};

unsigned gw_method_bit(const char *method)
{
    for (size_t i = 0; i < sizeof(method_bits) / sizeof(method_bits[0]); i++)
        if (strcmp(method_bits[i].name, method) == 0) return method_bits[i].bit;
    return 0;
}

static void allow_from_mask(unsigned mask, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    if (mask & GW_M_GET) mask |= GW_M_HEAD;
    for (size_t i = 0; i < sizeof(method_bits) / sizeof(method_bits[0]); i++) {
        if (!(mask & method_bits[i].bit)) continue;
        int n = snprintf(out + used, size - used, "%s%s", used ? ", " : "", method_bits[i].name);
        if (n < 0 || (size_t)n >= size - used) break;
        used += (size_t)n;
    }
}

/* ---- parse context -------------------------------------------------------- */

typedef struct parse_ctx {
    char *err;
    size_t errlen;
    const gw_routes_env_t *env;
    gw_table_t *t;
    json_t *defaults; /* borrowed; NULL when the file has none */
} parse_ctx_t;

static int fail(parse_ctx_t *c, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(parse_ctx_t *c, const char *where, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->err && c->errlen) snprintf(c->err, c->errlen, "%s: %s: %s", c->t->source, where, msg);
    return -EINVAL;
}

/* Writes "where.field" into buf for messages (cut to fit). */
static const char *at(char *buf, size_t size, const char *where, const char *field)
{
    int n = snprintf(buf, size, "%s.%s", where, field);
    if (n < 0 || (size_t)n >= size) buf[size - 1] = '\0';
    return buf;
}

/* Checks that obj has only the given keys. */
static int check_keys(parse_ctx_t *c, const char *where, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (!ok) return fail(c, where, "unknown field \"%s\"", key);
    }
    return 0;
}

static bool valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return false;
    return true;
}

/* A quantity written as a whole number followed by a unit suffix: the
 * units it accepts, the largest value (in the smallest unit) and the
 * messages that name the field's form. */
typedef struct quantity_unit {
    const char *suffix;
    uint64_t scale;
} quantity_unit_t;

typedef struct quantity_form {
    const quantity_unit_t *units; /* ends with a NULL suffix */
    bool ignore_case;
    uint64_t max;
    const char *expected;  /* not a string starting with a digit */
    const char *bad_unit;  /* a suffix that is not in units */
    const char *too_large; /* more than max */
} quantity_form_t;

static int parse_quantity(parse_ctx_t *c, const char *where, json_t *v, const quantity_form_t *form,
                          uint64_t *out)
{
    const char *s = json_string_value(v);
    char *end = NULL;
    if (!s || !isdigit((unsigned char)s[0])) return fail(c, where, "%s", form->expected);
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    const quantity_unit_t *u = form->units;
    while (u->suffix &&
           (form->ignore_case ? strcasecmp(end, u->suffix) : strcmp(end, u->suffix)) != 0)
        u++;
    if (!u->suffix) return fail(c, where, "%s", form->bad_unit);
    if (errno != 0 || n > form->max / u->scale) return fail(c, where, "%s", form->too_large);
    *out = n * u->scale;
    return 0;
}

/* "250ms", "30s", "2m", "1h": a whole number with a unit. */
static int parse_duration(parse_ctx_t *c, const char *where, json_t *v, uint64_t *out)
{
    static const quantity_unit_t units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0}};
    static const quantity_form_t form = {
        .units = units,
        .max = MAX_DURATION_MS,
        .expected = "expected a duration such as \"30s\" or \"250ms\"",
        .bad_unit = "expected a duration such as \"30s\" or \"250ms\" (units ms, s, m, h)",
        .too_large = "duration too long (at most 24h)",
    };
    return parse_quantity(c, where, v, &form, out);
}

/* A byte count: an integer, or a string with k, m or g (binary units). */
static int parse_size(parse_ctx_t *c, const char *where, json_t *v, size_t *out)
{
    static const quantity_unit_t units[] = {
        {"", 1}, {"k", 1ull << 10}, {"m", 1ull << 20}, {"g", 1ull << 30}, {NULL, 0}};
    static const quantity_form_t form = {
        .units = units,
        .ignore_case = true,
        .max = 1ull << 40,
        .expected = "expected a size such as \"10m\" or a number of bytes",
        .bad_unit = "expected a size such as \"10m\" (units k, m, g)",
        .too_large = "size too large (at most 1 TiB)",
    };
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0) return fail(c, where, "must not be negative");
        *out = (size_t)n;
        return 0;
    }
    uint64_t n;
    int rc = parse_quantity(c, where, v, &form, &n);
    if (rc == 0) *out = (size_t)n;
    return rc;
}

static int parse_bool(parse_ctx_t *c, const char *where, json_t *v, bool *out)
{
    if (!json_is_boolean(v)) return fail(c, where, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

static int parse_uint(parse_ctx_t *c, const char *where, json_t *v, unsigned min, unsigned max,
                      unsigned *out)
{
    /* Written on every path: callers copy *out after checking rc, and an
     * optimizing gcc cannot see that fail() never returns 0. */
    *out = min;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
        json_integer_value(v) > (json_int_t)max)
        return fail(c, where, "expected an integer from %u to %u", min, max);
    *out = (unsigned)json_integer_value(v);
    return 0;
}

/* ---- upstreams ------------------------------------------------------------ */

/* host:port or [v6]:port with a port in 1..65535. */
static bool valid_instance(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close == s + 1 || close[1] != ':') return false;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || colon == s || memchr(s, ':', (size_t)(colon - s))) return false;
        for (const char *p = s; p < colon; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_') return false;
    }
    char *end = NULL;
    if (!isdigit((unsigned char)colon[1])) return false;
    long port = strtol(colon + 1, &end, 10);
    return *end == '\0' && port >= 1 && port <= 65535;
}

static gw_upstream_spec_t *upstream_add(gw_table_t *t, const char *name)
{
    t->upstreams = tr_xrealloc(t->upstreams, (t->nupstreams + 1) * sizeof(*t->upstreams));
    gw_upstream_spec_t *u = &t->upstreams[t->nupstreams++];
    memset(u, 0, sizeof(*u));
    u->name = tr_xstrdup(name);
    tr_upstream_config_defaults(&u->config);
    u->connect_timeout_ms = 2000;
    return u;
}

static void upstream_set_instances(gw_upstream_spec_t *u, char **instances, size_t n)
{
    u->instances = instances;
    u->ninstances = n;
    u->config.name = u->name;
    u->config.instances = (const char *const *)u->instances;
    u->config.ninstances = n;
}

/* The default address of a known service. */
static void upstream_default_instance(parse_ctx_t *c, gw_upstream_spec_t *u, int offset)
{
    const char *host = c->env && c->env->upstream_host ? c->env->upstream_host : "127.0.0.1";
    int base = c->env && c->env->port_base > 0 ? c->env->port_base : 8000;
    char **inst = tr_xcalloc(1, sizeof(char *));
    inst[0] = strchr(host, ':') ? tr_xasprintf("[%s]:%d", host, base + offset)
                                : tr_xasprintf("%s:%d", host, base + offset);
    upstream_set_instances(u, inst, 1);
}

static int parse_health(parse_ctx_t *c, const char *where, json_t *v, gw_upstream_spec_t *u)
{
    static const char *const keys[] = {
        "path", "interval", "timeout", "unhealthy_threshold", "healthy_threshold", NULL};
    char w[256];
    json_t *f;
    int rc;
    if (json_is_null(v) || json_is_false(v)) {
        u->config.health_path = NULL;
        return 0;
    }
    if (!json_is_object(v)) return fail(c, where, "expected an object, or null to disable checks");
    if ((rc = check_keys(c, where, v, keys)) != 0) return rc;
    if ((f = json_object_get(v, "path"))) {
        const char *p = json_string_value(f);
        at(w, sizeof(w), where, "path");
        if (!p || p[0] != '/' || strpbrk(p, " \r\n#"))
            return fail(c, w, "expected a path such as \"/readyz\"");
        /* The spec keeps its own copy: the config's pointer must outlive the JSON. */
        u->config.health_path = p;
    }
    if ((f = json_object_get(v, "interval"))) {
        at(w, sizeof(w), where, "interval");
        if ((rc = parse_duration(c, w, f, &u->config.health_interval_ms)) != 0) return rc;
        if (u->config.health_interval_ms < 100) return fail(c, w, "must be at least 100ms");
    }
    if ((f = json_object_get(v, "timeout"))) {
        at(w, sizeof(w), where, "timeout");
        if ((rc = parse_duration(c, w, f, &u->config.health_timeout_ms)) != 0) return rc;
    }
    if ((f = json_object_get(v, "unhealthy_threshold"))) {
        at(w, sizeof(w), where, "unhealthy_threshold");
        if ((rc = parse_uint(c, w, f, 1, 100, &u->config.unhealthy_threshold)) != 0) return rc;
    }
    if ((f = json_object_get(v, "healthy_threshold"))) {
        at(w, sizeof(w), where, "healthy_threshold");
        if ((rc = parse_uint(c, w, f, 1, 100, &u->config.healthy_threshold)) != 0) return rc;
    }
    return 0;
}

static int parse_breaker(parse_ctx_t *c, const char *where, json_t *v, gw_upstream_spec_t *u)
{
    static const char *const keys[] = {"failures", "cooldown", NULL};
    char w[256];
    json_t *f;
    int rc;
    if (!json_is_object(v)) return fail(c, where, "expected an object");
    if ((rc = check_keys(c, where, v, keys)) != 0) return rc;
    if ((f = json_object_get(v, "failures"))) {
        at(w, sizeof(w), where, "failures");
        if ((rc = parse_uint(c, w, f, 0, 1000, &u->config.breaker.failure_threshold)) != 0)
            return rc;
    }
    if ((f = json_object_get(v, "cooldown"))) {
        at(w, sizeof(w), where, "cooldown");
        if ((rc = parse_duration(c, w, f, &u->config.breaker.cooldown_ms)) != 0) return rc;
    }
    return 0;
}

static int parse_outlier(parse_ctx_t *c, const char *where, json_t *v, gw_upstream_spec_t *u)
{
    static const char *const keys[] = {"failures", "base_ejection", "max_ejection", "max_percent",
                                       NULL};
    char w[256];
    json_t *f;
    int rc;
    if (!json_is_object(v)) return fail(c, where, "expected an object");
    if ((rc = check_keys(c, where, v, keys)) != 0) return rc;
    if ((f = json_object_get(v, "failures"))) {
        at(w, sizeof(w), where, "failures");
        if ((rc = parse_uint(c, w, f, 0, 1000, &u->config.outlier_consecutive_failures)) != 0)
            return rc;
    }
    if ((f = json_object_get(v, "base_ejection"))) {
        at(w, sizeof(w), where, "base_ejection");
        if ((rc = parse_duration(c, w, f, &u->config.outlier_base_ejection_ms)) != 0) return rc;
    }
    if ((f = json_object_get(v, "max_ejection"))) {
        at(w, sizeof(w), where, "max_ejection");
        if ((rc = parse_duration(c, w, f, &u->config.outlier_max_ejection_ms)) != 0) return rc;
    }
    if ((f = json_object_get(v, "max_percent"))) {
        at(w, sizeof(w), where, "max_percent");
        if ((rc = parse_uint(c, w, f, 0, 100, &u->config.outlier_max_ejection_percent)) != 0)
            return rc;
    }
    return 0;
}

/* Checks the head of a named entry of a section ("upstreams.<name>"): its
 * name, that it is an object with only known keys. Fills where with the
 * entry's path for later messages. Returns 0 or the failure. */
static int open_named(parse_ctx_t *c, const char *section, const char *name, json_t *v,
                      const char *const *keys, char *where, size_t where_size)
{
    snprintf(where, where_size, "%s.%s", section, name);
    if (!valid_name(name, 64)) return fail(c, where, "name must be 1-64 of [A-Za-z0-9_.-]");
    if (!json_is_object(v)) return fail(c, where, "expected an object");
    return check_keys(c, where, v, keys);
}

static int parse_upstream(parse_ctx_t *c, const char *name, json_t *v)
{
    static const char *const keys[] = {"instances",       "lb",          "health",  "required",
                                       "connect_timeout", "breaker",     "outlier", "max_idle",
                                       "idle_timeout",    "description", NULL};
    char where[200], w[256];
    json_t *f;
    int rc;

    if ((rc = open_named(c, "upstreams", name, v, keys, where, sizeof(where))) != 0) return rc;
    gw_upstream_spec_t *u = upstream_add(c->t, name);

    if ((f = json_object_get(v, "instances"))) {
        at(w, sizeof(w), where, "instances");
        size_t n = json_array_size(f);
        if (!json_is_array(f) || n == 0 || n > TR_UPSTREAM_MAX_INSTANCES)
            return fail(c, w, "expected an array of 1 to %d \"host:port\" strings",
                        TR_UPSTREAM_MAX_INSTANCES);
        char **inst = tr_xcalloc(n, sizeof(char *));
        upstream_set_instances(u, inst, n);
        for (size_t i = 0; i < n; i++) {
            const char *s = json_string_value(json_array_get(f, i));
            if (!s || !valid_instance(s))
                return fail(c, w, "element %zu: expected \"host:port\" or \"[v6]:port\"", i);
            inst[i] = tr_xstrdup(s);
        }
    } else {
        int offset = trellis_service_port_offset(name);
        if (offset < 0)
            return fail(c, where,
                        "\"instances\" is required for a service that is not one of Trellis's "
                        "(ARCHITECTURE.md §6)");
        upstream_default_instance(c, u, offset);
    }
    if ((f = json_object_get(v, "lb"))) {
        const char *s = json_string_value(f);
        at(w, sizeof(w), where, "lb");
        if (s && strcmp(s, "round_robin") == 0)
            u->config.lb = TR_LB_ROUND_ROBIN;
        else if (s && strcmp(s, "least_request") == 0)
            u->config.lb = TR_LB_LEAST_REQUEST;
        else
            return fail(c, w, "expected \"round_robin\" or \"least_request\"");
    }
    if ((f = json_object_get(v, "health"))) {
        at(w, sizeof(w), where, "health");
        if ((rc = parse_health(c, w, f, u)) != 0) return rc;
    }
    if ((f = json_object_get(v, "required"))) {
        at(w, sizeof(w), where, "required");
        if ((rc = parse_bool(c, w, f, &u->required)) != 0) return rc;
    }
    if ((f = json_object_get(v, "connect_timeout"))) {
        at(w, sizeof(w), where, "connect_timeout");
        if ((rc = parse_duration(c, w, f, &u->connect_timeout_ms)) != 0) return rc;
        if (u->connect_timeout_ms == 0) return fail(c, w, "must be more than 0");
    }
    if ((f = json_object_get(v, "breaker"))) {
        at(w, sizeof(w), where, "breaker");
        if ((rc = parse_breaker(c, w, f, u)) != 0) return rc;
    }
    if ((f = json_object_get(v, "outlier"))) {
        at(w, sizeof(w), where, "outlier");
        if ((rc = parse_outlier(c, w, f, u)) != 0) return rc;
    }
    if ((f = json_object_get(v, "max_idle"))) {
        unsigned n;
        at(w, sizeof(w), where, "max_idle");
        if ((rc = parse_uint(c, w, f, 0, 100000, &n)) != 0) return rc;
        u->config.max_idle_per_instance = n;
    }
    if ((f = json_object_get(v, "idle_timeout"))) {
        at(w, sizeof(w), where, "idle_timeout");
        if ((rc = parse_duration(c, w, f, &u->config.idle_timeout_ms)) != 0) return rc;
    }
    return 0;
}

/* The health path string lives in the JSON document while parsing; copy it
 * into memory the table owns once the document is about to go. */
static void upstreams_own_strings(gw_table_t *t)
{
    for (size_t i = 0; i < t->nupstreams; i++) {
        gw_upstream_spec_t *u = &t->upstreams[i];
        if (u->config.health_path) u->config.health_path = tr_xstrdup(u->config.health_path);
    }
}

int gw_table_upstream_index(const gw_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->nupstreams; i++)
        if (strcmp(t->upstreams[i].name, name) == 0) return (int)i;
    return -1;
}

/* ---- rate limits ---------------------------------------------------------- */

static int parse_limit(parse_ctx_t *c, const char *name, json_t *v)
{
    static const char *const keys[] = {"rate", "burst", "key", "description", NULL};
    char where[200], w[256];
    json_t *f;
    int rc;

    if ((rc = open_named(c, "rate_limits", name, v, keys, where, sizeof(where))) != 0) return rc;
    gw_table_t *t = c->t;
    t->limits = tr_xrealloc(t->limits, (t->nlimits + 1) * sizeof(*t->limits));
    gw_limit_spec_t *l = &t->limits[t->nlimits++];
    memset(l, 0, sizeof(*l));
    l->name = tr_xstrdup(name);

    f = json_object_get(v, "rate");
    at(w, sizeof(w), where, "rate");
    if (!json_is_number(f) || json_number_value(f) < 0.001 || json_number_value(f) > 1e6)
        return fail(c, w, "expected requests per second, from 0.001 to 1000000");
    l->rate = json_number_value(f);
    f = json_object_get(v, "burst");
    at(w, sizeof(w), where, "burst");
    unsigned burst;
    if (!f) return fail(c, w, "required");
    if ((rc = parse_uint(c, w, f, 1, 1000000, &burst)) != 0) return rc;
    l->burst = burst;
    f = json_object_get(v, "key");
    at(w, sizeof(w), where, "key");
    if (!json_string_value(f) || tr_ratelimit_key_kind_parse(json_string_value(f), &l->key) != 0)
        return fail(c, w, "expected \"ip\", \"user\" or \"api_key\"");
    return 0;
}

static int limit_index(const gw_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->nlimits; i++)
        if (strcmp(t->limits[i].name, name) == 0) return (int)i;
    return -1;
}

/* ---- route paths and rewrites --------------------------------------------- */

static bool path_char_ok(char ch)
{
    return ch > 0x20 && ch < 0x7f && ch != '?' && ch != '#' && ch != '{' && ch != '}' && ch != '*';
}

static bool param_name_ok(const char *s, size_t len)
{
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
    return true;
}

static int compile_path(parse_ctx_t *c, const char *where, gw_route_t *r)
{
    const char *p = r->path;
    size_t len = strlen(p);
    if (len == 0 || p[0] != '/') return fail(c, where, "must start with '/'");
    if (len >= 2 && strcmp(p + len - 2, "/*") == 0) {
        r->prefix = true;
        len -= 2;
    }
    const char *end = p + len;
    const char *s = p + 1;
    if (len <= 1) {
        if (len == 1 && r->prefix) return fail(c, where, "empty segment before \"/*\"");
        return 0; /* "/" or "/\*" */
    }
    for (;;) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *seg_end = slash ? slash : end;
        size_t n = (size_t)(seg_end - s);
        if (n == 0) return fail(c, where, "empty segment (\"//\" or a trailing '/')");
        if (r->nsegments == GW_MAX_SEGMENTS)
            return fail(c, where, "more than %d segments", GW_MAX_SEGMENTS);
        gw_segment_t *seg = &r->segments[r->nsegments];
        if (s[0] == '{') {
            if (n < 3 || s[n - 1] != '}' || !param_name_ok(s + 1, n - 2))
                return fail(c, where, "a parameter is a whole segment {name} of [A-Za-z0-9_]");
            for (size_t i = 0; i < r->nsegments; i++)
                if (r->segments[i].is_param && r->segments[i].len == n - 2 &&
                    memcmp(r->segments[i].text, s + 1, n - 2) == 0)
                    return fail(c, where, "parameter {%.*s} appears twice", (int)(n - 2), s + 1);
            if (r->nparams == GW_MAX_PARAMS)
                return fail(c, where, "more than %d parameters", GW_MAX_PARAMS);
            seg->text = s + 1;
            seg->len = n - 2;
            seg->is_param = true;
            r->nparams++;
        } else {
            for (size_t i = 0; i < n; i++)
                if (!path_char_ok(s[i]))
                    return fail(c, where,
                                "invalid character '%c' (only \"/*\" at the end, and {name} "
                                "parameters as whole segments)",
                                s[i]);
            seg->text = s;
            seg->len = n;
            seg->is_param = false;
            r->literal_mask |= 1u << (GW_MAX_SEGMENTS - 1 - r->nsegments);
        }
        r->nsegments++;
        if (!slash) break;
        s = slash + 1;
    }
    return 0;
}

static bool target_char_ok(char ch)
{
    return ch > 0x20 && ch < 0x7f && ch != '#' && ch != '{' && ch != '}';
}

static void add_part(gw_route_t *r, int kind, const char *text, size_t len, size_t param,
                     bool in_query)
{
    r->parts = tr_xrealloc(r->parts, (r->nparts + 1) * sizeof(*r->parts));
    r->parts[r->nparts++] = (gw_rewrite_part_t){kind, text, len, param, in_query};
}

static int compile_rewrite(parse_ctx_t *c, const char *where, gw_route_t *r)
{
    const char *s = r->rewrite;
    size_t len = strlen(s);
    bool in_query = false;
    if (len == 0 || s[0] != '/') return fail(c, where, "must start with '/'");
    /* "/\*" at the end of the path part stands for the rest below the prefix. */
    const char *q = strchr(s, '?');
    size_t path_len = q ? (size_t)(q - s) : len;
    bool rest = path_len >= 2 && s[path_len - 2] == '/' && s[path_len - 1] == '*';
    if (rest && !r->prefix)
        return fail(c, where,
                    "\"/*\" (the rest of the path) needs a prefix route (a path ending in \"/*\")");
    const char *lit = s;
    for (size_t i = 0; i < len;) {
        char ch = s[i];
        if (rest && i == path_len - 2) {
            if (s + i > lit) add_part(r, GW_RW_LITERAL, lit, (size_t)(s + i - lit), 0, in_query);
            add_part(r, GW_RW_REST, NULL, 0, 0, false);
            i += 2;
            lit = s + i;
            continue;
        }
        if (ch == '?') {
            if (in_query) return fail(c, where, "more than one '?'");
            in_query = true;
            r->rewrite_has_query = true;
            i++;
            continue;
        }
        if (ch == '{') {
            const char *close = strchr(s + i, '}');
            if (!close) return fail(c, where, "unclosed '{'");
            size_t n = (size_t)(close - (s + i + 1));
            size_t idx = 0, k = 0;
            bool found = false;
            for (size_t j = 0; j < r->nsegments && !found; j++) {
                if (!r->segments[j].is_param) continue;
                if (r->segments[j].len == n && memcmp(r->segments[j].text, s + i + 1, n) == 0) {
                    idx = k;
                    found = true;
                }
                k++;
            }
            if (!found)
                return fail(c, where, "{%.*s} is not a parameter of the path", (int)n, s + i + 1);
            if (s + i > lit) add_part(r, GW_RW_LITERAL, lit, (size_t)(s + i - lit), 0, in_query);
            add_part(r, GW_RW_PARAM, NULL, 0, idx, in_query);
            i += n + 2;
            lit = s + i;
            continue;
        }
        if (!target_char_ok(ch) || ch == '*')
            return fail(c, where, "invalid character '%c' in a rewrite", ch);
        i++;
    }
    if (s + len > lit) add_part(r, GW_RW_LITERAL, lit, (size_t)(s + len - lit), 0, in_query);
    return 0;
}

/* ---- routes --------------------------------------------------------------- */

/* The route's value for key, else the file's default, else NULL. *from
 * names where it came from for messages. */
static json_t *route_field(parse_ctx_t *c, json_t *route, const char *key, const char *route_where,
                           char *from, size_t fromlen)
{
    json_t *v = json_object_get(route, key);
    if (v) {
        snprintf(from, fromlen, "%s.%s", route_where, key);
        return v;
    }
    v = c->defaults ? json_object_get(c->defaults, key) : NULL;
    snprintf(from, fromlen, "defaults.%s", key);
    return v;
}

static int parse_retry(parse_ctx_t *c, const char *where, json_t *v, tr_retry_policy_t *p)
{
    static const char *const keys[] = {"max", "on", "base", "cap", NULL};
    static const struct {
        const char *name;
        unsigned bit;
    } on_names[] = {
        {"connect_failure", TR_RETRY_ON_CONNECT_FAILURE},
        {"reset", TR_RETRY_ON_RESET},
        {"timeout", TR_RETRY_ON_TIMEOUT},
        {"gateway_error", TR_RETRY_ON_GATEWAY_ERROR},
        {"5xx", TR_RETRY_ON_5XX},
    };
    char w[256];
    json_t *f;
    int rc;
    tr_retry_policy_defaults(p);
    if (json_is_false(v)) {
        p->max_retries = 0;
        return 0;
    }
    if (!json_is_object(v)) return fail(c, where, "expected an object, or false for no retries");
    if ((rc = check_keys(c, where, v, keys)) != 0) return rc;
    if ((f = json_object_get(v, "max"))) {
        at(w, sizeof(w), where, "max");
        if ((rc = parse_uint(c, w, f, 0, 10, &p->max_retries)) != 0) return rc;
    }
    if ((f = json_object_get(v, "on"))) {
        at(w, sizeof(w), where, "on");
        if (!json_is_array(f)) return fail(c, w, "expected an array of conditions");
        p->retry_on = 0;
        for (size_t i = 0; i < json_array_size(f); i++) {
            const char *s = json_string_value(json_array_get(f, i));
            bool ok = false;
            for (size_t k = 0; s && k < sizeof(on_names) / sizeof(on_names[0]); k++) {
                if (strcmp(s, on_names[k].name) == 0) {
                    p->retry_on |= on_names[k].bit;
                    ok = true;
                }
            }
            if (!ok)
                return fail(c, w,
                            "element %zu: expected \"connect_failure\", \"reset\", \"timeout\", "
                            "\"gateway_error\" or \"5xx\"",
                            i);
        }
    }
    if ((f = json_object_get(v, "base"))) {
        at(w, sizeof(w), where, "base");
        if ((rc = parse_duration(c, w, f, &p->base_ms)) != 0) return rc;
    }
    if ((f = json_object_get(v, "cap"))) {
        at(w, sizeof(w), where, "cap");
        if ((rc = parse_duration(c, w, f, &p->cap_ms)) != 0) return rc;
    }
    if (p->cap_ms < p->base_ms) return fail(c, where, "cap is below base");
    return 0;
}

static int parse_methods(parse_ctx_t *c, const char *where, json_t *v, unsigned *out)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(c, where, "expected a non-empty array such as [\"GET\", \"POST\"]");
    *out = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const char *s = json_string_value(json_array_get(v, i));
        unsigned bit = s ? gw_method_bit(s) : 0;
        if (!bit)
            return fail(c, where,
                        "element %zu: expected GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS", i);
        *out |= bit;
    }
    if (*out & GW_M_GET) *out |= GW_M_HEAD;
    return 0;
}

static int parse_roles(parse_ctx_t *c, const char *where, json_t *v, char **out)
{
    size_t n = json_array_size(v), total = 0;
    if (json_is_null(v)) return 0;
    if (!json_is_array(v) || n == 0)
        return fail(c, where, "expected a non-empty array of role names");
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s || !valid_name(s, 23) || strchr(s, ','))
            return fail(c, where, "element %zu: expected a role name such as \"admin\"", i);
        total += strlen(s) + 1;
    }
    char *roles = tr_xmalloc(total), *p = roles;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        size_t len = strlen(s);
        if (i) *p++ = ',';
        memcpy(p, s, len);
        p += len;
    }
    *p = '\0';
    *out = roles;
    return 0;
}

static int resolve_upstream(parse_ctx_t *c, const char *where, json_t *v, size_t *out)
{
    const char *name = json_string_value(v);
    if (!name) return fail(c, where, "required: the name of an upstream");
    int idx = gw_table_upstream_index(c->t, name);
    if (idx < 0) {
        int offset = trellis_service_port_offset(name);
        if (offset < 0 || !valid_name(name, 64))
            return fail(c, where,
                        "unknown upstream \"%s\" (declare it under \"upstreams\" with its "
                        "\"instances\")",
                        name);
        gw_upstream_spec_t *u = upstream_add(c->t, name);
        upstream_default_instance(c, u, offset);
        idx = (int)c->t->nupstreams - 1;
    }
    *out = (size_t)idx;
    return 0;
}

static int parse_route(parse_ctx_t *c, size_t index, json_t *v, gw_route_t *r)
{
    static const char *const keys[] = {"name",    "path",        "methods",     "upstream",
                                       "auth",    "roles",       "api_key",     "rate_limit",
                                       "timeout", "try_timeout", "retry",       "max_body",
                                       "rewrite", "websocket",   "description", NULL};
    char where[64], w[200];
    json_t *f;
    int rc;

    snprintf(where, sizeof(where), "routes[%zu]", index);
    r->limit = -1;
    if (!json_is_object(v)) return fail(c, where, "expected an object");
    if ((rc = check_keys(c, where, v, keys)) != 0) return rc;

    at(w, sizeof(w), where, "path");
    const char *path = json_string_value(json_object_get(v, "path"));
    if (!path)
        return fail(c, w, "required: a path such as \"/api/users/{id}\" or \"/api/users/*\"");
    if (strlen(path) > 1024) return fail(c, w, "longer than 1024 characters");
    r->path = tr_xstrdup(path);
    if ((rc = compile_path(c, w, r)) != 0) return rc;

    if ((f = json_object_get(v, "name"))) {
        at(w, sizeof(w), where, "name");
        const char *s = json_string_value(f);
        if (!s || !*s || strlen(s) > 128 || strpbrk(s, "\"\\\r\n"))
            return fail(c, w, "expected 1-128 characters without quotes or line breaks");
        r->name = tr_xstrdup(s);
    } else {
        r->name = tr_xstrdup(path);
    }
    if ((f = json_object_get(v, "methods"))) {
        at(w, sizeof(w), where, "methods");
        if ((rc = parse_methods(c, w, f, &r->methods)) != 0) return rc;
    }
    at(w, sizeof(w), where, "upstream");
    if ((rc = resolve_upstream(c, w, json_object_get(v, "upstream"), &r->upstream)) != 0) return rc;

    r->auth = TR_AUTH_NONE;
    if ((f = route_field(c, v, "auth", where, w, sizeof(w)))) {
        const char *s = json_string_value(f);
        if (s && strcmp(s, "none") == 0)
            r->auth = TR_AUTH_NONE;
        else if (s && strcmp(s, "optional") == 0)
            r->auth = TR_AUTH_OPTIONAL;
        else if (s && strcmp(s, "required") == 0)
            r->auth = TR_AUTH_REQUIRED;
        else
            return fail(c, w, "expected \"none\", \"optional\" or \"required\"");
    }
    if ((f = route_field(c, v, "roles", where, w, sizeof(w)))) {
        if ((rc = parse_roles(c, w, f, &r->roles)) != 0) return rc;
        if (r->roles && r->auth != TR_AUTH_REQUIRED)
            return fail(c, w, "roles need \"auth\": \"required\"");
    }
    if ((f = route_field(c, v, "api_key", where, w, sizeof(w)))) {
        if ((rc = parse_bool(c, w, f, &r->api_key)) != 0) return rc;
        if (r->api_key && r->auth == TR_AUTH_NONE) {
            /* A default applies only where it can; a route that asks for it
             * explicitly must also ask for authentication. */
            if (json_object_get(v, "api_key"))
                return fail(c, w, "api_key needs \"auth\": \"optional\" or \"required\"");
            r->api_key = false;
        }
    }
    if ((f = route_field(c, v, "rate_limit", where, w, sizeof(w))) && !json_is_null(f)) {
        const char *s = json_string_value(f);
        if (!s) return fail(c, w, "expected the name of a policy under \"rate_limits\", or null");
        r->limit = limit_index(c->t, s);
        if (r->limit < 0) return fail(c, w, "no policy \"%s\" under \"rate_limits\"", s);
    }
    r->timeout_ms = 30000;
    if ((f = route_field(c, v, "timeout", where, w, sizeof(w)))) {
        if ((rc = parse_duration(c, w, f, &r->timeout_ms)) != 0) return rc;
        if (r->timeout_ms == 0) return fail(c, w, "must be more than 0");
    }
    if ((f = route_field(c, v, "try_timeout", where, w, sizeof(w))))
        if ((rc = parse_duration(c, w, f, &r->try_timeout_ms)) != 0) return rc;
    tr_retry_policy_defaults(&r->retry);
    if ((f = route_field(c, v, "retry", where, w, sizeof(w))))
        if ((rc = parse_retry(c, w, f, &r->retry)) != 0) return rc;
    r->max_body = 10u << 20;
    if ((f = route_field(c, v, "max_body", where, w, sizeof(w))))
        if ((rc = parse_size(c, w, f, &r->max_body)) != 0) return rc;
    if ((f = json_object_get(v, "websocket"))) {
        at(w, sizeof(w), where, "websocket");
        if ((rc = parse_bool(c, w, f, &r->websocket)) != 0) return rc;
    }
    if ((f = json_object_get(v, "rewrite")) && !json_is_null(f)) {
        at(w, sizeof(w), where, "rewrite");
        const char *s = json_string_value(f);
        if (!s || strlen(s) > 1024) return fail(c, w, "expected a target such as \"/api/x/{id}\"");
        r->rewrite = tr_xstrdup(s);
        if ((rc = compile_rewrite(c, w, r)) != 0) return rc;
    }
    return 0;
}

static bool same_shape(const gw_route_t *a, const gw_route_t *b)
{
    if (a->prefix != b->prefix || a->nsegments != b->nsegments) return false;
    for (size_t i = 0; i < a->nsegments; i++) {
        const gw_segment_t *x = &a->segments[i], *y = &b->segments[i];
        if (x->is_param != y->is_param) return false;
        if (!x->is_param && (x->len != y->len || memcmp(x->text, y->text, x->len) != 0))
            return false;
    }
    return true;
}

static bool methods_overlap(unsigned a, unsigned b)
{
    return a == 0 || b == 0 || (a & b) != 0;
}

typedef struct sort_item {
    gw_route_t route;
    size_t index;
} sort_item_t;

/* Match order: templates before prefixes; prefixes by length; then the
 * literal-segment rule; then file order. */
static int route_order(const void *pa, const void *pb)
{
    const sort_item_t *a = pa, *b = pb;
    if (a->route.prefix != b->route.prefix) return a->route.prefix ? 1 : -1;
    if (a->route.nsegments != b->route.nsegments)
        return a->route.nsegments > b->route.nsegments ? -1 : 1;
    if (a->route.literal_mask != b->route.literal_mask)
        return a->route.literal_mask > b->route.literal_mask ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static int parse_routes(parse_ctx_t *c, json_t *routes)
{
    size_t n = json_array_size(routes);
    int rc = 0;
    if (!json_is_array(routes)) return fail(c, "routes", "required: an array of routes");
    if (n > MAX_ROUTES) return fail(c, "routes", "more than %d routes", MAX_ROUTES);
    sort_item_t *items = tr_xcalloc(n ? n : 1, sizeof(*items));
    size_t parsed = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].index = i;
        parsed = i + 1;
        if ((rc = parse_route(c, i, json_array_get(routes, i), &items[i].route)) != 0) goto out;
        for (size_t j = 0; j < i; j++) {
            if (same_shape(&items[j].route, &items[i].route) &&
                methods_overlap(items[j].route.methods, items[i].route.methods)) {
                char where[64];
                snprintf(where, sizeof(where), "routes[%zu]", i);
                rc = fail(c, where, "same path and method as routes[%zu] (%s)", j,
                          items[j].route.path);
                goto out;
            }
        }
    }
    qsort(items, n, sizeof(*items), route_order);
    c->t->routes = tr_xcalloc(n ? n : 1, sizeof(gw_route_t));
    for (size_t i = 0; i < n; i++)
        c->t->routes[i] = items[i].route;
    c->t->nroutes = n;
    parsed = 0;
out:
    /* On failure the routes parsed so far are not in the table yet. */
    for (size_t i = 0; i < parsed; i++) {
        gw_route_t *r = &items[i].route;
        free(r->name);
        free(r->path);
        free(r->roles);
        free(r->rewrite);
        free(r->parts);
    }
    free(items);
    return rc;
}

void gw_table_free(gw_table_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->nroutes; i++) {
        gw_route_t *r = &t->routes[i];
        free(r->name);
        free(r->path);
        free(r->roles);
        free(r->rewrite);
        free(r->parts);
    }
    free(t->routes);
    for (size_t i = 0; i < t->nupstreams; i++) {
        gw_upstream_spec_t *u = &t->upstreams[i];
        for (size_t k = 0; k < u->ninstances; k++)
            free(u->instances[k]);
        free(u->instances);
        free(u->name);
        free((char *)u->config.health_path);
    }
    free(t->upstreams);
    for (size_t i = 0; i < t->nlimits; i++)
        free(t->limits[i].name);
    free(t->limits);
    free(t->source);
    free(t);
}

int gw_table_parse(const char *text, size_t len, const char *source, const gw_routes_env_t *env,
                   gw_table_t **out, char *err, size_t errlen)
{
    static const char *const keys[] = {"version",     "description", "defaults", "upstreams",
                                       "rate_limits", "routes",      NULL};
    static const char *const default_keys[] = {"auth",       "roles",    "api_key",
                                               "rate_limit", "timeout",  "try_timeout",
                                               "retry",      "max_body", NULL};
    gw_table_t *t = tr_xcalloc(1, sizeof(*t));
    parse_ctx_t c = {.err = err, .errlen = errlen, .env = env, .t = t};
    json_error_t jerr;
    json_t *doc = NULL, *f;
    const char *key;
    json_t *v;
    int rc = 0;

    t->source = tr_xstrdup(source ? source : "routes");
    *out = NULL;
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        char where[64];
        snprintf(where, sizeof(where), "line %d column %d", jerr.line, jerr.column);
        rc = fail(&c, where, "%s", jerr.text);
        goto out;
    }
    if (!json_is_object(doc)) {
        rc = fail(&c, "top level", "expected an object with \"routes\"");
        goto out;
    }
    if ((rc = check_keys(&c, "top level", doc, keys)) != 0) goto out;
    if ((f = json_object_get(doc, "version")) &&
        (!json_is_integer(f) || json_integer_value(f) != 1)) {
        rc = fail(&c, "version", "only version 1 is understood");
        goto out;
    }
    if ((f = json_object_get(doc, "defaults"))) {
        if (!json_is_object(f)) {
            rc = fail(&c, "defaults", "expected an object");
            goto out;
        }
        if ((rc = check_keys(&c, "defaults", f, default_keys)) != 0) goto out;
        c.defaults = f;
    }
    if ((f = json_object_get(doc, "rate_limits"))) {
        if (!json_is_object(f)) {
            rc = fail(&c, "rate_limits", "expected an object of named policies");
            goto out;
        }
        json_object_foreach(f, key, v)
        {
            if ((rc = parse_limit(&c, key, v)) != 0) goto out;
        }
    }
    if ((f = json_object_get(doc, "upstreams"))) {
        if (!json_is_object(f)) {
            rc = fail(&c, "upstreams", "expected an object of named upstreams");
            goto out;
        }
        json_object_foreach(f, key, v)
        {
            if ((rc = parse_upstream(&c, key, v)) != 0) goto out;
        }
    }
    rc = parse_routes(&c, json_object_get(doc, "routes"));
out:
    upstreams_own_strings(t);
    json_decref(doc);
    if (rc != 0) {
        gw_table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int gw_table_load_file(const char *path, const gw_routes_env_t *env, gw_table_t **out, char *err,
                       size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    *out = NULL;
    if (!f) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return rc == -ENOENT ? -ENOENT : -EIO;
    }
    text = tr_xmalloc(MAX_ROUTES_FILE_BYTES + 1);
    len = fread(text, 1, MAX_ROUTES_FILE_BYTES + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        rc = -EIO;
    } else if (len > MAX_ROUTES_FILE_BYTES) {
        snprintf(err, errlen, "%s: larger than %u bytes", path, MAX_ROUTES_FILE_BYTES);
        rc = -EINVAL;
    } else {
        rc = gw_table_parse(text, len, path, env, out, err, errlen);
    }
    fclose(f);
    free(text);
    return rc;
}

/* ---- matching ------------------------------------------------------------- */

typedef struct path_segs {
    const char *start[GW_MAX_SEGMENTS];
    size_t len[GW_MAX_SEGMENTS];
    size_t n;      /* segments recorded (at most GW_MAX_SEGMENTS) */
    bool overflow; /* the path has more */
} path_segs_t;

static void split_path(const char *path, size_t path_len, path_segs_t *ps)
{
    const char *p = path + 1, *end = path + path_len;
    ps->n = 0;
    ps->overflow = false;
    if (path_len <= 1) return;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        if (ps->n == GW_MAX_SEGMENTS) {
            ps->overflow = true;
            return;
        }
        ps->start[ps->n] = p;
        ps->len[ps->n] = (size_t)(seg_end - p);
        ps->n++;
        if (!slash) return;
        p = slash + 1;
    }
}

static bool route_matches(const gw_route_t *r, const path_segs_t *ps, const char *path,
                          size_t path_len, gw_match_t *out)
{
    if (r->prefix) {
        if (ps->n < r->nsegments) return false;
    } else if (ps->overflow || ps->n != r->nsegments) {
        return false;
    }
    size_t np = 0;
    for (size_t i = 0; i < r->nsegments; i++) {
        const gw_segment_t *s = &r->segments[i];
        if (s->is_param) {
            if (ps->len[i] == 0) return false;
            out->params[np].value = ps->start[i];
            out->params[np].len = ps->len[i];
            np++;
        } else if (ps->len[i] != s->len || memcmp(ps->start[i], s->text, s->len) != 0) {
            return false;
        }
    }
    if (r->prefix) {
        const char *rest =
            r->nsegments == 0 ? path : ps->start[r->nsegments - 1] + ps->len[r->nsegments - 1];
        out->rest = rest;
        out->rest_len = (size_t)(path + path_len - rest);
    } else {
        out->rest = "";
        out->rest_len = 0;
    }
    return true;
}

static bool method_allowed(unsigned methods, unsigned bit)
{
    return methods == 0 || (methods & bit) != 0;
}

gw_match_result_t gw_table_match(const gw_table_t *t, const char *method, const char *path,
                                 size_t path_len, gw_match_t *out)
{
    path_segs_t ps;
    unsigned bit = gw_method_bit(method), allow = 0;
    bool path_known = false;

    out->route = NULL;
    out->allow[0] = '\0';
    if (path_len == 0 || path[0] != '/') return GW_MATCH_NOT_FOUND;
    split_path(path, path_len, &ps);
    for (size_t i = 0; i < t->nroutes; i++) {
        const gw_route_t *r = &t->routes[i];
        if (!route_matches(r, &ps, path, path_len, out)) continue;
        if (method_allowed(r->methods, bit)) {
            out->route = r;
            return GW_MATCH_OK;
        }
        path_known = true;
        allow |= r->methods;
    }
    if (!path_known) return GW_MATCH_NOT_FOUND;
    allow_from_mask(allow, out->allow, sizeof(out->allow));
    return GW_MATCH_METHOD_NOT_ALLOWED;
}

/* ---- targets -------------------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Keeps what RFC 3986 allows unescaped in a path segment (pchar); in a
 * query value only the unreserved characters, so '&', '=', '+' and ';' in a
 * parameter cannot start another query field. */
static bool keep_unescaped(unsigned char ch, bool in_query)
{
    if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') return true;
    if (in_query) return false;
    return strchr("!$&'()*+,;=:@", ch) != NULL && ch != '\0';
}

/* Decodes raw (a path segment as sent) and re-encodes it for its place. */
static int append_param(const char *raw, size_t len, bool in_query, char *out, size_t *pos)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)raw[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hexval(raw[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(raw[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -EINVAL;
            ch = (unsigned char)(hi * 16 + lo);
            if (ch == 0) return -EINVAL;
            i += 2;
        }
        if (keep_unescaped(ch, in_query)) {
            out[(*pos)++] = (char)ch;
        } else {
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[ch >> 4];
            out[(*pos)++] = hex[ch & 15];
        }
    }
    return 0;
}

size_t gw_route_target_max(const gw_route_t *r, size_t path_len, size_t query_len)
{
    size_t n = query_len + 2; /* '?' or '&', and the NUL */
    if (!r->rewrite) return n + path_len;
    for (size_t i = 0; i < r->nparts; i++) {
        const gw_rewrite_part_t *p = &r->parts[i];
        n += p->kind == GW_RW_LITERAL ? p->len : p->kind == GW_RW_REST ? path_len : 3 * path_len;
    }
    return n;
}

int gw_route_target(const gw_route_t *r, const gw_match_t *m, const char *path, size_t path_len,
                    const char *query, char *out, size_t outlen)
{
    size_t qlen = query ? strlen(query) : 0, pos = 0;
    if (outlen < gw_route_target_max(r, path_len, qlen)) return -ENOSPC;
    if (!r->rewrite) {
        memcpy(out, path, path_len);
        pos = path_len;
    } else {
        for (size_t i = 0; i < r->nparts; i++) {
            const gw_rewrite_part_t *p = &r->parts[i];
            if (p->kind == GW_RW_LITERAL) {
                memcpy(out + pos, p->text, p->len);
                pos += p->len;
            } else if (p->kind == GW_RW_REST) {
                memcpy(out + pos, m->rest, m->rest_len);
                pos += m->rest_len;
            } else if (append_param(m->params[p->param].value, m->params[p->param].len, p->in_query,
                                    out, &pos) != 0) {
                return -EINVAL;
            }
        }
    }
    if (qlen) {
        out[pos++] = r->rewrite_has_query ? '&' : '?';
        memcpy(out + pos, query, qlen);
        pos += qlen;
    }
    out[pos] = '\0';
    return (int)pos;
}

/* ---- path checks ---------------------------------------------------------- */

gw_path_kind_t gw_path_classify(const char *path, size_t len)
{
    char seg[256];
    bool first_nonempty = true;
    if (len == 0 || path[0] != '/') return GW_PATH_INVALID;
    const char *p = path + 1, *end = path + len;
    gw_path_kind_t kind = GW_PATH_OK;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        /* Decode the segment; only its first bytes and its dot pieces
         * matter, so a long segment is judged on what fits. */
        size_t n = 0;
        for (const char *q = p; q < seg_end; q++) {
            unsigned char ch = (unsigned char)*q;
            /* Raw controls and spaces are not a request target (RFC 3986);
             * forwarded, they could split the upstream's request line. */
            if (ch <= 0x20 || ch == 0x7f) return GW_PATH_INVALID;
            if (ch == '%') {
                int hi = seg_end - q >= 3 ? hexval(q[1]) : -1;
                int lo = hi >= 0 ? hexval(q[2]) : -1;
                if (hi < 0 || lo < 0) return GW_PATH_INVALID;
                ch = (unsigned char)(hi * 16 + lo);
                if (ch == 0) return GW_PATH_INVALID;
                q += 2;
            }
            if (n < sizeof(seg) - 1) seg[n++] = (char)ch;
        }
        seg[n] = '\0';
        /* A decoded segment may hold '/' or '\' (from %2F, %5C): judge each
         * piece an upstream could split it into. */
        for (char *piece = seg; piece;) {
            char *sep = strpbrk(piece, "/\\");
            size_t plen = sep ? (size_t)(sep - piece) : strlen(piece);
            if ((plen == 1 && piece[0] == '.') || (plen == 2 && piece[0] == '.' && piece[1] == '.'))
                return GW_PATH_INVALID;
            piece = sep ? sep + 1 : NULL;
        }
        if (first_nonempty && n > 0) {
            first_nonempty = false;
            if (strncasecmp(seg, "internal", 8) == 0 &&
                (seg[8] == '\0' || seg[8] == '/' || seg[8] == '\\'))
                kind = GW_PATH_INTERNAL;
        }
        if (!slash) break;
        p = slash + 1;
    }
    return kind;
}

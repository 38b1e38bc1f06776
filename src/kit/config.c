/*
 * config.c - layered configuration and secrets (see config.h).
 *
 * DESIGN NOTES
 *
 * 1. Layers. Every declared option starts at its default, is replaced by
 *    TRELLIS_<NAME> when that variable exists (even empty: an empty value is
 *    a value), then by --name VALUE / --name=VALUE. When several tables
 *    declare the same name, the later declaration's default wins, so a
 *    service can change a common default without redeclaring the rest.
 *
 * 2. Flags always take a value. "--name" followed by nothing or by another
 *    "--flag" is a missing value, not an empty one: "--data --port 9000"
 *    is far more likely a typo than a data directory called "--port".
 *    Error messages name the option but never echo a value, which could be
 *    a secret.
 *
 * 3. Numbers are parsed by hand with explicit overflow checks; durations
 *    and sizes accept no sign, no fraction and no spaces.
 *
 * 4. Secrets. A generated secret is written to a private temporary file,
 *    fsync'ed, then published with link(2), which fails with EEXIST if the
 *    name exists. So the secret file appears complete or not at all: two
 *    processes starting at once cannot see each other's half-written file,
 *    and the loser of the race reads the winner's secret. Secrets are never
 *    logged; paths are.
 */
#include "kit/config.h"
#include "kit/alloc.h"
#include "kit/ids.h"
#include "kit/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SECRET_FILE_BYTES 4096
#define MAX_SECRET_BYTES      1024

const tr_option_t tr_config_common_options[] = {
    {"host", "127.0.0.1", "address to listen on"},
    {"port", NULL, "port to listen on (default: port-base + the service's offset)"},
    {"port-base", "8000", "base port; each service listens at base + its offset"},
    {"data", "./data", "data directory (databases, secrets)"},
    {"workers", NULL, "event-loop worker threads (default: per service)"},
    {"log-level", "info", "debug, info, warn or error"},
    {"db", NULL, "database URL (default: sqlite://<data>/<service>.db)"},
    {"max-connections", "10000", "open client connections before answering 503"},
    {"max-header-bytes", "16k", "request line and headers limit (431 beyond)"},
    {"max-header-fields", "100", "header fields per request (431 beyond)"},
    {"max-body-bytes", "1m", "default request body limit (413 beyond)"},
    {"header-timeout", "10s", "time to receive request headers (408 beyond)"},
    {"idle-timeout", "60s", "keep-alive idle time before closing"},
    {"request-timeout", "60s",
     "time to receive a whole request, head and body (408 beyond; 0: none)"},
    {"drain-timeout", "10s", "time to finish requests on shutdown"},
    {"tls-cert", NULL, "PEM certificate chain file; with --tls-key, serve HTTPS"},
    {"tls-key", NULL, "PEM private key file for --tls-cert"},
    {NULL, NULL, NULL},
};

typedef struct entry {
    char *name;
    char *value; /* NULL = unset */
} entry_t;

struct tr_config {
    entry_t *entries;
    size_t count, cap;
};

static entry_t *find(const tr_config_t *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->count; i++)
        if (strlen(cfg->entries[i].name) == len && memcmp(cfg->entries[i].name, name, len) == 0)
            return &cfg->entries[i];
    return NULL;
}

static entry_t *add(tr_config_t *cfg, const char *name)
{
    if (cfg->count == cfg->cap) {
        cfg->cap = cfg->cap ? cfg->cap * 2 : 32;
        cfg->entries = tr_xrealloc(cfg->entries, cfg->cap * sizeof(entry_t));
    }
    entry_t *e = &cfg->entries[cfg->count++];
    e->name = tr_xstrdup(name);
    e->value = NULL;
    return e;
}

static void set_value(entry_t *e, const char *value)
{
    char *copy = tr_xstrdup(value);
    free(e->value);
    e->value = copy;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *env_name(const char *name)
{
    char *env = tr_xasprintf("TRELLIS_%s", name);
    for (char *p = env + 8; *p; p++)
        *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    return env;
}

static int apply_flags(tr_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            set_err(err, errlen, "unexpected argument \"%.64s\"", arg);
            return -EINVAL;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        entry_t *e = find(cfg, name, len);
        if (!e) {
            set_err(err, errlen, "unknown option --%.*s", (int)(len > 64 ? 64 : len), name);
            return -EINVAL;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            set_err(err, errlen, "option --%s needs a value", e->name);
            return -EINVAL;
        }
        set_value(e, value);
    }
    return 0;
}

int tr_config_load(tr_config_t **out, const tr_option_t *const *option_sets, int argc, char **argv,
                   char *err, size_t errlen)
{
    tr_config_t *cfg = tr_xcalloc(1, sizeof(*cfg));
    int rc = 0;

    *out = NULL;
    if (err && errlen) err[0] = '\0';
    for (size_t s = 0; option_sets && option_sets[s]; s++) {
        for (const tr_option_t *o = option_sets[s]; o->name; o++) {
            entry_t *e = find(cfg, o->name, strlen(o->name));
            if (!e) e = add(cfg, o->name);
            free(e->value);
            e->value = tr_xstrdup(o->default_value);
        }
    }
    for (size_t i = 0; i < cfg->count; i++) {
        char *env = env_name(cfg->entries[i].name);
        const char *value = getenv(env);
        if (value) set_value(&cfg->entries[i], value);
        free(env);
    }
    if ((rc = apply_flags(cfg, argc, argv, err, errlen)) != 0) goto out;
    *out = cfg;
    cfg = NULL;

out:
    tr_config_free(cfg);
    return rc;
}

void tr_config_free(tr_config_t *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->count; i++) {
        free(cfg->entries[i].name);
        free(cfg->entries[i].value);
    }
    free(cfg->entries);
    free(cfg);
}

const char *tr_config_get(const tr_config_t *cfg, const char *name)
{
    entry_t *e = find(cfg, name, strlen(name));
    return e ? e->value : NULL;
}

void tr_config_set(tr_config_t *cfg, const char *name, const char *value)
{
    entry_t *e = find(cfg, name, strlen(name));
    if (!e) e = add(cfg, name);
    set_value(e, value);
}

/* Parses the leading decimal digits of s into *out (non-negative, no sign).
 * *end points past them. Returns -EINVAL on no digits or overflow. */
static int parse_digits(const char *s, int64_t *out, const char **end)
{
    int64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10) return -EINVAL;
        v = v * 10 + d;
    }
    if (p == s) return -EINVAL;
    *out = v;
    *end = p;
    return 0;
}

static int scale(int64_t v, int64_t unit, int64_t *out)
{
    if (v > INT64_MAX / unit) return -EINVAL;
    *out = v * unit;
    return 0;
}

int tr_config_int(const tr_config_t *cfg, const char *name, int64_t *out)
{
    const char *s = tr_config_get(cfg, name);
    const char *end;
    int64_t v;
    if (!s) return -ENOENT;
    bool negative = *s == '-';
    if (*s == '-' || *s == '+') s++;
    if (parse_digits(s, &v, &end) != 0 || *end) {
        /* INT64_MIN's magnitude does not fit in the positive range. */
        if (negative && strcmp(s, "9223372036854775808") == 0) {
            *out = INT64_MIN;
            return 0;
        }
        return -EINVAL;
    }
    *out = negative ? -v : v;
    return 0;
}

int tr_config_duration_ms(const tr_config_t *cfg, const char *name, int64_t *out)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    const char *s = tr_config_get(cfg, name);
    const char *end;
    int64_t v;
    if (!s) return -ENOENT;
    if (parse_digits(s, &v, &end) != 0) return -EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(end, units[i].suffix) == 0) return scale(v, units[i].ms, out);
    return -EINVAL;
}

int tr_config_size(const tr_config_t *cfg, const char *name, int64_t *out)
{
    const char *s = tr_config_get(cfg, name);
    const char *end;
    int64_t v;
    if (!s) return -ENOENT;
    if (parse_digits(s, &v, &end) != 0) return -EINVAL;
    if (*end == '\0') return scale(v, 1, out);
    if (end[1] != '\0') return -EINVAL;
    switch (*end) {
    case 'k':
    case 'K':
        return scale(v, INT64_C(1) << 10, out);
    case 'm':
    case 'M':
        return scale(v, INT64_C(1) << 20, out);
    case 'g':
    case 'G':
        return scale(v, INT64_C(1) << 30, out);
    default:
        return -EINVAL;
    }
}

/* The declaration of name that counts (the last one), or NULL when one
 * before (set, index) exists, so each option prints once, at its first place. */
static const tr_option_t *help_entry(const tr_option_t *const *sets, size_t set,
                                     const tr_option_t *o)
{
    const tr_option_t *last = o;
    for (size_t s = 0; sets[s]; s++) {
        for (const tr_option_t *p = sets[s]; p->name; p++) {
            if (strcmp(p->name, o->name) != 0) continue;
            if (s < set || (s == set && p < o)) return NULL;
            last = p;
        }
    }
    return last;
}

void tr_config_print_help(const tr_option_t *const *option_sets)
{
    size_t width = 0;
    for (size_t s = 0; option_sets && option_sets[s]; s++)
        for (const tr_option_t *o = option_sets[s]; o->name; o++)
            if (strlen(o->name) > width) width = strlen(o->name);
    for (size_t s = 0; option_sets && option_sets[s]; s++) {
        for (const tr_option_t *o = option_sets[s]; o->name; o++) {
            const tr_option_t *shown = help_entry(option_sets, s, o);
            if (!shown) continue;
            printf("  --%-*s VALUE   %s", (int)width, shown->name, shown->help ? shown->help : "");
            if (shown->default_value) printf(" (default: %s)", shown->default_value);
            putchar('\n');
        }
    }
}

/* ---- secrets ------------------------------------------------------------ */

static bool valid_secret_name(const char *name)
{
    return name && *name && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && !strchr(name, '/');
}

static int ensure_dir(const char *path)
{
    struct stat st;
    if (mkdir(path, 0700) == 0) return 0;
    if (errno != EEXIST) return -errno;
    if (stat(path, &st) != 0) return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Reads an existing secret file. Returns -ENOENT when there is none. */
static int read_secret(const char *path, char **out)
{
    char buf[MAX_SECRET_FILE_BYTES + 1];
    size_t len = 0;
    struct stat st;
    int rc = 0;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        if (rc != -ENOENT) tr_log_error("cannot read secret %s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        tr_log_warn("secret file %s is accessible to group or others (chmod 600 it)", path);
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    if (len > MAX_SECRET_FILE_BYTES) {
        tr_log_error("secret file %s is larger than %d bytes", path, MAX_SECRET_FILE_BYTES);
        rc = -EFBIG;
        goto out;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len == 0 || memchr(buf, '\0', len)) {
        tr_log_error("secret file %s is empty or not text", path);
        rc = -EINVAL;
        goto out;
    }
    *out = tr_xstrndup(buf, len);

out:
    sodium_memzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Generates and publishes a new secret at path. Returns -EEXIST when another
 * process published one first. */
static int create_secret(const char *dir, const char *path, const char *name, size_t nbytes,
                         char **out)
{
    unsigned char raw[MAX_SECRET_BYTES];
    char hex[2 * MAX_SECRET_BYTES + 2];
    unsigned char tag[8];
    char tag_hex[2 * sizeof(tag) + 1];
    int rc = 0;

    tr_random_bytes(tag, sizeof(tag));
    tr_hex_encode(tag, sizeof(tag), tag_hex);
    char *tmp = tr_xasprintf("%s/.%s.%s.tmp", dir, name, tag_hex);

    tr_random_bytes(raw, nbytes);
    tr_hex_encode(raw, nbytes, hex);
    size_t len = 2 * nbytes;
    hex[len] = '\n';

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = write_all(fd, hex, len + 1);
    if (rc == 0 && fsync(fd) != 0) rc = -errno;
    close(fd);
    if (rc == 0 && link(tmp, path) != 0) rc = -errno;
    unlink(tmp);
    if (rc != 0) goto out;

    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: makes the new name durable */
        close(dfd);
    }
    *out = tr_xstrndup(hex, len);
    tr_log_info("generated secret %s", path);

out:
    sodium_memzero(raw, sizeof(raw));
    sodium_memzero(hex, sizeof(hex));
    free(tmp);
    return rc;
}

int tr_config_secret(const tr_config_t *cfg, const char *option, const char *data_dir,
                     const char *name, size_t nbytes, char **out)
{
    char *dir = NULL, *path = NULL;
    int rc;

    *out = NULL;
    if (option) {
        const char *value = tr_config_get(cfg, option);
        if (value && *value) {
            *out = tr_xstrdup(value);
            return 0;
        }
    }
    if (!data_dir || !*data_dir || !valid_secret_name(name) || nbytes == 0 ||
        nbytes > MAX_SECRET_BYTES)
        return -EINVAL;
    dir = tr_xasprintf("%s/secrets", data_dir);
    path = tr_xasprintf("%s/%s", dir, name);

    if ((rc = read_secret(path, out)) != -ENOENT) goto out;
    if ((rc = ensure_dir(data_dir)) != 0 || (rc = ensure_dir(dir)) != 0) {
        tr_log_error("cannot create %s: %s", dir, strerror(-rc));
        goto out;
    }
    rc = create_secret(dir, path, name, nbytes, out);
    if (rc == -EEXIST) rc = read_secret(path, out);
    if (rc != 0) tr_log_error("cannot create secret %s: %s", path, strerror(-rc));

out:
    free(dir);
    free(path);
    return rc;
}

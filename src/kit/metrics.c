/*
 * metrics.c - the process-wide metrics registry and its Prometheus text
 * exposition (format 0.0.4).
 *
 * DESIGN NOTES
 *
 * 1. A family (counter, gauge or histogram) is registered once and lives until
 *    exit. The registry is a fixed array published through an atomic count,
 *    so tr_metrics_render() reads it without a lock.
 *
 * 2. A labelled family keeps its series in a small chained hash table keyed by
 *    the label values. Lookups walk the chains without a lock: a series is
 *    fully built before it is published with a release store of the chain
 *    head, and is never changed or freed afterwards (only its atomic values
 *    move). A miss takes the registry mutex, looks again, and inserts. Every
 *    series is also appended to a per-family list in creation order, which is
 *    the order of the output.
 *
 * 3. Cardinality is bounded: label values are cut to LABEL_VALUE_MAX bytes and
 *    a family holds at most MAX_SERIES series; further label combinations are
 *    counted in one series whose every label is "other", so a client that can
 *    influence a label value cannot make us allocate without bound.
 *
 * 4. A histogram series stores one non-cumulative count per bucket and the
 *    sum in integer nanoseconds (exact, and updatable with fetch_add). The
 *    cumulative _bucket values and _count are computed from the same snapshot
 *    of the buckets at render time, so le="+Inf" always equals _count even
 *    while requests are being recorded.
 *
 * 5. Registering a malformed name (not [a-zA-Z_:][a-zA-Z0-9_:]*, a counter
 *    without _total, a gauge with it, the same name with another type, too
 *    many families or labels) is a programming error found at start-up: it
 *    aborts with a message rather than emitting output promtool rejects.
 */
#include "kit/metrics.h"
#include "kit/alloc.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_FAMILIES    128
#define MAX_LABELS      8
#define HASH_BUCKETS    64
#define MAX_SERIES      2000
#define LABEL_VALUE_MAX 128

typedef enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* Upper bounds of http_request_duration_seconds; the last slot is +Inf. */
static const double latency_bounds[] = {.0005, .001, .0025, .005, .01, .025, .05,
                                        .1,    .25,  .5,    1,    2.5, 5,    10};
static const char *const latency_le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                         "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                         "1",      "2.5",   "5",      "10",    "+Inf"};
#define LATENCY_SLOTS (sizeof latency_le / sizeof latency_le[0])

typedef struct series {
    struct series *hash_next;           /* immutable once published */
    _Atomic(struct series *) list_next; /* creation order, appended under the mutex */
    const char *values[MAX_LABELS];
    size_t value_lens[MAX_LABELS];
    _Atomic uint64_t v[]; /* counter: v[0]; histogram: slot counts, then sum in ns */
} series_t;

typedef struct family {
    kind_t kind;
    char *name;
    char *help;
    size_t n_labels;
    char *label_names[MAX_LABELS];
    size_t n_values; /* atomic values per series */
    _Atomic(series_t *) heads[HASH_BUCKETS];
    _Atomic(series_t *) first;
    series_t *last;  /* under the mutex */
    size_t n_series; /* under the mutex */
    _Atomic int64_t gauge;
} family_t;

/* The public handles are families; a family is their first member. */
struct tr_counter {
    family_t f;
};
struct tr_gauge {
    family_t f;
};

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static family_t *families[MAX_FAMILIES];
static atomic_size_t n_families;

static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static family_t *http_requests;
static family_t *http_duration;
static tr_gauge_t *http_in_flight;
static tr_gauge_t *http_connections;

static void die(const char *what, const char *name)
{
    fprintf(stderr, "trellis: metrics: %s: %s\n", what, name ? name : "(null)");
    abort();
}

static bool valid_name(const char *s, bool colon_ok, size_t len)
{
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static family_t *find_family(const char *name)
{
    size_t n = atomic_load(&n_families);
    for (size_t i = 0; i < n; i++)
        if (strcmp(families[i]->name, name) == 0) return families[i];
    return NULL;
}

/* Length of v cut to LABEL_VALUE_MAX bytes without splitting a UTF-8 char. */
static size_t label_len(const char *v)
{
    size_t n = strnlen(v, LABEL_VALUE_MAX + 1);
    if (n <= LABEL_VALUE_MAX) return n;
    n = LABEL_VALUE_MAX;
    while (n > 0 && (v[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static uint64_t hash_values(const char *const *values, const size_t *lens, size_t n)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < lens[i]; j++)
            h = (h ^ (unsigned char)values[i][j]) * 1099511628211u;
        h = (h ^ 0xff) * 1099511628211u; /* 0xff never occurs in UTF-8 */
    }
    return h;
}

static series_t *chain_find(series_t *s, size_t n, const char *const *values, const size_t *lens)
{
    for (; s; s = s->hash_next) {
        size_t i = 0;
        while (i < n && s->value_lens[i] == lens[i] &&
               memcmp(s->values[i], values[i], lens[i]) == 0)
            i++;
        if (i == n) return s;
    }
    return NULL;
}

/* Creates and publishes a series. Called with the mutex held, after a miss. */
static series_t *series_insert(family_t *f, size_t bucket, const char *const *values,
                               const size_t *lens)
{
    series_t *s = tr_xcalloc(1, sizeof *s + f->n_values * sizeof s->v[0]);
    for (size_t i = 0; i < f->n_labels; i++) {
        s->values[i] = tr_xstrndup(values[i], lens[i]);
        s->value_lens[i] = lens[i];
    }
    for (size_t i = 0; i < f->n_values; i++)
        atomic_init(&s->v[i], 0);
    atomic_init(&s->list_next, NULL);
    s->hash_next = atomic_load_explicit(&f->heads[bucket], memory_order_relaxed);
    atomic_store_explicit(&f->heads[bucket], s, memory_order_release);
    if (f->last)
        atomic_store_explicit(&f->last->list_next, s, memory_order_release);
    else
        atomic_store_explicit(&f->first, s, memory_order_release);
    f->last = s;
    f->n_series++;
    return s;
}

static series_t *series_get(family_t *f, const char *const *label_values)
{
    const char *values[MAX_LABELS];
    size_t lens[MAX_LABELS];
    size_t n = f->n_labels;
    for (size_t i = 0; i < n; i++) {
        values[i] = label_values && label_values[i] ? label_values[i] : "";
        lens[i] = label_len(values[i]);
    }
    size_t bucket = hash_values(values, lens, n) % HASH_BUCKETS;
    series_t *s = atomic_load_explicit(&f->heads[bucket], memory_order_acquire);
    if ((s = chain_find(s, n, values, lens)) != NULL) return s;

    pthread_mutex_lock(&registry_mutex);
    s = chain_find(atomic_load_explicit(&f->heads[bucket], memory_order_relaxed), n, values, lens);
    if (!s && f->n_series >= MAX_SERIES) {
        for (size_t i = 0; i < n; i++) {
            values[i] = "other";
            lens[i] = 5;
        }
        bucket = hash_values(values, lens, n) % HASH_BUCKETS;
        s = chain_find(atomic_load_explicit(&f->heads[bucket], memory_order_relaxed), n, values,
                       lens);
    }
    if (!s) s = series_insert(f, bucket, values, lens);
    pthread_mutex_unlock(&registry_mutex);
    return s;
}

/* Registers (or finds) a family. Takes the mutex itself. */
static family_t *family_register(kind_t kind, const char *name, const char *help,
                                 const char *label_names)
{
    if (!name || !valid_name(name, true, strlen(name))) die("invalid metric name", name);
    if (kind == KIND_COUNTER && !ends_with(name, "_total")) die("counter must end in _total", name);
    if (kind != KIND_COUNTER && ends_with(name, "_total")) die("only counters end in _total", name);

    pthread_mutex_lock(&registry_mutex);
    family_t *f = find_family(name);
    if (f) {
        if (f->kind != kind) die("registered twice with different types", name);
        goto out;
    }
    if (atomic_load(&n_families) >= MAX_FAMILIES) die("too many metric families", name);

    f = kind == KIND_GAUGE ? &((tr_gauge_t *)tr_xcalloc(1, sizeof(tr_gauge_t)))->f
                           : &((tr_counter_t *)tr_xcalloc(1, sizeof(tr_counter_t)))->f;
    f->kind = kind;
    f->name = tr_xstrdup(name);
    f->help = tr_xstrdup(help ? help : "");
    f->n_values = kind == KIND_HISTOGRAM ? LATENCY_SLOTS + 1 : 1;
    for (const char *p = label_names; p && *p;) {
        size_t len = strcspn(p, ",");
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (f->n_labels == MAX_LABELS) die("too many labels", name);
        if (!valid_name(p, false, len) || (len >= 2 && p[0] == '_' && p[1] == '_') ||
            (kind == KIND_HISTOGRAM && len == 2 && memcmp(p, "le", 2) == 0))
            die("invalid label name", label_names);
        f->label_names[f->n_labels++] = tr_xstrndup(p, len);
        p += strcspn(p, ",");
        if (*p == ',') p++;
    }
    /* An unlabelled counter shows 0 from the start rather than appearing later. */
    if (kind != KIND_GAUGE && f->n_labels == 0)
        series_insert(f, hash_values(NULL, NULL, 0) % HASH_BUCKETS, NULL, NULL);
    families[atomic_load(&n_families)] = f;
    atomic_fetch_add(&n_families, 1);
out:
    pthread_mutex_unlock(&registry_mutex);
    return f;
}

static void register_builtins(void)
{
    http_requests = family_register(KIND_COUNTER, "http_requests_total",
                                    "HTTP requests answered, by route template, method and status.",
                                    "route,method,status");
    http_duration =
        family_register(KIND_HISTOGRAM, "http_request_duration_seconds",
                        "Time from a complete request to its answer, in seconds.", "route,method");
    http_in_flight = (tr_gauge_t *)family_register(KIND_GAUGE, "http_requests_in_flight",
                                                   "HTTP requests being handled now.", NULL);
    http_connections = (tr_gauge_t *)family_register(
        KIND_GAUGE, "http_connections_active",
        "Client connections open now (those refused with 503 excluded).", NULL);
}

static void ensure_builtins(void)
{
    pthread_once(&builtin_once, register_builtins);
}

tr_counter_t *tr_counter_register(const char *name, const char *help, const char *label_names)
{
    ensure_builtins();
    return (tr_counter_t *)family_register(KIND_COUNTER, name, help, label_names);
}

void tr_counter_add(tr_counter_t *c, uint64_t n, const char *const *label_values)
{
    series_t *s = series_get(&c->f, label_values);
    atomic_fetch_add_explicit(&s->v[0], n, memory_order_relaxed);
}

tr_gauge_t *tr_gauge_register(const char *name, const char *help)
{
    ensure_builtins();
    return (tr_gauge_t *)family_register(KIND_GAUGE, name, help, NULL);
}

void tr_gauge_add(tr_gauge_t *g, int64_t delta)
{
    atomic_fetch_add_explicit(&g->f.gauge, delta, memory_order_relaxed);
}

void tr_gauge_set(tr_gauge_t *g, int64_t value)
{
    atomic_store_explicit(&g->f.gauge, value, memory_order_relaxed);
}

void tr_metrics_observe_request(const char *route, const char *method, int status, double seconds)
{
    ensure_builtins();
    char status_text[12];
    snprintf(status_text, sizeof status_text, "%d", status);
    const char *const request_labels[] = {route, method, status_text};
    series_t *s = series_get(http_requests, request_labels);
    atomic_fetch_add_explicit(&s->v[0], 1, memory_order_relaxed);

    if (!(seconds >= 0)) seconds = 0; /* also catches NaN */
    if (seconds > 1e6) seconds = 1e6;
    size_t slot = 0;
    while (slot < LATENCY_SLOTS - 1 && seconds > latency_bounds[slot])
        slot++;
    const char *const duration_labels[] = {route, method};
    s = series_get(http_duration, duration_labels);
    atomic_fetch_add_explicit(&s->v[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->v[LATENCY_SLOTS], (uint64_t)(seconds * 1e9 + 0.5),
                              memory_order_relaxed);
}

void tr_metrics_in_flight(int delta)
{
    ensure_builtins();
    tr_gauge_add(http_in_flight, delta);
}

void tr_metrics_connections(int delta)
{
    ensure_builtins();
    tr_gauge_add(http_connections, delta);
}

/* ---- rendering ---------------------------------------------------------- */

/* Appends s escaped for a label value (quote true) or HELP text (false). */
static int put_escaped(tr_buf_t *out, const char *s, size_t n, bool quote)
{
    int rc = 0;
    size_t start = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *esc = s[i] == '\\'             ? "\\\\"
                          : s[i] == '\n'           ? "\\n"
                          : (quote && s[i] == '"') ? "\\\""
                                                   : NULL;
        if (!esc) continue;
        if ((rc = tr_buf_append(out, s + start, i - start)) == 0) rc = tr_buf_append_str(out, esc);
        start = i + 1;
    }
    if (rc == 0) rc = tr_buf_append(out, s + start, n - start);
    return rc;
}

static int put_header(tr_buf_t *out, const char *name, const char *help, const char *type)
{
    int rc;
    if ((rc = tr_buf_printf(out, "# HELP %s ", name)) != 0) return rc;
    if ((rc = put_escaped(out, help, strlen(help), false)) != 0) return rc;
    return tr_buf_printf(out, "\n# TYPE %s %s\n", name, type);
}

/* Appends {a="x",b="y"[,le="..."]} or nothing for an unlabelled series. */
static int put_labels(tr_buf_t *out, const family_t *f, const series_t *s, const char *le)
{
    int rc = 0;
    if (f->n_labels == 0 && !le) return 0;
    if ((rc = tr_buf_append(out, "{", 1)) != 0) return rc;
    for (size_t i = 0; i < f->n_labels; i++) {
        if ((rc = tr_buf_printf(out, "%s%s=\"", i ? "," : "", f->label_names[i])) != 0) return rc;
        if ((rc = put_escaped(out, s->values[i], s->value_lens[i], true)) != 0) return rc;
        if ((rc = tr_buf_append(out, "\"", 1)) != 0) return rc;
    }
    if (le && (rc = tr_buf_printf(out, "%sle=\"%s\"", f->n_labels ? "," : "", le)) != 0) return rc;
    return tr_buf_append(out, "}", 1);
}

static int render_histogram(tr_buf_t *out, const family_t *f, const series_t *s)
{
    int rc;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < LATENCY_SLOTS; i++) {
        cumulative += atomic_load_explicit(&s->v[i], memory_order_relaxed);
        if ((rc = tr_buf_printf(out, "%s_bucket", f->name)) != 0) return rc;
        if ((rc = put_labels(out, f, s, latency_le[i])) != 0) return rc;
        if ((rc = tr_buf_printf(out, " %" PRIu64 "\n", cumulative)) != 0) return rc;
    }
    uint64_t sum_ns = atomic_load_explicit(&s->v[LATENCY_SLOTS], memory_order_relaxed);
    if ((rc = tr_buf_printf(out, "%s_sum", f->name)) != 0) return rc;
    if ((rc = put_labels(out, f, s, NULL)) != 0) return rc;
    if ((rc = tr_buf_printf(out, " %" PRIu64 ".%09" PRIu64 "\n", sum_ns / 1000000000u,
                            sum_ns % 1000000000u)) != 0)
        return rc;
    if ((rc = tr_buf_printf(out, "%s_count", f->name)) != 0) return rc;
    if ((rc = put_labels(out, f, s, NULL)) != 0) return rc;
    return tr_buf_printf(out, " %" PRIu64 "\n", cumulative);
}

static int render_family(tr_buf_t *out, const family_t *f)
{
    int rc;
    if ((rc = put_header(out, f->name, f->help, kind_names[f->kind])) != 0) return rc;
    if (f->kind == KIND_GAUGE)
        return tr_buf_printf(out, "%s %" PRId64 "\n", f->name,
                             atomic_load_explicit(&f->gauge, memory_order_relaxed));
    for (series_t *s = atomic_load_explicit(&f->first, memory_order_acquire); s;
         s = atomic_load_explicit(&s->list_next, memory_order_acquire)) {
        if (f->kind == KIND_HISTOGRAM) {
            rc = render_histogram(out, f, s);
        } else if ((rc = tr_buf_append_str(out, f->name)) == 0 &&
                   (rc = put_labels(out, f, s, NULL)) == 0) {
            rc = tr_buf_printf(out, " %" PRIu64 "\n",
                               atomic_load_explicit(&s->v[0], memory_order_relaxed));
        }
        if (rc) return rc;
    }
    return 0;
}

/* ---- process metrics ---------------------------------------------------- */

typedef struct proc_stat {
    double cpu_seconds;
    double start_time;
    uint64_t virtual_bytes;
    uint64_t resident_bytes;
} proc_stat_t;

static ssize_t read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    ssize_t n;
    while (len < size - 1 && (n = read(fd, buf + len, size - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Fields of /proc/self/stat after the ")" that closes comm (proc(5)). */
static int read_proc_stat(proc_stat_t *ps)
{
    char buf[1024];
    if (read_small_file("/proc/self/stat", buf, sizeof buf) <= 0) return -1;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long utime, stime, starttime, vsize;
    long long rss;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime priority nice threads itrealvalue starttime
     * vsize rss */
    if (sscanf(p + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
               "%*d %llu %llu %lld",
               &utime, &stime, &starttime, &vsize, &rss) != 5)
        return -1;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (ticks <= 0 || page <= 0) return -1;

    unsigned long long btime = 0;
    char stat[8192];
    if (read_small_file("/proc/stat", stat, sizeof stat) > 0) {
        const char *b = strstr(stat, "\nbtime ");
        if (b) btime = strtoull(b + 7, NULL, 10);
    }
    ps->cpu_seconds = (double)(utime + stime) / (double)ticks;
    ps->start_time = (double)btime + (double)starttime / (double)ticks;
    ps->virtual_bytes = vsize;
    ps->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;
    return btime ? 0 : -1;
}

static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    int own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == own) continue;
        n++;
    }
    closedir(d);
    return n;
}

static int render_process(tr_buf_t *out)
{
    int rc = 0;
    proc_stat_t ps;
    if (read_proc_stat(&ps) == 0) {
        if ((rc = put_header(out, "process_cpu_seconds_total",
                             "Total user and system CPU time spent in seconds.", "counter")) ||
            (rc = tr_buf_printf(out, "process_cpu_seconds_total %.2f\n", ps.cpu_seconds)) ||
            (rc = put_header(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
                             "gauge")) ||
            (rc = tr_buf_printf(out, "process_resident_memory_bytes %" PRIu64 "\n",
                                ps.resident_bytes)) ||
            (rc = put_header(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                             "gauge")) ||
            (rc = tr_buf_printf(out, "process_virtual_memory_bytes %" PRIu64 "\n",
                                ps.virtual_bytes)) ||
            (rc = put_header(out, "process_start_time_seconds",
                             "Start time of the process since unix epoch in seconds.", "gauge")) ||
            (rc = tr_buf_printf(out, "process_start_time_seconds %.2f\n", ps.start_time)))
            return rc;
    }
    long fds = count_open_fds();
    if (fds >= 0 &&
        ((rc = put_header(out, "process_open_fds", "Number of open file descriptors.", "gauge")) ||
         (rc = tr_buf_printf(out, "process_open_fds %ld\n", fds))))
        return rc;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
        ((rc = put_header(out, "process_max_fds", "Maximum number of open file descriptors.",
                          "gauge")) ||
         (rc = tr_buf_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur))))
        return rc;
    return 0;
}

int tr_metrics_render(tr_buf_t *out)
{
    ensure_builtins();
    size_t start = out->len;
    int rc = 0;
    size_t n = atomic_load(&n_families);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = render_family(out, families[i]);
    if (rc == 0) rc = render_process(out);
    if (rc != 0) {
        /* Leave out as it was rather than with half a family in it. */
        out->len = start;
        if (out->data) out->data[start] = '\0';
    }
    return rc;
}

/*
 * up.c - `trellis up`: the single-machine deployment.
 *
 * One supervisor process starts every enabled service as its own child
 * (`trellis serve <name>` re-executed from /proc/self/exe), echoes each
 * child's output prefixed with its name, waits until each answers 200 on
 * /readyz, prints where everything listens, restarts a child that dies with
 * exponential backoff, and on SIGINT/SIGTERM stops the children gracefully,
 * escalating to SIGKILL after --stop-timeout.
 *
 * LIFETIMES. A child_t lives as long as the supervisor. Each start of a child
 * gets a fresh run_t holding the process and its two output pipes; a run is
 * freed when all three handles have closed, so a restart never reuses a
 * handle libuv may still own. Children are bound to the supervisor with
 * PR_SET_PDEATHSIG (see main.c), so none survives even a SIGKILLed
 * supervisor.
 *
 * BLUEPRINTS. `--blueprint NAME` gives the gateway (and only the gateway)
 * `--routes <absolute path of deploy/blueprints/NAME.json>`, resolved once
 * against the supervisor's working directory so a restarted gateway reads
 * the same file; NAME may also be a path to a routes file.
 *
 * PORTS come from the service registry (services/registry.h): a child
 * listens on --port-base + its offset, and its admin listener (/metrics,
 * kit/admin.h; loopback) on --admin-port-base + its offset, by default
 * port-base + 1000 (gateway 9000, auth 9001). The ready table shows both.
 *
 * DATABASES. `--database-url postgres://user@host[:port]/[?options]` puts
 * every service that has a database on that PostgreSQL server, each in a
 * database of its own, trellis_<service> (created by the store engine when
 * missing). The child gets it as TRELLIS_DB (the environment form of --db)
 * rather than as a flag, so a password in the URL never shows in `ps`.
 * Without it each service keeps its SQLite file in --data.
 *
 * READINESS. A child is ready when a GET /readyz on its port answers 200.
 * Probes run every PROBE_INTERVAL_MS until then; a probe is one short-lived
 * TCP connection, given up after PROBE_TIMEOUT_MS: something else may hold
 * the port (the child then cannot listen) and accept without ever answering,
 * and a probe waiting on it for ever would keep the loop, and so the
 * supervisor, alive past SIGTERM.
 */
#include "cli/cli.h"
#include "services/registry.h"
#include "kit/alloc.h"
#include "kit/buf.h"
#include "kit/store.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define PROBE_INTERVAL_MS       100
#define PROBE_TIMEOUT_MS        2000
#define BACKOFF_MIN_MS          250
#define BACKOFF_MAX_MS          30000
#define HEALTHY_RUN_MS          30000 /* a run this long resets the backoff */
#define MAX_LINE_BYTES          65536 /* longer child output lines are split */
#define DEFAULT_STOP_TIMEOUT_MS 15000

extern char **environ;

typedef struct supervisor supervisor_t;
typedef struct child child_t;

typedef struct line_reader {
    uv_pipe_t pipe;
    tr_buf_t line;
    char chunk[16384];
} line_reader_t;

typedef struct run {
    child_t *child;
    uv_process_t proc;
    line_reader_t out, err;
    int open_handles;
    bool exited;
} run_t;

struct child {
    supervisor_t *sup;
    const tr_service_def_t *def;
    int port;
    int admin_port;
    run_t *run; /* current run, NULL while stopped */
    int pid;
    bool ready;
    bool probing;
    uint64_t started_ms; /* loop time of the current run's start */
    uint64_t backoff_ms;
    uv_timer_t restart_timer;
    uv_timer_t probe_timer;
    char *db_env; /* "TRELLIS_DB=<url>" under --database-url, else NULL */
};

struct supervisor {
    uv_loop_t *loop;
    child_t *children;
    size_t nchildren;
    char exe[PATH_MAX];
    char data_dir[PATH_MAX];
    char routes[PATH_MAX]; /* --blueprint's routes file, "" when none */
    const char *host;
    const char *database_url; /* --database-url, NULL when not given */
    int port_base;
    int admin_port_base; /* 0: port_base + 1000 */
    uint64_t stop_timeout_ms;
    bool announced; /* the ready table has been printed */
    bool stopping;
    uv_signal_t sigterm, sigint;
    uv_timer_t kill_timer;
    char supervisor_pid_env[64];
    /* TRELLIS_AUTH_URL for every child: where the kit's authenticator finds
     * auth (revocation feed, API keys), from the port base. Empty when the
     * caller set it. */
    char auth_url_env[320];
};

static void start_child(child_t *c);

/* ---- output ------------------------------------------------------------- */

static size_t name_width(const supervisor_t *sup)
{
    size_t w = 0;
    for (size_t i = 0; i < sup->nchildren; i++) {
        size_t n = strlen(sup->children[i].def->name);
        if (n > w) w = n;
    }
    return w;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("trellis up: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

static void echo_line(const child_t *c, const char *line, size_t len)
{
    int w = (int)name_width(c->sup);
    printf("%-*s | %.*s\n", w, c->def->name, (int)len, line);
    fflush(stdout);
}

static const char *probe_host(const supervisor_t *sup)
{
    if (strcmp(sup->host, "0.0.0.0") == 0) return "127.0.0.1";
    if (strcmp(sup->host, "::") == 0) return "::1";
    return sup->host;
}

static void print_table(const supervisor_t *sup)
{
    int w = (int)name_width(sup);
    if (w < 7) w = 7;
    printf("%-*s  %-5s  %-5s  %-7s  %s\n", w, "SERVICE", "PORT", "ADMIN", "PID", "URL");
    for (size_t i = 0; i < sup->nchildren; i++) {
        const child_t *c = &sup->children[i];
        const char *host = probe_host(sup);
        int v6 = strchr(host, ':') != NULL;
        printf("%-*s  %-5d  %-5d  %-7d  http://%s%s%s:%d\n", w, c->def->name, c->port,
               c->admin_port, c->pid, v6 ? "[" : "", host, v6 ? "]" : "", c->port);
    }
    fflush(stdout);
}

/* ---- child output pipes ------------------------------------------------- */

static void run_handle_closed(uv_handle_t *h)
{
    run_t *run = h->data;
    if (--run->open_handles == 0) {
        tr_buf_free(&run->out.line);
        tr_buf_free(&run->err.line);
        free(run);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    line_reader_t *r = (line_reader_t *)h; /* pipe is the first member */
    buf->base = r->chunk;
    buf->len = sizeof(r->chunk);
}

static void flush_lines(child_t *c, line_reader_t *r, bool eof)
{
    char *start = r->line.data;
    size_t left = r->line.len;
    char *nl;
    while (left && (nl = memchr(start, '\n', left)) != NULL) {
        echo_line(c, start, (size_t)(nl - start));
        left -= (size_t)(nl - start) + 1;
        start = nl + 1;
    }
    if (left && (eof || left >= MAX_LINE_BYTES)) {
        echo_line(c, start, left);
        left = 0;
    }
    tr_buf_consume(&r->line, r->line.len - left);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    line_reader_t *r = (line_reader_t *)s;
    run_t *run = s->data;
    if (nread > 0) {
        /* The line buffer's maximum is above MAX_LINE_BYTES + one chunk, and
         * flush_lines keeps it below MAX_LINE_BYTES, so this cannot fail. */
        tr_buf_append(&r->line, buf->base, (size_t)nread);
        flush_lines(run->child, r, false);
    } else if (nread < 0) {
        flush_lines(run->child, r, true);
        uv_close((uv_handle_t *)s, run_handle_closed);
    }
}

/* ---- readiness probe ---------------------------------------------------- */

typedef struct probe {
    uv_tcp_t tcp;
    uv_timer_t timeout;
    uv_connect_t connect;
    uv_write_t write;
    child_t *child;
    char answer[16];
    size_t len;
    int open_handles; /* the probe is freed when both have closed */
    bool ok;
    bool finished;
} probe_t;

static void probe_closed(uv_handle_t *h)
{
    probe_t *p = h->data;
    child_t *c = p->child;
    if (--p->open_handles > 0) return;
    c->probing = false;
    if (p->ok && c->run && !c->run->exited && !c->ready && !c->sup->stopping) {
        c->ready = true;
        uv_timer_stop(&c->probe_timer);
        if (c->sup->announced) {
            say("%s ready again (pid %d)", c->def->name, c->pid);
        } else {
            bool all = true;
            for (size_t i = 0; i < c->sup->nchildren; i++)
                all = all && c->sup->children[i].ready;
            if (all) {
                c->sup->announced = true;
                print_table(c->sup);
                say("ready");
            }
        }
    }
    free(p);
}

/* Ends the probe (once): closes the connection and the timeout. */
static void probe_finish(probe_t *p)
{
    if (p->finished) return;
    p->finished = true;
    uv_close((uv_handle_t *)&p->tcp, probe_closed);
    uv_close((uv_handle_t *)&p->timeout, probe_closed);
}

static void probe_timed_out(uv_timer_t *t)
{
    probe_finish(t->data);
}

static void probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    probe_t *p = h->data;
    buf->base = p->answer + p->len;
    buf->len = sizeof(p->answer) - p->len;
}

static void probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    probe_t *p = s->data;
    if (nread > 0) p->len += (size_t)nread;
    if (nread < 0 || p->len == sizeof(p->answer)) {
        p->ok = p->len >= 12 && (memcmp(p->answer, "HTTP/1.1 200", 12) == 0 ||
                                 memcmp(p->answer, "HTTP/1.0 200", 12) == 0);
        probe_finish(p);
    }
}

static void probe_written(uv_write_t *w, int status)
{
    probe_t *p = w->data;
    if (status < 0 || uv_read_start((uv_stream_t *)&p->tcp, probe_alloc, probe_read) != 0)
        probe_finish(p);
}

static void probe_connected(uv_connect_t *req, int status)
{
    static char request[] = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    probe_t *p = req->data;
    uv_buf_t b = uv_buf_init(request, sizeof(request) - 1);
    p->write.data = p;
    if (status < 0 || uv_write(&p->write, (uv_stream_t *)&p->tcp, &b, 1, probe_written) != 0)
        probe_finish(p);
}

static void on_probe_timer(uv_timer_t *t)
{
    child_t *c = t->data;
    struct sockaddr_storage addr;
    const char *host = probe_host(c->sup);

    if (c->probing || c->ready || !c->run || c->run->exited) return;
    if (uv_ip4_addr(host, c->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, c->port, (struct sockaddr_in6 *)&addr) != 0)
        return;
    probe_t *p = tr_xcalloc(1, sizeof(*p));
    p->child = c;
    p->tcp.data = p->connect.data = p->timeout.data = p;
    p->open_handles = 2;
    uv_tcp_init(c->sup->loop, &p->tcp);
    uv_timer_init(c->sup->loop, &p->timeout);
    c->probing = true;
    uv_timer_start(&p->timeout, probe_timed_out, PROBE_TIMEOUT_MS, 0);
    if (uv_tcp_connect(&p->connect, &p->tcp, (struct sockaddr *)&addr, probe_connected) != 0)
        probe_finish(p);
}

/* ---- process lifecycle -------------------------------------------------- */

static bool all_stopped(const supervisor_t *sup)
{
    for (size_t i = 0; i < sup->nchildren; i++)
        if (sup->children[i].run && !sup->children[i].run->exited) return false;
    return true;
}

static void finish_stop(supervisor_t *sup)
{
    uv_timer_stop(&sup->kill_timer);
    uv_close((uv_handle_t *)&sup->kill_timer, NULL);
    uv_close((uv_handle_t *)&sup->sigterm, NULL);
    uv_close((uv_handle_t *)&sup->sigint, NULL);
    for (size_t i = 0; i < sup->nchildren; i++) {
        uv_close((uv_handle_t *)&sup->children[i].restart_timer, NULL);
        uv_close((uv_handle_t *)&sup->children[i].probe_timer, NULL);
    }
    say("stopped");
}

static void on_restart_timer(uv_timer_t *t)
{
    child_t *c = t->data;
    if (!c->sup->stopping) start_child(c);
}

static void on_child_exit(uv_process_t *proc, int64_t status, int signo)
{
    run_t *run = proc->data;
    child_t *c = run->child;
    supervisor_t *sup = c->sup;
    uint64_t ran_ms = uv_now(sup->loop) - c->started_ms;

    run->exited = true;
    c->ready = false;
    uv_timer_stop(&c->probe_timer);
    uv_close((uv_handle_t *)proc, run_handle_closed);
    c->run = NULL;

    if (sup->stopping) {
        say("%s stopped (%s %d)", c->def->name, signo ? "signal" : "exit code",
            signo ? signo : (int)status);
        if (all_stopped(sup)) finish_stop(sup);
        return;
    }
    if (ran_ms >= HEALTHY_RUN_MS) c->backoff_ms = BACKOFF_MIN_MS;
    say("%s exited (%s %d); restarting in %llu ms", c->def->name, signo ? "signal" : "exit code",
        signo ? signo : (int)status, (unsigned long long)c->backoff_ms);
    uv_timer_start(&c->restart_timer, on_restart_timer, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static char **child_env(const supervisor_t *sup, const child_t *c)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = tr_xcalloc(n + 4, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "TRELLIS_SUPERVISOR_PID=", 23) != 0 &&
            !(c->db_env && strncmp(environ[i], "TRELLIS_DB=", 11) == 0))
            env[k++] = environ[i];
    if (c->db_env) env[k++] = c->db_env;
    env[k++] = (char *)sup->supervisor_pid_env;
    if (sup->auth_url_env[0]) env[k++] = (char *)sup->auth_url_env;
    env[k] = NULL;
    return env;
}

static void start_child(child_t *c)
{
    supervisor_t *sup = c->sup;
    char port_base[16], admin_port[16];
    snprintf(port_base, sizeof(port_base), "%d", sup->port_base);
    snprintf(admin_port, sizeof(admin_port), "%d", c->admin_port);
    char *args[] = {
        sup->exe,      "serve",  (char *)c->def->name, "--port-base",  port_base,  "--data",
        sup->data_dir, "--host", (char *)sup->host,    "--admin-port", admin_port, NULL,
        NULL,          NULL};
    if (sup->routes[0] && strcmp(c->def->name, "gateway") == 0) {
        args[11] = "--routes";
        args[12] = sup->routes;
    }
    char **env = child_env(sup, c);
    run_t *run = tr_xcalloc(1, sizeof(*run));
    uv_process_options_t opts = {0};
    uv_stdio_container_t stdio[3];

    run->child = c;
    run->proc.data = run->out.pipe.data = run->err.pipe.data = run;
    tr_buf_init(&run->out.line, MAX_LINE_BYTES + sizeof(run->out.chunk));
    tr_buf_init(&run->err.line, MAX_LINE_BYTES + sizeof(run->err.chunk));
    uv_pipe_init(sup->loop, &run->out.pipe, 0);
    uv_pipe_init(sup->loop, &run->err.pipe, 0);
    run->open_handles = 2;

    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&run->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&run->err.pipe;
    opts.file = sup->exe;
    opts.args = args;
    opts.env = env;
    opts.stdio = stdio;
    opts.stdio_count = 3;
    opts.exit_cb = on_child_exit;

    int rc = uv_spawn(sup->loop, &run->proc, &opts);
    free(env);
    if (rc != 0) {
        say("%s: cannot start: %s; retrying in %llu ms", c->def->name, uv_strerror(rc),
            (unsigned long long)c->backoff_ms);
        /* uv_spawn failed: the process handle must still be closed. */
        run->open_handles++;
        uv_close((uv_handle_t *)&run->proc, run_handle_closed);
        uv_close((uv_handle_t *)&run->out.pipe, run_handle_closed);
        uv_close((uv_handle_t *)&run->err.pipe, run_handle_closed);
        uv_timer_start(&c->restart_timer, on_restart_timer, c->backoff_ms, 0);
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
        return;
    }
    run->open_handles++; /* the process handle */
    c->run = run;
    c->pid = run->proc.pid;
    c->ready = false;
    c->started_ms = uv_now(sup->loop);
    uv_read_start((uv_stream_t *)&run->out.pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&run->err.pipe, on_alloc, on_read);
    uv_timer_start(&c->probe_timer, on_probe_timer, PROBE_INTERVAL_MS, PROBE_INTERVAL_MS);
}

/* ---- shutdown ----------------------------------------------------------- */

static void on_kill_timer(uv_timer_t *t)
{
    supervisor_t *sup = t->data;
    for (size_t i = 0; i < sup->nchildren; i++) {
        child_t *c = &sup->children[i];
        if (c->run && !c->run->exited) {
            say("%s did not stop in time; sending SIGKILL", c->def->name);
            uv_process_kill(&c->run->proc, SIGKILL);
        }
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    supervisor_t *sup = h->data;
    if (sup->stopping) return;
    sup->stopping = true;
    say("%s received, stopping services", signum == SIGINT ? "SIGINT" : "SIGTERM");
    for (size_t i = 0; i < sup->nchildren; i++) {
        child_t *c = &sup->children[i];
        uv_timer_stop(&c->restart_timer);
        uv_timer_stop(&c->probe_timer);
        if (c->run && !c->run->exited) uv_process_kill(&c->run->proc, SIGTERM);
    }
    if (all_stopped(sup)) {
        finish_stop(sup);
        return;
    }
    uv_timer_start(&sup->kill_timer, on_kill_timer, sup->stop_timeout_ms, 0);
}

/* ---- arguments ---------------------------------------------------------- */

static void up_usage(FILE *out)
{
    fprintf(out,
            "usage: trellis up [--only a,b] [--data DIR] [--port-base N] [--host H]\n"
            "                  [--admin-port-base N] [--stop-timeout SECONDS]\n"
            "                  [--blueprint NAME] [--database-url postgres://user@host[:port]/]\n"
            "admin listeners (/metrics) are on 127.0.0.1 at --admin-port-base + offset\n"
            "(default: --port-base + 1000)\n");
}

static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != '\0') return NULL;
    if (*i + 1 >= argc) return "";
    return argv[++*i];
}

static bool only_includes(const char *only, const char *name)
{
    if (!only) return true;
    size_t n = strlen(name);
    for (const char *p = only; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0) return true;
        if (!comma) break;
        p = comma + 1;
    }
    return false;
}

/* Resolves --blueprint: a name means deploy/blueprints/NAME.json under the
 * working directory; anything with a '/' or ending in .json is a path. */
static int resolve_blueprint(supervisor_t *sup, const char *name)
{
    char path[PATH_MAX];
    size_t n = strlen(name);
    bool is_path = strchr(name, '/') || (n > 5 && strcmp(name + n - 5, ".json") == 0);
    int len = is_path ? snprintf(path, sizeof(path), "%s", name)
                      : snprintf(path, sizeof(path), "deploy/blueprints/%s.json", name);
    if (n == 0 || len < 0 || (size_t)len >= sizeof(path)) {
        fprintf(stderr, "trellis up: invalid --blueprint '%s'\n", name);
        return -EINVAL;
    }
    if (!realpath(path, sup->routes)) {
        fprintf(stderr, "trellis up: no blueprint '%s' (%s: %s)\n", name, path, strerror(errno));
        sup->routes[0] = '\0';
        return -EINVAL;
    }
    return 0;
}

/* --database-url must name a PostgreSQL server and no database (each
 * service gets its own): postgres[ql]://[user[:password]@]host[:port][/]
 * with optional ?options. The URL is never echoed: it may hold a password. */
static int check_database_url(const char *url)
{
    const char *auth = strstr(url, "://");
    if (!tr_store_url_networked(url) || !auth) {
        fprintf(stderr, "trellis up: --database-url must be a postgres:// URL\n");
        return -EINVAL;
    }
    auth += 3;
    const char *slash = strchr(auth, '/'), *query = strchr(auth, '?');
    if (query && slash && slash > query) slash = NULL;
    if (slash && slash + 1 != (query ? query : slash + strlen(slash))) {
        fprintf(stderr, "trellis up: --database-url names a database; give the server only "
                        "(postgres://user@host:port/): each service gets trellis_<name>\n");
        return -EINVAL;
    }
    return 0;
}

/* "TRELLIS_DB=<url with /trellis_<name> as its path>". */
static char *service_db_env(const char *url, const char *name)
{
    const char *auth = strstr(url, "://") + 3;
    const char *query = strchr(auth, '?');
    size_t base = query ? (size_t)(query - url) : strlen(url);
    if (base > 0 && url[base - 1] == '/') base--;
    return tr_xasprintf("TRELLIS_DB=%.*s/trellis_%s%s", (int)base, url, name, query ? query : "");
}

/* Every name in --only must be a known service. */
static int check_only(const char *only)
{
    char name[64];
    for (const char *p = only; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof(name)) return -EINVAL;
        memcpy(name, p, len);
        name[len] = '\0';
        if (!trellis_service_find(name)) {
            fprintf(stderr, "trellis up: unknown service '%s' in --only\n", name);
            return -EINVAL;
        }
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

static int parse_args(supervisor_t *sup, int argc, char **argv, const char **only)
{
    const char *data = "./data", *v;
    char *end;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            up_usage(stdout);
            exit(0);
        } else if ((v = flag_value(argc, argv, &i, "--only"))) {
            *only = v;
        } else if ((v = flag_value(argc, argv, &i, "--data"))) {
            data = v;
        } else if ((v = flag_value(argc, argv, &i, "--host"))) {
            sup->host = v;
        } else if ((v = flag_value(argc, argv, &i, "--port-base"))) {
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end || n < 1 || n > 65535 - 64) {
                fprintf(stderr, "trellis up: invalid --port-base '%s'\n", v);
                return -EINVAL;
            }
            sup->port_base = (int)n;
        } else if ((v = flag_value(argc, argv, &i, "--admin-port-base"))) {
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end || n < 1 || n > 65535 - 64) {
                fprintf(stderr, "trellis up: invalid --admin-port-base '%s'\n", v);
                return -EINVAL;
            }
            sup->admin_port_base = (int)n;
        } else if ((v = flag_value(argc, argv, &i, "--database-url"))) {
            if (check_database_url(v) != 0) return -EINVAL;
            sup->database_url = v;
        } else if ((v = flag_value(argc, argv, &i, "--blueprint"))) {
            if (resolve_blueprint(sup, v) != 0) return -EINVAL;
        } else if ((v = flag_value(argc, argv, &i, "--stop-timeout"))) {
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end || n < 1 || n > 3600) {
                fprintf(stderr, "trellis up: invalid --stop-timeout '%s'\n", v);
                return -EINVAL;
            }
            sup->stop_timeout_ms = (uint64_t)n * 1000;
        } else {
            fprintf(stderr, "trellis up: unknown option '%s'\n", argv[i]);
            up_usage(stderr);
            return -EINVAL;
        }
    }
    if (*only && check_only(*only) != 0) return -EINVAL;
    if (sup->admin_port_base == 0) {
        if (sup->port_base + 1000 > 65535 - 64) {
            fprintf(stderr, "trellis up: give --admin-port-base with a --port-base this high\n");
            return -EINVAL;
        }
        sup->admin_port_base = sup->port_base + 1000;
    }
    if (*data == '\0' || *sup->host == '\0') {
        fprintf(stderr, "trellis up: empty --data or --host\n");
        return -EINVAL;
    }
    if (mkdir(data, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "trellis up: cannot create %s: %s\n", data, strerror(errno));
        return -errno;
    }
    if (!realpath(data, sup->data_dir)) {
        fprintf(stderr, "trellis up: cannot resolve %s: %s\n", data, strerror(errno));
        return -errno;
    }
    return 0;
}

int trellis_up_main(int argc, char **argv)
{
    supervisor_t sup = {
        .host = "127.0.0.1", .port_base = 8000, .stop_timeout_ms = DEFAULT_STOP_TIMEOUT_MS};
    const char *only = NULL;
    uv_loop_t loop;
    size_t size = sizeof(sup.exe);

    if (parse_args(&sup, argc, argv, &only) != 0) return 2;
    if (uv_exepath(sup.exe, &size) != 0) {
        fprintf(stderr, "trellis up: cannot find my own executable\n");
        return 1;
    }
    const tr_service_def_t *auth = trellis_service_find("auth");
    if (auth && !getenv("TRELLIS_AUTH_URL")) {
        /* A wildcard listener is reached on loopback. */
        const char *h = strcmp(sup.host, "0.0.0.0") == 0 ? "127.0.0.1"
                        : strcmp(sup.host, "::") == 0    ? "[::1]"
                                                         : sup.host;
        bool v6 = strchr(h, ':') && h[0] != '[';
        snprintf(sup.auth_url_env, sizeof(sup.auth_url_env), "TRELLIS_AUTH_URL=http://%s%s%s:%d",
                 v6 ? "[" : "", h, v6 ? "]" : "", sup.port_base + auth->port_offset);
    }
    snprintf(sup.supervisor_pid_env, sizeof(sup.supervisor_pid_env), "TRELLIS_SUPERVISOR_PID=%ld",
             (long)getpid());
    signal(SIGPIPE, SIG_IGN);

    uv_loop_init(&loop);
    sup.loop = &loop;
    size_t n = trellis_service_count();
    sup.children = tr_xcalloc(n, sizeof(child_t));
    for (size_t i = 0; i < n; i++) {
        const tr_service_def_t *def = trellis_service_at(i);
        if (!only_includes(only, def->name)) continue;
        child_t *c = &sup.children[sup.nchildren++];
        c->sup = &sup;
        c->def = def;
        c->port = sup.port_base + def->port_offset;
        c->admin_port = sup.admin_port_base + def->port_offset;
        c->backoff_ms = BACKOFF_MIN_MS;
        if (sup.database_url && !def->no_store)
            c->db_env = service_db_env(sup.database_url, def->name);
        uv_timer_init(&loop, &c->restart_timer);
        uv_timer_init(&loop, &c->probe_timer);
        c->restart_timer.data = c->probe_timer.data = c;
    }
    uv_signal_init(&loop, &sup.sigterm);
    uv_signal_init(&loop, &sup.sigint);
    uv_timer_init(&loop, &sup.kill_timer);
    sup.sigterm.data = sup.sigint.data = sup.kill_timer.data = &sup;
    uv_signal_start(&sup.sigterm, on_signal, SIGTERM);
    uv_signal_start(&sup.sigint, on_signal, SIGINT);

    say("starting %zu service%s from %s (data %s)", sup.nchildren, sup.nchildren == 1 ? "" : "s",
        sup.exe, sup.data_dir);
    for (size_t i = 0; i < sup.nchildren; i++)
        start_child(&sup.children[i]);

    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    for (size_t i = 0; i < sup.nchildren; i++)
        free(sup.children[i].db_env);
    free(sup.children);
    return rc == 0 ? 0 : 1;
}

/*
 * ratelimit_redis.c - the Redis engine of ratelimit_engine.h: one
 * connection per worker loop running a GCRA script; ratelimit.c decides
 * locally whenever this engine has no answer.
 *
 * NOTES ON THE DESIGN
 *
 * 1. One hiredis async connection per worker loop (hiredis' libuv adapter),
 *    so a decision never crosses threads. Its poll handle and timers are
 *    unref'd: the connection alone never keeps a draining loop alive. The
 *    deadline timer is ref'd while checks are pending, because a pending
 *    check is outstanding work.
 *
 * 2. A decision is one EVALSHA of a GCRA script that reads Redis' own clock
 *    (TIME), so replicas with different clocks share one limit. The SHA1 is
 *    computed here and the script is loaded during the handshake; a NOSCRIPT
 *    answer (SCRIPT FLUSH, failover) resends that decision as EVAL.
 *
 * 3. Connection state machine, per worker:
 *      DOWN --backoff timer--> CONNECTING (name resolution on the thread pool
 *      when the host is not numeric) --connected--> HANDSHAKE (AUTH, SELECT,
 *      SCRIPT LOAD, pipelined) --script loaded--> UP.
 *    Any failure, or the connect/handshake timer, drops the context and goes
 *    back to DOWN with exponential backoff (100 ms doubling to 5 s, jittered;
 *    it resets only after a connection stayed up for 10 s, so a Redis that
 *    accepts and then stalls is not hammered). Only UP sends decisions; in
 *    every other state a check is decided locally and synchronously.
 *
 * 4. Pending checks sit in a FIFO in sending order, which is also deadline
 *    order. When the oldest outlives the timeout, Redis is slow: the context
 *    is dropped, hiredis calls every outstanding reply callback with NULL and
 *    each is reported without an answer (ratelimit.c decides it locally). Dropping (rather than
 * waiting on) a stalled connection means later requests decide locally at once instead of each
 * paying the timeout.
 *
 * 5. A pending check is freed only in its hiredis reply callback, which
 *    hiredis calls exactly once (a reply, or NULL when the context goes).
 *    Cancelling or timing out only marks it answered. The worker's memory is
 *    freed in the last close callback of its libuv handles, which runs after
 *    any deferred redisAsyncFree has finished.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/metrics.h"
#include "kit/ratelimit_engine.h"

#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000
#define STABLE_UP_MS     10000
#define MAX_PENDING      65536
#define WARN_INTERVAL_NS (10LL * 1000000000LL)
#define REDIS_KEY_MAX    TR__RL_REDIS_KEY_MAX

/* KEYS[1] = the key; ARGV[1] = emission interval in microseconds, ARGV[2] =
 * burst. Returns {allowed, remaining, reset_us, retry_after_us}. The TAT is
 * kept only as long as it is in the future, like the local table's entries. */
static const char gcra_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local interval = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if tat == nil or tat < now then tat = now end\n"
    "local new_tat = tat + interval\n"
    "local allow_at = new_tat - interval * burst\n"
    "if allow_at > now then return {0, 0, tat - now, allow_at - now} end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',\n"
    "           math.floor((new_tat - now) / 1000) + 1)\n"
    "return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}\n";

typedef enum conn_state {
    ST_DOWN,       /* waiting for the backoff timer */
    ST_RESOLVING,  /* uv_getaddrinfo under way */
    ST_CONNECTING, /* TCP connect under way */
    ST_HANDSHAKE,  /* AUTH / SELECT / SCRIPT LOAD sent */
    ST_UP,
} conn_state_t;

struct tr__rl_redis {
    tr__rl_redis_conf_t conf;
    char *prefix;
    uint32_t timeout_ms;
    uint32_t connect_timeout_ms;
    tr_counter_t *fallbacks;
    tr_gauge_t *up;
    _Atomic int workers_open; /* workers open */
    _Atomic int workers_up;   /* of those, connected with the script loaded */
    _Atomic int64_t last_warn_ns;
    _Atomic uint64_t unlogged_fallbacks;
};

struct tr__rl_redis_check {
    tr__rl_redis_worker_t *w;
    tr__rl_redis_check_t *prev, *next;
    char key[REDIS_KEY_MAX]; /* prefix included */
    size_t key_len;
    uint64_t deadline_ms; /* loop time */
    uint64_t interval_us;
    uint32_t burst;
    tr__rl_redis_cb cb;
    void *data;
    bool answered;  /* cb ran: it must not run again */
    bool cancelled; /* nobody waits: no deadline */
    bool resent;    /* EVAL sent after NOSCRIPT */
};

struct tr__rl_redis_worker {
    tr__rl_redis_t *e;
    uv_loop_t *loop;
    conn_state_t state;
    redisAsyncContext *ac;
    uv_timer_t conn_timer;     /* backoff in DOWN; connect+handshake timeout */
    uv_timer_t deadline_timer; /* oldest pending check's deadline */
    uv_getaddrinfo_t gai;
    bool gai_active;
    bool closing;
    bool counted_up;
    int open_handles; /* handles and requests whose callbacks are still due */
    uint64_t backoff_ms;
    uint64_t up_since_ms;
    unsigned resolutions; /* picks the next address of a multi-address name */
    tr__rl_redis_check_t *head, *tail;
    size_t npending;
    char script_sha[41];
};

static void start_connect(tr__rl_redis_worker_t *w);
static void drop_connection(tr__rl_redis_worker_t *w, bool free_ctx, const char *reason,
                            const char *detail);

/* ---- URL ----------------------------------------------------------------- */

static int parse_uint(const char *s, size_t n, long max, long *out)
{
    if (n == 0 || n > 10) return -EINVAL;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return -EINVAL;
    *out = v;
    return 0;
}

int tr__ratelimit_redis_parse_url(const char *url, tr__rl_redis_conf_t *conf)
{
    static const char scheme[] = "redis://";
    int rc = -EINVAL;
    long v = 0;
    memset(conf, 0, sizeof *conf);
    conf->port = 6379;
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) goto out;
    const char *p = url + sizeof scheme - 1;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) goto out; /* "user@" without a password means nothing to Redis */
        if (colon > p) conf->user = tr_xstrndup(p, (size_t)(colon - p));
        conf->password = tr_xstrndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *host_end;
    const char *port_at = NULL;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close || close == p + 1) goto out;
        conf->host = tr_xstrndup(p + 1, (size_t)(close - p - 1));
        host_end = close + 1;
        if (host_end < end) {
            if (*host_end != ':') goto out;
            port_at = host_end + 1;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        host_end = colon ? colon : end;
        if (host_end == p) goto out;
        conf->host = tr_xstrndup(p, (size_t)(host_end - p));
        if (colon) port_at = colon + 1;
    }
    if (port_at) {
        if (parse_uint(port_at, (size_t)(end - port_at), 65535, &v) != 0 || v == 0) goto out;
        conf->port = (int)v;
    }
    if (*end == '/') {
        const char *db = end + 1;
        size_t n = strlen(db);
        if (n > 0) {
            if (parse_uint(db, n, 1000000, &v) != 0) goto out;
            conf->db = (int)v;
        }
    } else if (*end != '\0') {
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) tr__ratelimit_redis_conf_free(conf);
    return rc;
}

void tr__ratelimit_redis_conf_free(tr__rl_redis_conf_t *conf)
{
    free(conf->host);
    free(conf->user);
    free(conf->password);
    memset(conf, 0, sizeof *conf);
}

/* ---- logging and metrics ------------------------------------------------- */

/* At most one warning per WARN_INTERVAL_NS per process, carrying how many
 * fallbacks happened since the previous one, so an outage is visible without
 * one line per request. */
static void warn_limited(tr__rl_redis_t *e, const char *msg, const char *reason, const char *detail)
{
    int64_t now = (int64_t)uv_hrtime();
    int64_t last = atomic_load_explicit(&e->last_warn_ns, memory_order_relaxed);
    if (last != 0 && now - last < WARN_INTERVAL_NS) return;
    if (!atomic_compare_exchange_strong(&e->last_warn_ns, &last, now)) return;
    uint64_t n = atomic_exchange(&e->unlogged_fallbacks, 0);
    char where[300];
    snprintf(where, sizeof where, "%s:%d/%d", e->conf.host, e->conf.port, e->conf.db);
    tr_log_field_t fields[] = {
        TR_LOG_STR("reason", reason),
        TR_LOG_STR("detail", detail ? detail : ""),
        TR_LOG_STR("redis", where),
        TR_LOG_INT("fallbacks", n),
    };
    tr_log_fields(TR_LOG_WARN, msg, fields, sizeof fields / sizeof fields[0]);
}

void tr__rl_redis_note_fallback(tr__rl_redis_t *e, const char *reason, const char *detail)
{
    tr_counter_inc(e->fallbacks, NULL);
    atomic_fetch_add_explicit(&e->unlogged_fallbacks, 1, memory_order_relaxed);
    /* Checks answered because their worker closes are shutdown, not an outage. */
    if (strcmp(reason, "closing") != 0)
        warn_limited(e, "ratelimit: redis unavailable, deciding with local limits", reason, detail);
}

static void update_up_gauge(tr__rl_redis_t *e)
{
    int open = atomic_load(&e->workers_open);
    int up = atomic_load(&e->workers_up);
    tr_gauge_set(e->up, open > 0 && up == open ? 1 : 0);
}

static void set_up(tr__rl_redis_worker_t *w, bool up)
{
    if (w->counted_up == up) return;
    w->counted_up = up;
    atomic_fetch_add(&w->e->workers_up, up ? 1 : -1);
    update_up_gauge(w->e);
}

/* ---- pending checks ------------------------------------------------------ */

static void pending_unlink(tr__rl_redis_worker_t *w, tr__rl_redis_check_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        w->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        w->tail = p->prev;
    w->npending--;
    if (!w->head && !w->closing) uv_timer_stop(&w->deadline_timer);
}

/* Reports a check without an answer (the caller decides it locally). */
static void answer_none(tr__rl_redis_check_t *p, const char *reason, const char *detail)
{
    p->answered = true;
    p->cb(p->data, NULL, reason, detail);
}

static void on_script_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Sends EVALSHA, or EVAL when use_eval. Returns 0 or -EIO. */
static int send_script(tr__rl_redis_worker_t *w, tr__rl_redis_check_t *p, bool use_eval)
{
    char interval[24], burst[12];
    snprintf(interval, sizeof interval, "%llu", (unsigned long long)p->interval_us);
    snprintf(burst, sizeof burst, "%u", p->burst);
    const char *argv[] = {use_eval ? "EVAL" : "EVALSHA",
                          use_eval ? gcra_script : w->script_sha,
                          "1",
                          p->key,
                          interval,
                          burst};
    size_t lens[] = {strlen(argv[0]), strlen(argv[1]),  1,
                     p->key_len,      strlen(interval), strlen(burst)};
    if (!w->ac) return -EIO;
    int rc = redisAsyncCommandArgv(w->ac, on_script_reply, p, 6, argv, lens);
    return rc == REDIS_OK ? 0 : -EIO;
}

static bool reply_is_decision(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) return false;
    for (size_t i = 0; i < 4; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER || r->element[i]->integer < 0) return false;
    return true;
}

static void on_script_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    tr__rl_redis_check_t *p = privdata;
    tr__rl_redis_worker_t *w = p->w;
    redisReply *reply = r;

    if (!reply) {
        /* The context is going away. If it was not us who dropped it, the
         * connection failed: move to DOWN before answering, so a check made
         * from the callback below decides locally. */
        if (ac == w->ac) drop_connection(w, false, "disconnected", ac->errstr);
        if (!p->answered) answer_none(p, "unavailable", NULL);
    } else if (p->answered) {
        /* Answered earlier (the worker closed); the reply came too late. */
    } else if (reply_is_decision(reply)) {
        tr__rl_gcra_reply_t g = {
            .allowed = reply->element[0]->integer != 0,
            .remaining = (uint64_t)reply->element[1]->integer,
            .reset_us = (uint64_t)reply->element[2]->integer,
            .retry_us = (uint64_t)reply->element[3]->integer,
        };
        p->answered = true;
        p->cb(p->data, &g, NULL, NULL);
    } else if (reply->type == REDIS_REPLY_ERROR && !p->resent &&
               strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        p->resent = true;
        /* Stays linked: the EVAL's reply comes back to this callback. */
        if (send_script(w, p, true) == 0) return;
        answer_none(p, "error", "cannot resend script");
    } else {
        answer_none(p, "error", reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
    }
    pending_unlink(w, p);
    free(p);
}

static void on_deadline(uv_timer_t *t)
{
    tr__rl_redis_worker_t *w = t->data;
    uint64_t now = uv_now(w->loop);
    tr__rl_redis_check_t *p = w->head;
    while (p && (p->answered || p->cancelled))
        p = p->next;
    if (!p) return;
    if (p->deadline_ms > now) {
        uv_timer_start(&w->deadline_timer, on_deadline, p->deadline_ms - now, 0);
        return;
    }
    /* Every pending check is answered locally from its NULL reply. */
    drop_connection(w, true, "timeout", "no answer within the rate-limit timeout");
}

static void arm_deadline(tr__rl_redis_worker_t *w)
{
    if (uv_is_active((uv_handle_t *)&w->deadline_timer)) return;
    uv_timer_start(&w->deadline_timer, on_deadline, w->e->timeout_ms, 0);
}

/* ---- connection ---------------------------------------------------------- */

static void on_conn_timer(uv_timer_t *t);

static void schedule_reconnect(tr__rl_redis_worker_t *w)
{
    if (w->closing) return;
    w->state = ST_DOWN;
    uint64_t base = w->backoff_ms;
    uint64_t delay = base / 2 + (uint64_t)randombytes_uniform((uint32_t)(base / 2 + 1));
    w->backoff_ms = base * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : base * 2;
    uv_timer_start(&w->conn_timer, on_conn_timer, delay, 0);
}

/* Leaves the current context (if any) and schedules a reconnect. free_ctx is
 * false when hiredis is already freeing the context (a NULL reply, the
 * disconnect callback). From other hiredis callbacks redisAsyncFree defers
 * itself until the callback returns. */
static void drop_connection(tr__rl_redis_worker_t *w, bool free_ctx, const char *reason,
                            const char *detail)
{
    redisAsyncContext *ac = w->ac;
    if (w->state == ST_UP && uv_now(w->loop) - w->up_since_ms >= STABLE_UP_MS)
        w->backoff_ms = BACKOFF_MIN_MS;
    if (w->state == ST_UP || w->state == ST_HANDSHAKE || w->state == ST_CONNECTING)
        warn_limited(w->e, "ratelimit: redis connection lost, deciding with local limits", reason,
                     detail);
    w->ac = NULL;
    set_up(w, false);
    uv_timer_stop(&w->conn_timer);
    schedule_reconnect(w);
    if (ac) {
        ac->data = NULL;
        if (free_ctx) redisAsyncFree(ac);
    }
}

static void on_handshake_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    tr__rl_redis_worker_t *w = privdata;
    redisReply *reply = r;
    if (ac->data != w || ac != w->ac) return; /* a context we already left */
    if (!reply) {
        drop_connection(w, false, "disconnected", ac->errstr);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        char detail[200];
        snprintf(detail, sizeof detail, "%s", reply->str);
        drop_connection(w, true, "handshake", detail);
        return;
    }
    /* SCRIPT LOAD is the last command sent; its answer is the SHA1. */
    if (reply->type == REDIS_REPLY_STRING) {
        if (strcmp(reply->str, w->script_sha) != 0) {
            drop_connection(w, true, "handshake", "script digest mismatch");
            return;
        }
        uv_timer_stop(&w->conn_timer);
        w->state = ST_UP;
        w->up_since_ms = uv_now(w->loop);
        set_up(w, true);
        tr_log_debug("ratelimit: redis connection up");
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    tr__rl_redis_worker_t *w = ac->data;
    if (!w || ac != w->ac) return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        w->ac = NULL;
        warn_limited(w->e, "ratelimit: cannot connect to redis, deciding with local limits",
                     "connect", ac->errstr);
        uv_timer_stop(&w->conn_timer);
        schedule_reconnect(w);
        return;
    }
    w->state = ST_HANDSHAKE;
    tr__rl_redis_conf_t *c = &w->e->conf;
    int rc = REDIS_OK;
    if (c->password && c->user)
        rc = redisAsyncCommand(ac, on_handshake_reply, w, "AUTH %s %s", c->user, c->password);
    else if (c->password)
        rc = redisAsyncCommand(ac, on_handshake_reply, w, "AUTH %s", c->password);
    if (rc == REDIS_OK && c->db != 0)
        rc = redisAsyncCommand(ac, on_handshake_reply, w, "SELECT %d", c->db);
    if (rc == REDIS_OK)
        rc = redisAsyncCommand(ac, on_handshake_reply, w, "SCRIPT LOAD %s", gcra_script);
    /* A failed send leaves the handshake unanswered and the connect timer
     * drops the context: freeing it here, inside hiredis' connect handling,
     * would pull it from under hiredis. */
    (void)rc;
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    tr__rl_redis_worker_t *w = ac->data;
    (void)status;
    if (!w || ac != w->ac) return;
    /* hiredis frees the context after this returns. */
    drop_connection(w, false, "disconnected", ac->errstr);
}

static void connect_to(tr__rl_redis_worker_t *w, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, w->e->conf.port);
    if (!ac) {
        schedule_reconnect(w);
        return;
    }
    if (ac->err) {
        warn_limited(w->e, "ratelimit: cannot connect to redis, deciding with local limits",
                     "connect", ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(w);
        return;
    }
    if (redisLibuvAttach(ac, w->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_reconnect(w);
        return;
    }
    uv_unref((uv_handle_t *)&((redisLibuvEvents *)ac->ev.data)->handle);
    ac->data = w;
    w->ac = ac;
    w->state = ST_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&w->conn_timer, on_conn_timer, w->e->connect_timeout_ms, 0);
}

static void maybe_free_worker(tr__rl_redis_worker_t *w)
{
    if (w->closing && w->open_handles == 0) free(w);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    tr__rl_redis_worker_t *w = req->data;
    w->gai_active = false;
    w->open_handles--;
    char ip[INET6_ADDRSTRLEN] = "";
    /* Successive attempts walk the addresses ("localhost" may be ::1 first
     * while Redis listens on 127.0.0.1 only). */
    size_t count = 0;
    for (struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next)
        count++;
    if (count > 0) {
        struct addrinfo *a = res;
        for (size_t i = w->resolutions++ % count; i > 0; i--)
            a = a->ai_next;
        if (a->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (w->closing) {
        maybe_free_worker(w);
        return;
    }
    if (!ip[0]) {
        warn_limited(w->e, "ratelimit: cannot resolve redis host, deciding with local limits",
                     "resolve", status ? uv_strerror(status) : "no address");
        schedule_reconnect(w);
        return;
    }
    connect_to(w, ip);
}

static void start_connect(tr__rl_redis_worker_t *w)
{
    const char *host = w->e->conf.host;
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) {
        connect_to(w, host);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    w->gai.data = w;
    if (uv_getaddrinfo(w->loop, &w->gai, on_resolved, host, NULL, &hints) != 0) {
        schedule_reconnect(w);
        return;
    }
    w->gai_active = true;
    w->open_handles++;
    w->state = ST_RESOLVING;
}

static void on_conn_timer(uv_timer_t *t)
{
    tr__rl_redis_worker_t *w = t->data;
    if (w->state == ST_DOWN)
        start_connect(w);
    else if (w->state == ST_CONNECTING || w->state == ST_HANDSHAKE)
        drop_connection(w, true, "timeout", "connect timed out");
}

/* ---- public -------------------------------------------------------------- */

static void script_digest(char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hex[] = "0123456789abcdef";
    if (EVP_Digest(gcra_script, strlen(gcra_script), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        abort();
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

int tr__rl_redis_new(const char *url, const char *prefix, uint32_t timeout_ms,
                     uint32_t connect_timeout_ms, tr__rl_redis_t **out)
{
    int rc = 0;
    tr__rl_redis_t *e = NULL;
    *out = NULL;
    if (strlen(prefix) > TR__RL_PREFIX_MAX) return -EINVAL;
    e = tr_xcalloc(1, sizeof *e);
    if ((rc = tr__ratelimit_redis_parse_url(url, &e->conf)) != 0) {
        free(e);
        return rc;
    }
    e->prefix = tr_xstrdup(prefix);
    e->timeout_ms = timeout_ms;
    e->connect_timeout_ms = connect_timeout_ms;
    e->fallbacks = tr_counter_register(
        "ratelimit_redis_fallbacks_total",
        "Rate-limit decisions taken locally because Redis was unreachable, slow or failing.", NULL);
    e->up = tr_gauge_register("ratelimit_redis_up",
                              "1 while every worker's connection to the rate-limit Redis is up.");
    tr_gauge_set(e->up, 0);
    *out = e;
    return 0;
}

void tr__rl_redis_free(tr__rl_redis_t *e)
{
    if (!e) return;
    tr__ratelimit_redis_conf_free(&e->conf);
    free(e->prefix);
    free(e);
}

int tr__rl_redis_worker_open(tr__rl_redis_t *e, uv_loop_t *loop, tr__rl_redis_worker_t **out)
{
    tr__rl_redis_worker_t *w = tr_xcalloc(1, sizeof *w);
    w->e = e;
    w->loop = loop;
    script_digest(w->script_sha);
    uv_timer_init(loop, &w->conn_timer);
    uv_timer_init(loop, &w->deadline_timer);
    w->conn_timer.data = w;
    w->deadline_timer.data = w;
    uv_unref((uv_handle_t *)&w->conn_timer);
    w->open_handles = 2;
    w->backoff_ms = BACKOFF_MIN_MS;
    atomic_fetch_add(&e->workers_open, 1);
    update_up_gauge(e);
    w->state = ST_DOWN;
    *out = w;
    start_connect(w);
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    tr__rl_redis_worker_t *w = h->data;
    w->open_handles--;
    maybe_free_worker(w);
}

void tr__rl_redis_worker_close(tr__rl_redis_worker_t *w)
{
    if (!w || w->closing) return;
    w->closing = true;
    /* Answer first: nothing frees a check during this walk (only reply
     * callbacks do, and none can run from here). */
    for (tr__rl_redis_check_t *p = w->head; p; p = p->next)
        if (!p->answered) answer_none(p, "closing", NULL);
    redisAsyncContext *ac = w->ac;
    w->ac = NULL;
    if (w->counted_up) set_up(w, false);
    atomic_fetch_sub(&w->e->workers_open, 1);
    update_up_gauge(w->e);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (w->gai_active) uv_cancel((uv_req_t *)&w->gai);
    uv_close((uv_handle_t *)&w->conn_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->deadline_timer, on_handle_closed);
}

bool tr__rl_redis_worker_up(const tr__rl_redis_worker_t *w)
{
    return w && w->state == ST_UP;
}

int tr__rl_redis_check(tr__rl_redis_worker_t *w, const char *key, size_t key_len,
                       uint64_t interval_us, uint32_t burst, tr__rl_redis_cb cb, void *data,
                       tr__rl_redis_check_t **check, const char **reason)
{
    *check = NULL;
    if (w->state != ST_UP || w->npending >= MAX_PENDING) {
        *reason = w->state != ST_UP ? "unavailable" : "overloaded";
        return -EAGAIN;
    }
    size_t plen = strlen(w->e->prefix);
    if (plen + key_len >= REDIS_KEY_MAX) {
        *reason = "error";
        return -EIO;
    }
    tr__rl_redis_check_t *p = tr_xcalloc(1, sizeof *p);
    p->w = w;
    memcpy(p->key, w->e->prefix, plen);
    memcpy(p->key + plen, key, key_len);
    p->key_len = plen + key_len;
    p->cb = cb;
    p->data = data;
    p->interval_us = interval_us;
    p->burst = burst;
    p->deadline_ms = uv_now(w->loop) + w->e->timeout_ms;
    if (send_script(w, p, false) != 0) {
        free(p);
        *reason = "error";
        return -EIO;
    }
    p->prev = w->tail;
    if (w->tail)
        w->tail->next = p;
    else
        w->head = p;
    w->tail = p;
    w->npending++;
    arm_deadline(w);
    *check = p;
    return 0;
}

void tr__rl_redis_cancel(tr__rl_redis_check_t *check)
{
    if (check) check->cancelled = true;
}

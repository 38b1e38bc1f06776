/*
 * log.c - structured JSON log lines on stderr.
 *
 * DESIGN NOTES
 *
 * 1. The per-request access log goes through here, so a line is written by
 *    hand into a stack buffer (escaping as we go) rather than by building a
 *    jansson object and dumping it. Only nested objects, arrays and reals in
 *    the caller's fields are handed to json_dumpb(), straight into the line.
 *
 * 2. One line is one write(2) on fd 2. Lines from different threads therefore
 *    never interleave, and on a pipe a line up to PIPE_BUF (4096) bytes is
 *    even atomic with respect to other processes.
 *
 * 3. A line is at most LOG_LINE_MAX bytes. When content does not fit, the
 *    string being written is cut (at a UTF-8 character boundary) or the field
 *    being written is dropped, later fields are dropped, and the line ends
 *    with "log_truncated":true. TAIL_RESERVE bytes stay free for that tail, so
 *    the line is always a complete JSON object.
 *
 * 4. Output is always valid JSON: control characters are escaped and any
 *    byte that is not part of well-formed UTF-8 becomes U+FFFD, so a hostile
 *    path or header copied into a message cannot break the log stream.
 *
 * 2a. Event-loop threads may batch (tr_log_buffer_thread): whole lines
 *    collect in a thread-local buffer of BATCH_BYTES and go out in one write
 *    per loop iteration. Error lines flush at once so they are never late.
 *
 * 5. The level and service name are set once by tr_log_init() before worker
 *    threads start; the level is an atomic so tr_log_enabled() may race with
 *    a late tr_log_init() harmlessly. Caller fields named ts, level, service
 *    or msg are dropped so that no line carries duplicate keys.
 */
#include "kit/log.h"
#include "kit/alloc.h"
#include "kit/ids.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LOG_STACK_BYTES 2048
#define LOG_LINE_MAX    (64 * 1024)
#define TAIL_RESERVE    32 /* ,"log_truncated":true}\n is 24 bytes */
#define SERVICE_MAX     64
#define BATCH_BYTES     (64 * 1024)

static atomic_int min_level = TR_LOG_INFO;
/* ,"service":"<escaped name>" — prepared once so each line only copies it. */
static char service_json[16 + 6 * SERVICE_MAX] = ",\"service\":\"trellis\"";
static size_t service_json_len = sizeof(",\"service\":\"trellis\"") - 1;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

typedef struct line {
    char *data;
    size_t len;
    size_t cap;
    bool heap;
    bool truncated;
} line_t;

/* Makes room for extra more bytes without passing limit. */
static bool line_room(line_t *l, size_t extra, size_t limit)
{
    if (extra > limit - l->len) return false;
    size_t need = l->len + extra;
    if (need <= l->cap) return true;
    size_t cap = l->cap * 2;
    while (cap < need)
        cap *= 2;
    if (cap > LOG_LINE_MAX) cap = LOG_LINE_MAX;
    if (l->heap) {
        l->data = tr_xrealloc(l->data, cap);
    } else {
        char *p = tr_xmalloc(cap);
        memcpy(p, l->data, l->len);
        l->data = p;
        l->heap = true;
    }
    l->cap = cap;
    return true;
}

static bool line_put(line_t *l, const char *s, size_t n)
{
    if (!line_room(l, n, LOG_LINE_MAX - TAIL_RESERVE)) return false;
    memcpy(l->data + l->len, s, n);
    l->len += n;
    return true;
}

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 if malformed. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0; /* overlong */
        if (c == 0xed) hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90; /* overlong */
        if (c == 0xf4) hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return len;
}

/* Writes s as a JSON string. When it does not fit, writes as much as fits,
 * closes the quote and returns false. */
static bool line_put_string(line_t *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const size_t limit = LOG_LINE_MAX - TAIL_RESERVE;
    if (!line_room(l, 2, limit)) return false;
    l->data[l->len++] = '"';
    const unsigned char *p = (const unsigned char *)s;
    bool complete = true;
    size_t i = 0;
    while (i < n) {
        char esc[6];
        const char *piece = esc;
        size_t piece_len, used;
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            piece_len = 2;
            used = 1;
        } else if (c < 0x20) {
            static const char short_esc[32] = {
                ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
            esc[0] = '\\';
            if (short_esc[c]) {
                esc[1] = short_esc[c];
                piece_len = 2;
            } else {
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0x0f];
                piece_len = 6;
            }
            used = 1;
        } else if ((used = utf8_seq_len(p + i, n - i)) > 0) {
            piece = s + i;
            piece_len = used;
        } else {
            piece = "\\ufffd";
            piece_len = 6;
            used = 1;
        }
        /* +1 keeps room for the closing quote. */
        if (!line_room(l, piece_len + 1, limit)) {
            complete = false;
            break;
        }
        memcpy(l->data + l->len, piece, piece_len);
        l->len += piece_len;
        i += used;
    }
    l->data[l->len++] = '"';
    return complete;
}

static bool line_put_value(line_t *l, json_t *value)
{
    char num[32];
    int n;
    switch (json_typeof(value)) {
    case JSON_STRING:
        return line_put_string(l, json_string_value(value), json_string_length(value));
    case JSON_INTEGER:
        n = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return line_put(l, num, (size_t)n);
    case JSON_TRUE:
        return line_put(l, "true", 4);
    case JSON_FALSE:
        return line_put(l, "false", 5);
    case JSON_NULL:
        return line_put(l, "null", 4);
    default:
        break;
    }
    /* Reals with 15 significant digits: every digit a double carries, without
     * the 0.10000000000000001 noise of 17. */
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15);
    const size_t limit = LOG_LINE_MAX - TAIL_RESERVE;
    size_t avail = (l->cap < limit ? l->cap : limit) - l->len;
    size_t need = json_dumpb(value, l->data + l->len, avail, flags);
    if (need == 0) return line_put(l, "null", 4);
    if (need > avail) {
        if (!line_room(l, need, limit)) return false;
        json_dumpb(value, l->data + l->len, need, flags);
    }
    l->len += need;
    return true;
}

static bool is_reserved_key(const char *key)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "service") == 0 ||
           strcmp(key, "msg") == 0;
}

static void line_put_fields(line_t *l, json_t *fields)
{
    const char *key;
    json_t *value;
    json_object_foreach(fields, key, value)
    {
        if (is_reserved_key(key)) continue;
        size_t mark = l->len;
        if (!line_put(l, ",", 1) || !line_put_string(l, key, strlen(key)) || !line_put(l, ":", 1) ||
            !line_put_value(l, value)) {
            l->len = mark;
            l->truncated = true;
            return;
        }
    }
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return; /* nowhere left to report a failing stderr */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* This thread's batch; data is NULL while batching is off. */
static _Thread_local struct {
    char *data;
    size_t len;
} batch;

void tr_log_flush(void)
{
    if (batch.data && batch.len) {
        write_all(batch.data, batch.len);
        batch.len = 0;
    }
}

void tr_log_buffer_thread(int on)
{
    if (on && !batch.data) {
        batch.data = tr_xmalloc(BATCH_BYTES);
        batch.len = 0;
    } else if (!on && batch.data) {
        tr_log_flush();
        free(batch.data);
        batch.data = NULL;
    }
}

/* Hands a finished line to stderr, through the batch when there is one. */
static void output(tr_log_level_t level, const char *line, size_t len)
{
    if (!batch.data) {
        write_all(line, len);
        return;
    }
    if (batch.len + len > BATCH_BYTES) tr_log_flush();
    if (len > BATCH_BYTES) {
        write_all(line, len);
        return;
    }
    memcpy(batch.data + batch.len, line, len);
    batch.len += len;
    if (level >= TR_LOG_ERROR) tr_log_flush();
}

/* The current time as RFC 3339. The date-and-seconds part is formatted once
 * per second per thread; only the milliseconds change between lines. */
static void format_now(char out[32])
{
    static _Thread_local int64_t cached_sec = -1;
    static _Thread_local char cached[32];
    int64_t now = tr_now_ms();
    if (now / 1000 != cached_sec) {
        cached_sec = now / 1000;
        tr_time_format(cached_sec * 1000, cached); /* "...:SS.000Z" */
    }
    int ms = (int)(now % 1000);
    memcpy(out, cached, 20); /* "YYYY-MM-DDTHH:MM:SS." */
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/* Starts a line: ts, level, service and msg. */
static void line_begin(line_t *l, tr_log_level_t level, const char *msg, size_t msg_len)
{
    char ts[32];
    format_now(ts);
    /* The fixed prefix always fits in the stack buffer. */
    l->len = (size_t)snprintf(l->data, l->cap, "{\"ts\":\"%s\",\"level\":\"%s\"%.*s,\"msg\":", ts,
                              level_names[level], (int)service_json_len, service_json);
    if (!line_put_string(l, msg, msg_len)) l->truncated = true;
}

/* Closes the line, hands it to stderr and releases its memory. */
static void line_end(line_t *l, tr_log_level_t level)
{
    static const char trunc_tail[] = ",\"log_truncated\":true";
    line_room(l, TAIL_RESERVE, LOG_LINE_MAX);
    if (l->truncated) {
        memcpy(l->data + l->len, trunc_tail, sizeof trunc_tail - 1);
        l->len += sizeof trunc_tail - 1;
    }
    l->data[l->len++] = '}';
    l->data[l->len++] = '\n';
    output(level, l->data, l->len);
    if (l->heap) free(l->data);
}

static void emit(tr_log_level_t level, const char *msg, size_t msg_len, json_t *fields)
{
    char stack[LOG_STACK_BYTES];
    line_t l = {.data = stack, .cap = sizeof stack};
    line_begin(&l, level, msg, msg_len);
    if (!l.truncated && json_is_object(fields)) line_put_fields(&l, fields);
    line_end(&l, level);
}

/* Writes ,"key": for a field; false when it does not fit. */
static bool line_put_key(line_t *l, const char *key)
{
    if (!line_put(l, ",", 1) || !line_put_string(l, key, strlen(key))) return false;
    return line_put(l, ":", 1);
}

/* Decimal text of v into end-backwards buffer; returns the start. */
static char *format_int(int64_t v, char *end)
{
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *p = end;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return p;
}

static bool line_put_field(line_t *l, const tr_log_field_t *f)
{
    char num[32];
    char *end = num + sizeof(num), *p;
    size_t mark = l->len;
    bool ok = !is_reserved_key(f->key) && line_put_key(l, f->key);
    switch (f->type) {
    case TR_LOGF_STR:
        ok = ok && line_put_string(l, f->str ? f->str : "", f->str ? strlen(f->str) : 0);
        break;
    case TR_LOGF_INT:
        p = format_int(f->num, end);
        ok = ok && line_put(l, p, (size_t)(end - p));
        break;
    case TR_LOGF_MILLIS: /* num is microseconds: print ms with three decimals */
        p = format_int(f->num % 1000 + 1000, end); /* "1ddd": keeps leading zeros */
        *p = '.';
        p = format_int(f->num / 1000, p);
        ok = ok && f->num >= 0 && line_put(l, p, (size_t)(end - p));
        break;
    }
    if (!ok) l->len = mark;
    return ok;
}

void tr_log_fields(tr_log_level_t level, const char *msg, const tr_log_field_t *fields, size_t n)
{
    if (!tr_log_enabled(level)) return;
    char stack[LOG_STACK_BYTES];
    line_t l = {.data = stack, .cap = sizeof stack};
    if (!msg) msg = "";
    line_begin(&l, level, msg, strlen(msg));
    for (size_t i = 0; i < n && !l.truncated; i++)
        if (!line_put_field(&l, &fields[i])) l.truncated = true;
    line_end(&l, level);
}

void tr_log_init(const char *service, tr_log_level_t level)
{
    if ((int)level < TR_LOG_DEBUG || level > TR_LOG_ERROR) level = TR_LOG_INFO;
    atomic_store(&min_level, (int)level);

    char stack[sizeof service_json];
    line_t l = {.data = stack, .cap = sizeof stack};
    const char *name = service ? service : "";
    size_t n = strnlen(name, SERVICE_MAX);
    while (n > 0 && (name[n] & 0xc0) == 0x80)
        n--; /* do not cut a multi-byte character in half */
    line_put(&l, ",\"service\":", 11);
    line_put_string(&l, name, n);
    memcpy(service_json, l.data, l.len);
    service_json_len = l.len;
}

int tr_log_parse_level(const char *text, tr_log_level_t *out)
{
    if (!text) return -EINVAL;
    for (int i = TR_LOG_DEBUG; i <= TR_LOG_ERROR; i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            *out = (tr_log_level_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

int tr_log_enabled(tr_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed) &&
           level <= TR_LOG_ERROR;
}

void tr_log_json(tr_log_level_t level, const char *msg, json_t *fields)
{
    if (tr_log_enabled(level)) {
        if (!msg) msg = "";
        emit(level, msg, strlen(msg), fields);
    }
    json_decref(fields);
}

void tr_log(tr_log_level_t level, const char *fmt, ...)
{
    if (!tr_log_enabled(level)) return;
    char stack[1024];
    char *msg = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof stack) {
        /* Longer than a line can carry anyway: emit() will cut it. */
        size_t size = (size_t)n < LOG_LINE_MAX ? (size_t)n + 1 : LOG_LINE_MAX;
        msg = tr_xmalloc(size);
        va_start(ap, fmt);
        vsnprintf(msg, size, fmt, ap);
        va_end(ap);
        n = (int)(size - 1);
    }
    emit(level, msg, (size_t)n, NULL);
    if (msg != stack) free(msg);
}

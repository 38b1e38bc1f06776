/*
 * fuzz_request_stream.c - libFuzzer target for the parser's streaming paths:
 * stopping at the headers (TR_HTTP_HEAD_DEFER), then reading the body in
 * BUFFER, STREAM or DISCARD mode with a sink that pauses, and empty feeds
 * to let a paused message finish, as the server drives them for requests
 * claimed by its on_headers hook.
 *
 * Input byte 0 picks how the rest is split into reads (0 = all at once),
 * byte 1 the body mode (low 2 bits), the body limit (next 2 bits) and how
 * often the sink pauses (high 4 bits, 0 = never). The target traps when the
 * parser consumes more than it was given, stops making progress, or hands
 * the sink a different number of bytes than it counts as body. A chunked
 * body the parser accepts in BUFFER mode is also decoded by a small lax
 * reference decoder from the raw bytes (ref_dechunk); the two must agree,
 * so whatever the parser accepts (extensions, trailers, any split) means
 * what it says. Seeds: tests/fuzz/corpus/request_stream/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kit/http_parser.h"

#define MAX_HEADER_BYTES 512

typedef struct sink {
    uint64_t bytes;
    unsigned pieces;
    unsigned pause_every;
} sink_t;

static int defer(tr_http_parser_t *p, void *ctx, size_t *max_body)
{
    (void)p;
    (void)ctx;
    (void)max_body;
    return TR_HTTP_HEAD_DEFER;
}

static int on_data(void *ctx, const char *data, size_t len)
{
    sink_t *s = ctx;
    if (len == 0 || !data) __builtin_trap();
    s->bytes += len;
    s->pieces++;
    return s->pause_every && s->pieces % s->pause_every == 0;
}

/* Lax reference de-chunking of raw[0, n): sizes in hex, everything up to
 * the LF ending a size line skipped (extensions), data, CRLF; trailers after
 * the last chunk ignored. Returns the body length, or -1 when raw is not a
 * chunked body. Extension values cannot hold CR or LF, so the first LF ends
 * the size line. */
static long ref_dechunk(const char *raw, size_t n, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    for (;;) {
        uint64_t size = 0;
        size_t digits = 0;
        for (; i < n; i++, digits++) {
            char ch = raw[i];
            int v = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (v < 0) break;
            if (size > (UINT64_MAX >> 4)) return -1;
            size = size * 16 + (uint64_t)v;
        }
        const char *lf = i < n ? memchr(raw + i, '\n', n - i) : NULL;
        if (!digits || !lf || lf[-1] != '\r') return -1;
        i = (size_t)(lf - raw) + 1;
        if (size == 0) return (long)o;
        if (size > n - i || size > cap - o) return -1;
        memcpy(out + o, raw + i, size);
        o += size;
        i += size;
        if (n - i < 2 || raw[i] != '\r' || raw[i + 1] != '\n') return -1;
        i += 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char ref[1 << 16];
    size_t body_start = 0;
    static const size_t limits[4] = {0, 16, 300, 1 << 20};
    static const tr_http_body_mode_t modes[4] = {TR_HTTP_BODY_STREAM, TR_HTTP_BODY_BUFFER,
                                                 TR_HTTP_BODY_DISCARD, TR_HTTP_BODY_STREAM};
    tr_http_parser_t p;
    sink_t sink = {0};

    if (size < 2) return 0;
    size_t piece = data[0];
    tr_http_body_mode_t mode = modes[data[1] & 3];
    size_t limit = limits[(data[1] >> 2) & 3];
    sink.pause_every = data[1] >> 4;
    const char *in = (const char *)data + 2;
    size_t len = size - 2, off = 0, steps = 0;

    tr__http_parser_init(&p, MAX_HEADER_BYTES, 4096, defer, &sink);
    p.on_data = on_data;
    while (off < len || p.paused) {
        if (++steps > 4 * size + 64) __builtin_trap(); /* no progress */
        size_t n = len - off;
        if (piece && n > piece) n = piece;
        size_t used = 0;
        tr_http_parse_result_t r = tr__http_parser_feed(&p, in + off, n, &used);
        if (used > n) __builtin_trap();
        off += used;
        if (r == TR_HTTP_FAILED) break;
        if (r == TR_HTTP_HEADERS) {
            if (p.method == NULL || p.path == NULL) __builtin_trap();
            if (tr__http_parser_set_body(&p, mode, limit) != 0) break;
            body_start = off;
            continue;
        }
        if (r == TR_HTTP_REQUEST) {
            if (mode == TR_HTTP_BODY_STREAM && sink.bytes != p.body_seen) __builtin_trap();
            if (mode == TR_HTTP_BODY_BUFFER && p.body_len != p.body_seen) __builtin_trap();
            if (p.body_seen > limit) __builtin_trap();
            if (p.chunked && mode == TR_HTTP_BODY_BUFFER && p.body_len <= sizeof(ref)) {
                long n = ref_dechunk(in + body_start, off - body_start, ref, sizeof(ref));
                if (n < 0 || (size_t)n != p.body_len || memcmp(ref, p.body, p.body_len) != 0)
                    __builtin_trap();
            }
            sink.bytes = 0;
            tr__http_parser_next(&p);
        }
    }
    tr__http_parser_free(&p);
    return 0;
}

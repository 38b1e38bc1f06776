/*
 * http_parser.c - see http_parser.h.
 *
 * DESIGN NOTES
 *
 * 1. One request at a time. on_message_complete returns HPE_PAUSED, so
 *    llhttp_execute() stops right after the last byte of a request and
 *    llhttp_get_error_pos() tells how much it used; tr__http_parser_next()
 *    resumes. Pipelined bytes are therefore never parsed before the previous
 *    request was answered.
 *
 * 2. Exact head limit without lookahead. llhttp has no header size limit of
 *    its own and tells nothing about where the head ended. While the headers
 *    are incomplete we hand llhttp at most (max_header_bytes - head_bytes)
 *    bytes per call: if the headers complete within that slice the head was
 *    within the limit; if the whole allowance is consumed without completing
 *    them, the head is too large. llhttp is incremental, so slicing the
 *    input anywhere is harmless.
 *
 * 3. Framing overhead. Chunk sizes (with leading zeros), chunk extensions and
 *    trailers are not body but still arrive; they are parsed and dropped, and
 *    their total is capped at max_header_bytes + the body limit so a client
 *    cannot keep a request open forever on framing alone.
 *
 * 4. Stopping early. Returning HPE_PAUSED from on_headers_complete (the head
 *    callback deferred the decision) or from on_body (the STREAM sink asked
 *    to stop) makes llhttp_execute() return at once with error_pos just past
 *    the headers or the body piece; llhttp_resume() continues from exactly
 *    there. Work llhttp still owes without more input (the end of a message
 *    whose last body byte was just delivered) happens on the next execute,
 *    which may be given no bytes, hence `paused` and empty feeds.
 *
 * 5. Strings are NUL-separated in one head buffer. Offsets are recorded while
 *    it grows and turned into pointers once the headers are complete; nothing
 *    is appended to it afterwards (trailers are dropped), so the pointers stay
 *    valid until tr__http_parser_next().
 *
 * 6. Chunked bodies are decoded here, not by llhttp. The llhttp Debian ships
 *    (8.1) accepts any two bytes after chunk data and refuses valid chunk
 *    extensions ("5;a=1;b=2", "5 ;x=y"), both against RFC 9112 §7.1. So
 *    on_headers_complete pauses llhttp when the body is chunked and the
 *    decoder below (chunk_feed, one byte-level state machine, fully
 *    incremental so any split of the input gives the same verdict) reads
 *    sizes, extensions, data, the CRLF after the data and trailers. llhttp
 *    is reset before the next request (tr__http_parser_next), so its state
 *    after the pause never matters.
 *
 * 7. Transfer-Encoding is judged here too (te_check, per field line): any
 *    coding but chunked is 501, chunked twice is 400. llhttp's lenient
 *    transfer-encoding mode is on only so that it does not refuse
 *    "chunked, gzip" with a 400 before we can answer 501; no message with a
 *    coding other than a single chunked gets past te_check.
 */
#include "kit/http_parser.h"
#include "kit/alloc.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Buffers larger than this are released between requests. */
#define KEEP_BUFFER_BYTES         (64 * 1024)
#define DEFAULT_MAX_HEADER_FIELDS 100

/* States of the chunked body decoder (note 6); names say what is expected. */
enum {
    CH_SIZE,        /* a hex digit (the first one, or more of them) */
    CH_EXT_WS,      /* BWS, then ';' or CR */
    CH_EXT_NAME0,   /* BWS, then the first byte of an extension name */
    CH_EXT_NAME,    /* more name, BWS, '=', ';' or CR */
    CH_EXT_EQ,      /* after a name and BWS: '=', ';' or CR */
    CH_EXT_VAL0,    /* BWS, then a token or a quoted-string */
    CH_EXT_VAL,     /* more token, then BWS, ';' or CR */
    CH_EXT_QUOTED,  /* inside a quoted-string */
    CH_EXT_ESCAPED, /* after a backslash in a quoted-string */
    CH_SIZE_LF,     /* LF ending the chunk-size line */
    CH_DATA,        /* chunk_left data bytes */
    CH_DATA_CR,     /* CR after the data */
    CH_DATA_LF,     /* LF after the data */
    CH_TRAILER0,    /* a trailer field name, or CR ending the message */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF, /* LF ending a trailer line */
    CH_END_LF,     /* LF ending the message */
    CH_DONE
};

static tr_http_parser_t *parser_of(llhttp_t *ll)
{
    return ll->data;
}

/* Records why the stream fails (the first reason wins) and makes the llhttp
 * callback report an error. */
static int fail(tr_http_parser_t *p, int status, const char *reason)
{
    if (!p->error_status) {
        p->error_status = status;
        p->error_reason = reason;
    }
    return -1;
}

static int head_append(tr_http_parser_t *p, const void *data, size_t len)
{
    if (tr_buf_append(&p->head, data, len) != 0) return fail(p, 431, "headers too large");
    return 0;
}

static int on_message_begin(llhttp_t *ll)
{
    parser_of(ll)->started = true;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    parser_of(ll)->url_seen = true;
    return head_append(parser_of(ll), at, len);
}

static int on_url_complete(llhttp_t *ll)
{
    tr_http_parser_t *p = parser_of(ll);
    p->url_done = true;
    int rc = head_append(p, "", 1);
    p->cur_name_off = p->head.len;
    return rc;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    tr_http_parser_t *p = parser_of(ll);
    return p->headers_done ? 0 : head_append(p, at, len);
}

/* RFC 9110 §5.6.2 token characters. llhttp's lenient (default) mode lets a
 * space or other non-token byte into a field name ("Host : x"); RFC 9112
 * §5.1 says such a request must be refused with 400, and letting it through
 * would hand a proxy a header it cannot forward. */
static bool is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr(extra, c));
}

static bool is_token(const char *s, size_t len)
{
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)s[i])) return false;
    return true;
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 3986 uri-host [ ":" port ]: an IP-literal in brackets or a reg-name
 * (unreserved, pct-encoded, sub-delims), then optional digits. Empty is
 * valid (RFC 9112 §3.2: a target without authority). */
static bool is_valid_host(const char *s)
{
    static const char sub_delims[] = "!$&'()*+,;=";
    size_t i = 0;
    if (s[0] == '[') {
        for (i = 1; s[i] && s[i] != ']'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!(is_tchar(c) || c == ':' || strchr(sub_delims, c))) return false;
        }
        if (s[i] != ']' || i == 1) return false;
        i++;
    } else {
        for (; s[i] && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (!isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]))
                    return false;
                i += 2;
            } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                         (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_' || c == '~' ||
                         (c && strchr(sub_delims, c)))) {
                return false;
            }
        }
    }
    if (s[i] == ':')
        for (i++; s[i]; i++)
            if (s[i] < '0' || s[i] > '9') return false;
    return s[i] == '\0';
}

/* Looks for obsolete line folding (RFC 9112 §5.2) in head bytes: a line of
 * the head that begins with SP or HTAB. llhttp joins such a line into the
 * previous value without a trace in what it hands us, so the raw bytes are
 * watched instead, up to the blank line that ends the head; p->fold_scan
 * carries the state across slices (0 in a line, 1 after its LF, 2 past the
 * head). Returns true when a fold was seen. */
static bool head_has_fold(tr_http_parser_t *p, const char *data, size_t len)
{
    for (size_t i = 0; i < len && p->fold_scan != 2; i++) {
        char c = data[i];
        if (p->fold_scan == 1) {
            if (c == ' ' || c == '\t') return true;
            p->fold_scan = (c == '\r' || c == '\n') ? 2 : 0;
        }
        if (c == '\n' && p->fold_scan == 0) p->fold_scan = 1;
    }
    return false;
}

/* One Transfer-Encoding field line (note 7): a comma-separated list whose
 * every element must be "chunked". Returns 0, or the status to fail with. */
static int te_check(tr_http_parser_t *p, const char *v)
{
    p->has_te = true;
    for (;;) {
        while (is_ows((unsigned char)*v))
            v++;
        size_t n = 0;
        while (v[n] && v[n] != ',' && !is_ows((unsigned char)v[n]))
            n++;
        const char *after = v + n;
        while (is_ows((unsigned char)*after))
            after++;
        if (n == 0 || (*after && *after != ',')) return 400;
        if (n != 7 || strncasecmp(v, "chunked", 7) != 0) return 501;
        if (++p->nte > 1) return 400;
        if (!*after) return 0;
        v = after + 1;
    }
}

static int on_header_field_complete(llhttp_t *ll)
{
    tr_http_parser_t *p = parser_of(ll);
    if (p->headers_done) return 0;
    if (!is_token(p->head.data + p->cur_name_off, p->head.len - p->cur_name_off))
        return fail(p, 400, "invalid header name");
    int rc = head_append(p, "", 1);
    p->cur_value_off = p->head.len;
    return rc;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    tr_http_parser_t *p = parser_of(ll);
    return p->headers_done ? 0 : head_append(p, at, len);
}

static int on_header_value_complete(llhttp_t *ll)
{
    tr_http_parser_t *p = parser_of(ll);
    if (p->headers_done) return 0;
    /* llhttp skips leading whitespace but keeps trailing whitespace. */
    while (p->head.len > p->cur_value_off &&
           (p->head.data[p->head.len - 1] == ' ' || p->head.data[p->head.len - 1] == '\t'))
        p->head.len--;
    int rc = head_append(p, "", 1);
    if (rc) return rc;
    const char *name = p->head.data + p->cur_name_off;
    const char *value = p->head.data + p->cur_value_off;
    if (p->noffs >= p->max_header_fields) return fail(p, 431, "too many header fields");
    if (strcasecmp(name, "host") == 0) p->nhost++;
    if (strcasecmp(name, "transfer-encoding") == 0) {
        int status = te_check(p, value);
        if (status)
            return fail(p, status,
                        status == 501 ? "transfer coding not implemented"
                                      : "invalid transfer-encoding");
    }
    if (p->noffs == p->hdr_cap) {
        p->hdr_cap = p->hdr_cap ? p->hdr_cap * 2 : 16;
        p->offs = tr_xrealloc(p->offs, p->hdr_cap * sizeof(*p->offs));
        p->hdrs = tr_xrealloc(p->hdrs, p->hdr_cap * sizeof(*p->hdrs));
    }
    p->offs[p->noffs].name = p->cur_name_off;
    p->offs[p->noffs].value = p->cur_value_off;
    p->noffs++;
    p->cur_name_off = p->head.len;
    return 0;
}

/* Appends a copy of head[off, off+len) to the head buffer. Copies through a
 * small stack buffer because appending may move the source. */
static int head_append_self(tr_http_parser_t *p, size_t off, size_t len)
{
    char chunk[256];
    while (len > 0) {
        size_t n = len < sizeof(chunk) ? len : sizeof(chunk);
        memcpy(chunk, p->head.data + off, n);
        int rc = head_append(p, chunk, n);
        if (rc) return rc;
        off += n;
        len -= n;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    tr_http_parser_t *p = parser_of(ll);
    p->headers_done = true;
    if (ll->http_major != 1) return fail(p, 400, "unsupported HTTP version");
    if (!p->head.data) return fail(p, 400, "empty request-target");

    /* Offsets only: appending the path copy may move the buffer. */
    const char *t = p->head.data + p->url_off;
    size_t target_len = strlen(t);
    size_t path_start = 0;
    bool root_only = false;
    const char *scheme_end = t[0] != '/' ? strstr(t, "://") : NULL;
    if (scheme_end) {
        /* absolute-form (RFC 9112 3.2.2): route on the path after the
         * authority; "http://host" alone means "/". */
        size_t authority = (size_t)(scheme_end - t) + 3;
        path_start = authority + strcspn(t + authority, "/?");
        root_only = t[path_start] != '/';
    }
    const char *q = memchr(t + path_start, '?', target_len - path_start);
    size_t query_off = q ? (size_t)(q - t) + 1 : 0;
    size_t path_len = root_only ? 1 : (q ? (size_t)(q - t) : target_len) - path_start;
    size_t path_off = p->head.len;
    int rc =
        root_only ? head_append(p, "/", 1) : head_append_self(p, p->url_off + path_start, path_len);
    if (rc == 0) rc = head_append(p, "", 1);
    if (rc) return rc;

    /* The head buffer no longer moves: hand out pointers. */
    char *base = p->head.data;
    p->target = base + p->url_off;
    p->path = base + path_off;
    p->path_len = path_len;
    p->query = q ? p->target + query_off : "";
    for (size_t i = 0; i < p->noffs; i++) {
        p->hdrs[i].name = base + p->offs[i].name;
        p->hdrs[i].value = base + p->offs[i].value;
        if (strcasecmp(p->hdrs[i].name, "expect") == 0 &&
            strcasecmp(p->hdrs[i].value, "100-continue") == 0)
            p->expect_continue = true;
    }
    p->headers = p->hdrs;
    p->nheaders = p->noffs;
    p->method = llhttp_method_name((llhttp_method_t)ll->method);
    p->http_minor = ll->http_minor;
    p->has_content_length = (ll->flags & F_CONTENT_LENGTH) != 0;
    p->content_length = p->has_content_length ? ll->content_length : 0;
    p->chunked = (ll->flags & F_CHUNKED) != 0;

    /* RFC 9112 §3.2: exactly one valid Host on HTTP/1.1, at most one ever. */
    if (p->nhost > 1) return fail(p, 400, "more than one Host header");
    if (p->nhost == 0 && ll->http_minor >= 1) return fail(p, 400, "missing Host header");
    for (size_t i = 0; i < p->noffs; i++)
        if (strcasecmp(p->hdrs[i].name, "host") == 0 && !is_valid_host(p->hdrs[i].value))
            return fail(p, 400, "invalid Host header");
    /* §6.1: Transfer-Encoding decides the framing only on HTTP/1.1 and never
     * together with Content-Length (request smuggling); it must end in
     * chunked, which te_check left as the only possible coding. */
    if (p->has_te && (p->has_content_length || ll->http_minor == 0 || !p->chunked))
        return fail(p, 400, "invalid message framing");
    /* llhttp sets `upgrade` before this callback runs. After an upgrade or
     * CONNECT the bytes that follow are another protocol. */
    p->keep_alive = llhttp_should_keep_alive(ll) && !ll->upgrade;

    size_t max_body = p->default_max_body;
    if (p->on_head) {
        int status = p->on_head(p, p->ctx, &max_body);
        if (status == TR_HTTP_HEAD_DEFER) {
            p->paused = true;
            p->in_chunks = p->chunked;
            return HPE_PAUSED;
        }
        if (status) return fail(p, status, "rejected at headers");
    }
    p->max_body = max_body;
    if (p->has_content_length && p->content_length > max_body)
        return fail(p, 413, "request body too large");
    if (p->chunked) {
        /* The decoder takes the body from here (note 6). */
        p->in_chunks = true;
        return HPE_PAUSED;
    }
    return 0;
}

/* Takes body bytes in every mode. Returns 0 to go on, 1 when the STREAM sink
 * asked to stop (paused is then set), -1 when the stream failed. */
static int body_bytes(tr_http_parser_t *p, const char *at, size_t len)
{
    if (len == 0) return 0;
    if (len > p->max_body - p->body_seen) return fail(p, 413, "request body too large");
    p->body_seen += len;
    switch (p->body_mode) {
    case TR_HTTP_BODY_BUFFER:
        if (tr_buf_append(&p->body_buf, at, len) != 0)
            return fail(p, 413, "request body too large");
        break;
    case TR_HTTP_BODY_STREAM:
        if (p->on_data && p->on_data(p->ctx, at, len)) {
            p->paused = true;
            return 1;
        }
        break;
    case TR_HTTP_BODY_DISCARD:
        break;
    }
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    int rc = body_bytes(parser_of(ll), at, len);
    return rc > 0 ? HPE_PAUSED : rc;
}

static void message_done(tr_http_parser_t *p, bool keep_alive)
{
    p->ready = true;
    p->keep_alive = keep_alive;
    p->body = p->body_buf.data ? p->body_buf.data : "";
    p->body_len = p->body_buf.len;
}

static int on_message_complete(llhttp_t *ll)
{
    message_done(parser_of(ll), llhttp_should_keep_alive(ll) && !ll->upgrade);
    return HPE_PAUSED;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* qdtext / quoted-pair bytes of RFC 9110 §5.6.4 (HTAB, SP, VCHAR, obs-text). */
static bool is_qchar(unsigned char c)
{
    return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);
}

/* After a chunk extension element: BWS, ';', or the CR ending the line. */
static int ext_next(unsigned char c, int ows_state)
{
    if (is_ows(c)) return ows_state;
    if (c == ';') return CH_EXT_NAME0;
    if (c == '\r') return CH_SIZE_LF;
    return -1;
}

/* The chunked body decoder (note 6): consumes bytes of data[0, len) until
 * the input ends (0), the sink pauses (1), the message ends (ready is set;
 * 0) or the stream fails (-1, with the reason recorded). *used tells how
 * many bytes it took. */
static int chunk_feed(tr_http_parser_t *p, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    int rc = 0;
    const char *bad = "malformed chunked body";

    while (i < len && p->chunk_state != CH_DONE) {
        unsigned char c = (unsigned char)data[i];
        int next = -1;
        switch (p->chunk_state) {
        case CH_SIZE: {
            int h = hex_value(c);
            if (h >= 0) {
                if (p->chunk_left > (UINT64_MAX >> 4)) {
                    bad = "chunk size too large";
                    break;
                }
                p->chunk_left = (p->chunk_left << 4) | (uint64_t)h;
                p->chunk_digits++;
                next = CH_SIZE;
            } else if (p->chunk_digits > 0) {
                next = ext_next(c, CH_EXT_WS);
            }
            if (next < 0 && p->chunk_digits == 0) bad = "invalid chunk size";
            break;
        }
        case CH_EXT_WS:
            next = ext_next(c, CH_EXT_WS);
            break;
        case CH_EXT_NAME0:
            next = is_ows(c) ? CH_EXT_NAME0 : is_tchar(c) ? CH_EXT_NAME : -1;
            break;
        case CH_EXT_NAME:
            next = is_tchar(c) ? CH_EXT_NAME : c == '=' ? CH_EXT_VAL0 : ext_next(c, CH_EXT_EQ);
            break;
        case CH_EXT_EQ:
            next = c == '=' ? CH_EXT_VAL0 : ext_next(c, CH_EXT_EQ);
            break;
        case CH_EXT_VAL0:
            next = is_ows(c)     ? CH_EXT_VAL0
                   : c == '"'    ? CH_EXT_QUOTED
                   : is_tchar(c) ? CH_EXT_VAL
                                 : -1;
            break;
        case CH_EXT_VAL:
            next = is_tchar(c) ? CH_EXT_VAL : ext_next(c, CH_EXT_WS);
            break;
        case CH_EXT_QUOTED:
            next = c == '"'      ? CH_EXT_WS
                   : c == '\\'   ? CH_EXT_ESCAPED
                   : is_qchar(c) ? CH_EXT_QUOTED
                                 : -1;
            break;
        case CH_EXT_ESCAPED:
            next = is_qchar(c) ? CH_EXT_QUOTED : -1;
            break;
        case CH_SIZE_LF:
            if (c != '\n') break;
            if (p->chunk_left == 0) {
                next = CH_TRAILER0;
            } else if (p->chunk_left > p->max_body - p->body_seen) {
                rc = fail(p, 413, "request body too large");
                goto out;
            } else {
                next = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t n = len - i;
            if (n > p->chunk_left) n = (size_t)p->chunk_left;
            p->chunk_left -= n;
            if (p->chunk_left == 0) p->chunk_state = CH_DATA_CR;
            rc = body_bytes(p, data + i, n);
            if (rc < 0) goto out;
            i += n;
            if (rc > 0) goto out;
            continue;
        }
        case CH_DATA_CR:
            next = c == '\r' ? CH_DATA_LF : -1;
            if (next < 0) bad = "chunk data not followed by CRLF";
            break;
        case CH_DATA_LF:
            next = c == '\n' ? CH_SIZE : -1;
            if (next < 0) bad = "chunk data not followed by CRLF";
            p->chunk_digits = 0;
            break;
        case CH_TRAILER0:
            next = c == '\r' ? CH_END_LF : is_tchar(c) ? CH_TRAILER_NAME : -1;
            break;
        case CH_TRAILER_NAME:
            next = is_tchar(c) ? CH_TRAILER_NAME : c == ':' ? CH_TRAILER_VALUE : -1;
            break;
        case CH_TRAILER_VALUE:
            next = c == '\r' ? CH_TRAILER_LF : is_qchar(c) ? CH_TRAILER_VALUE : -1;
            break;
        case CH_TRAILER_LF:
            next = c == '\n' ? CH_TRAILER0 : -1;
            break;
        case CH_END_LF:
            next = c == '\n' ? CH_DONE : -1;
            break;
        }
        if (next < 0) {
            rc = fail(p, 400, bad);
            goto out;
        }
        p->chunk_state = next;
        i++;
    }
    if (p->chunk_state == CH_DONE) {
        p->in_chunks = false;
        message_done(p, p->keep_alive);
    }
out:
    *used = i;
    return rc;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void reset_request(tr_http_parser_t *p)
{
    p->method = "";
    p->target = p->path = p->query = p->body = "";
    p->path_len = p->body_len = 0;
    p->http_minor = 1;
    p->headers = NULL;
    p->nheaders = p->noffs = 0;
    p->content_length = 0;
    p->has_content_length = p->chunked = p->expect_continue = false;
    p->keep_alive = p->started = p->headers_done = p->ready = p->paused = false;
    p->url_seen = p->url_done = p->has_te = p->in_chunks = false;
    p->nhost = p->nte = 0;
    p->fold_scan = 0;
    p->chunk_state = CH_SIZE;
    p->chunk_left = 0;
    p->chunk_digits = 0;
    p->head_bytes = p->body_raw = 0;
    p->body_seen = 0;
    p->body_mode = TR_HTTP_BODY_BUFFER;
    p->max_body = p->default_max_body;
    p->url_off = p->cur_name_off = p->cur_value_off = 0;
    if (p->head.cap > KEEP_BUFFER_BYTES) tr_buf_free(&p->head);
    if (p->body_buf.cap > KEEP_BUFFER_BYTES) tr_buf_free(&p->body_buf);
    tr_buf_reset(&p->head);
    tr_buf_reset(&p->body_buf);
}

void tr__http_parser_init(tr_http_parser_t *p, size_t max_header_bytes, size_t default_max_body,
                          tr_http_head_cb on_head, void *ctx)
{
    memset(p, 0, sizeof(*p));
    p->max_header_bytes = max_header_bytes ? max_header_bytes : 1;
    p->max_header_fields = DEFAULT_MAX_HEADER_FIELDS;
    p->default_max_body = default_max_body;
    p->on_head = on_head;
    p->ctx = ctx;
    /* The stored head never exceeds the raw head plus a NUL per string and
     * the path copy; the raw limit is what is enforced (note 2). */
    tr_buf_init(&p->head, 2 * p->max_header_bytes + 64);
    tr_buf_init(&p->body_buf, 0);
    llhttp_init(&p->ll, HTTP_REQUEST, &settings);
    llhttp_set_lenient_transfer_encoding(&p->ll, 1); /* note 7 */
    p->ll.data = p;
    reset_request(p);
}

void tr__http_parser_set_max_header_fields(tr_http_parser_t *p, size_t max_header_fields)
{
    p->max_header_fields = max_header_fields ? max_header_fields : DEFAULT_MAX_HEADER_FIELDS;
}

void tr__http_parser_free(tr_http_parser_t *p)
{
    tr_buf_free(&p->head);
    tr_buf_free(&p->body_buf);
    free(p->offs);
    free(p->hdrs);
    p->offs = NULL;
    p->hdrs = NULL;
    p->hdr_cap = 0;
}

static tr_http_parse_result_t set_failed(tr_http_parser_t *p, int status, const char *reason)
{
    fail(p, status, reason);
    p->failed = true;
    return TR_HTTP_FAILED;
}

tr_http_parse_result_t tr__http_parser_feed(tr_http_parser_t *p, const char *data, size_t len,
                                            size_t *consumed)
{
    tr_http_parse_result_t result = TR_HTTP_NEED_MORE;
    size_t off = 0;
    /* llhttp must run once even without input when it stopped early (note 4);
     * a span restarts at the input pointer, which must not be NULL. */
    bool must_run = p->paused;

    if (p->failed) {
        result = TR_HTTP_FAILED;
        goto out;
    }
    if (p->ready) {
        result = TR_HTTP_REQUEST;
        goto out;
    }
    if (len == 0) data = "";
    if (p->paused) {
        llhttp_resume(&p->ll);
        p->paused = false;
    }
    while (off < len || must_run) {
        must_run = false;
        if (p->in_chunks) {
            size_t used = 0;
            int rc = chunk_feed(p, data + off, len - off, &used);
            off += used;
            p->body_raw += used;
            if (rc < 0) {
                result = set_failed(p, 400, "malformed chunked body");
                goto out;
            }
            if (p->body_raw - p->body_seen > p->max_header_bytes + p->max_body) {
                result = set_failed(p, 413, "request framing too large");
                goto out;
            }
            if (p->ready) {
                result = TR_HTTP_REQUEST;
                goto out;
            }
            if (p->paused) {
                result = TR_HTTP_PAUSED;
                goto out;
            }
            continue;
        }
        bool in_head = !p->headers_done;
        size_t n = len - off;
        if (in_head && n > p->max_header_bytes - p->head_bytes)
            n = p->max_header_bytes - p->head_bytes;

        if (in_head && head_has_fold(p, data + off, n)) {
            result = set_failed(p, 400, "obsolete line folding");
            goto out;
        }
        llhttp_errno_t err = llhttp_execute(&p->ll, data + off, n);
        size_t used = n;
        if ((err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) &&
            (p->ready || p->paused || p->in_chunks)) {
            used = (size_t)(llhttp_get_error_pos(&p->ll) - (data + off));
        } else if (err != HPE_OK) {
            result = set_failed(p, 400, llhttp_get_error_reason(&p->ll));
            off += used;
            goto out;
        }
        off += used;
        if (in_head) {
            if (!p->headers_done) p->head_bytes += used;
        } else {
            p->body_raw += used;
            /* Body bytes that shared a slice with the end of the head are
             * in body_seen but not in body_raw, hence the guard. */
            size_t overhead = p->body_raw > p->body_seen ? p->body_raw - p->body_seen : 0;
            if (overhead > p->max_header_bytes + p->max_body) {
                result = set_failed(p, 413, "request framing too large");
                goto out;
            }
        }
        if (p->ready) {
            result = TR_HTTP_REQUEST;
            goto out;
        }
        if (p->paused) {
            result = in_head ? TR_HTTP_HEADERS : TR_HTTP_PAUSED;
            goto out;
        }
        if (!p->headers_done && p->head_bytes >= p->max_header_bytes) {
            /* Still inside the request-target: the target is what is too long. */
            bool in_target = p->url_seen && !p->url_done;
            result = set_failed(p, in_target ? 414 : 431,
                                in_target ? "request-target too long" : "headers too large");
            goto out;
        }
    }
out:
    *consumed = off;
    return result;
}

void tr__http_parser_next(tr_http_parser_t *p)
{
    bool paused = p->ready || p->paused;
    bool own_body = p->chunked; /* llhttp was left paused after the head (note 6) */
    reset_request(p);
    if (own_body)
        llhttp_reset(&p->ll);
    else if (paused && llhttp_get_errno(&p->ll) == HPE_PAUSED)
        llhttp_resume(&p->ll);
}

int tr__http_parser_set_body(tr_http_parser_t *p, tr_http_body_mode_t mode, size_t max_body)
{
    int rc = 0;
    p->body_mode = mode;
    p->max_body = max_body;
    if (p->has_content_length && p->content_length > max_body) {
        set_failed(p, 413, "request body too large");
        rc = 413;
        goto out;
    }
    if (!p->chunked && p->content_length == 0) {
        /* No body: let llhttp reach the end of the message now. */
        size_t used = 0;
        tr_http_parse_result_t r = tr__http_parser_feed(p, "", 0, &used);
        if (r == TR_HTTP_FAILED) rc = p->error_status;
    }
out:
    return rc;
}

bool tr__http_parser_complete(const tr_http_parser_t *p)
{
    return p->ready;
}

/*
 * http_parser.h - incremental HTTP/1.1 request parser, free of sockets.
 *
 * A thin layer over llhttp that turns a byte stream into whole requests, one
 * at a time, under hard limits. The server feeds it whatever arrives; a
 * libFuzzer target feeds it arbitrary bytes. It never touches the network.
 *
 * STATES. Between tr__http_parser_init()/tr__http_parser_next() and the end
 * of a request the parser accumulates one request. tr__http_parser_feed()
 * returns:
 *   TR_HTTP_NEED_MORE  every byte was consumed, the request is not complete;
 *   TR_HTTP_REQUEST    a request is complete; *consumed tells how much of the
 *                      input it used. The rest (a pipelined request) must be
 *                      fed again after tr__http_parser_next(), which is how
 *                      pipelined requests are answered one by one, in order;
 *   TR_HTTP_FAILED     the stream cannot go on: answer error_status (400, 413,
 *                      431, or what the head callback returned) and close.
 *                      Every later feed fails the same way;
 *   TR_HTTP_HEADERS    the head callback returned TR_HTTP_HEAD_DEFER: the
 *                      headers are complete and parsing stopped right after
 *                      them; call tr__http_parser_set_body() before feeding
 *                      the rest;
 *   TR_HTTP_PAUSED     the body sink (on_data) asked to stop; *consumed tells
 *                      how much was used. Feed the rest later; a feed with no
 *                      bytes is valid and needed while `paused` is set (the
 *                      end of the message may be due without more input).
 *
 * BODY MODES (body_mode, chosen per request, changeable between feeds and
 * from inside on_data): BUFFER collects the body in body_buf (the default),
 * STREAM hands each de-chunked piece to on_data, DISCARD drops it. The body
 * limit holds in every mode.
 *
 * LIMITS. The request line plus headers may take at most max_header_bytes
 * raw bytes (counted on the wire, so whitespace padding counts too) -> 431,
 * or 414 when the limit is reached inside the request-target; at most
 * max_header_fields header fields (default 100) -> 431.
 * Framing after the head (chunk sizes and extensions, trailers) may exceed
 * the body by at most max_header_bytes + the body limit -> 413. The body limit is asked from the
 * head callback once the headers are complete (the router knows the route's limit by then); a
 * Content-Length above it fails at once, a chunked body fails as soon as it grows past it
 * -> 413.
 *
 * FRAMING (RFC 9112). Refused with 400: a missing Host on HTTP/1.1, more than
 * one Host, or a Host that is not uri-host[:port]; obsolete line folding;
 * Transfer-Encoding with Content-Length, on HTTP/1.0, or naming chunked twice;
 * a chunk whose data is not followed by CRLF, or a malformed chunk size,
 * extension or trailer. Refused with 501: any transfer coding but chunked
 * (gzip, identity, ...). Chunk extensions (any number, with BWS, token or
 * quoted-string values) and trailers are parsed and dropped.
 *
 * STORAGE. Everything a request exposes (method, target, path, query,
 * headers, a buffered body) lives in buffers owned by the parser and reused for the
 * next request, so a keep-alive connection does not allocate per request
 * once its buffers have grown. Pointers stay valid until the next call to
 * tr__http_parser_next() or tr__http_parser_free().
 */
#ifndef TR_HTTP_PARSER_H
#define TR_HTTP_PARSER_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/buf.h"
#include "kit/http.h"

typedef struct tr_http_parser tr_http_parser_t;

typedef enum tr_http_parse_result {
    TR_HTTP_NEED_MORE,
    TR_HTTP_REQUEST,
    TR_HTTP_FAILED,
    TR_HTTP_HEADERS,
    TR_HTTP_PAUSED
} tr_http_parse_result_t;

typedef enum tr_http_body_mode {
    TR_HTTP_BODY_BUFFER,
    TR_HTTP_BODY_STREAM,
    TR_HTTP_BODY_DISCARD
} tr_http_body_mode_t;

#define TR_HTTP_HEAD_DEFER (-1)

/* Called once per request when its headers are complete (method, target,
 * path, query, headers, expect_continue, content_length, chunked and
 * keep_alive are set). Sets *max_body (preset to the parser's default) and
 * returns 0 to go on, an HTTP status (e.g. 404) to fail the stream with that
 * status at once, or TR_HTTP_HEAD_DEFER to stop there (TR_HTTP_HEADERS) and
 * decide later with tr__http_parser_set_body(). */
typedef int (*tr_http_head_cb)(tr_http_parser_t *p, void *ctx, size_t *max_body);
/* Receives body bytes in TR_HTTP_BODY_STREAM mode (never 0 bytes); returns
 * non-zero to stop the feed right after them (TR_HTTP_PAUSED). */
typedef int (*tr_http_data_cb)(void *ctx, const char *data, size_t len);

/* Byte offsets of one header in the head buffer, kept until the headers are
 * complete because the buffer may move while it grows. */
typedef struct tr_http_header_off {
    size_t name;
    size_t value;
} tr_http_header_off_t;

struct tr_http_parser {
    /* ---- the current request; read-only for users ---- */
    const char *method; /* static string from llhttp, e.g. "GET" */
    const char *target; /* request-target as sent */
    const char *path;   /* target up to '?' (NUL-terminated copy) */
    size_t path_len;
    const char *query; /* after '?', "" when none */
    int http_minor;
    const tr_header_t *headers;
    size_t nheaders;
    const char *body; /* NUL-terminated, "" when none */
    size_t body_len;
    uint64_t content_length; /* valid when has_content_length */
    bool has_content_length;
    bool chunked;
    bool expect_continue; /* "Expect: 100-continue" was sent */
    bool keep_alive;      /* from the headers on: may another request follow? */
    bool started;         /* some byte of this request has been consumed */
    bool headers_done;    /* the head callback has run */
    int error_status;     /* set with TR_HTTP_FAILED */
    const char *error_reason;
    uint64_t body_seen; /* de-chunked body bytes parsed so far, in any mode */
    bool paused;        /* TR_HTTP_HEADERS or TR_HTTP_PAUSED is outstanding */

    /* ---- set by the user ---- */
    tr_http_body_mode_t body_mode; /* reset to BUFFER for every request */
    tr_http_data_cb on_data;       /* for STREAM mode; survives requests */

    /* ---- private ---- */
    llhttp_t ll;
    size_t max_header_bytes;
    size_t max_header_fields;
    size_t default_max_body;
    tr_http_head_cb on_head;
    void *ctx;
    size_t head_bytes; /* raw bytes of the head consumed so far */
    size_t body_raw;   /* raw bytes consumed after the head */
    size_t max_body;   /* this request's body limit */
    bool ready;
    bool failed;
    bool url_seen;  /* on_url ran: the request-target has begun */
    bool url_done;  /* ... and ended */
    unsigned nhost; /* Host header fields seen */
    unsigned nte;   /* "chunked" codings seen in Transfer-Encoding */
    bool has_te;    /* a Transfer-Encoding field was seen */
    int fold_scan;  /* obs-fold watch over the head's raw bytes (http_parser.c) */
    /* The chunked body decoder (http_parser.c, note 6). */
    bool in_chunks;      /* the body is chunked and the decoder owns the bytes */
    int chunk_state;     /* its state */
    uint64_t chunk_left; /* size being read, then data bytes left in the chunk */
    unsigned chunk_digits;
    size_t url_off;
    size_t cur_name_off;
    size_t cur_value_off;
    tr_buf_t head; /* target, header names and values, path copy; NUL-separated */
    tr_buf_t body_buf;
    tr_http_header_off_t *offs;
    size_t noffs;
    tr_header_t *hdrs;
    size_t hdr_cap;
};

/* Prepares p for the first request. on_head may be NULL (the body limit is
 * then default_max_body). Never fails; memory is allocated lazily. */
void tr__http_parser_init(tr_http_parser_t *p, size_t max_header_bytes, size_t default_max_body,
                          tr_http_head_cb on_head, void *ctx);
/* Sets the most header fields a request may carry (default 100; 0 means the
 * default); more -> 431. Call before feeding. */
void tr__http_parser_set_max_header_fields(tr_http_parser_t *p, size_t max_header_fields);
/* Releases the buffers; p may be initialized again. */
void tr__http_parser_free(tr_http_parser_t *p);
/* Consumes bytes until a request is complete, the input ends or the stream
 * fails (see STATES above). Must not be called again after TR_HTTP_REQUEST
 * before tr__http_parser_next(). */
tr_http_parse_result_t tr__http_parser_feed(tr_http_parser_t *p, const char *data, size_t len,
                                            size_t *consumed);
/* Drops the current request and gets ready for the next one. Large buffers
 * are released so idle keep-alive connections stay small. */
void tr__http_parser_next(tr_http_parser_t *p);
/* After TR_HTTP_HEADERS: sets the body mode and limit, and lets the message
 * complete at once when it has no body (ready is then true and the next feed
 * returns TR_HTTP_REQUEST without needing bytes). Returns 0, or 413 when the
 * announced Content-Length exceeds max_body (the stream has then failed). */
int tr__http_parser_set_body(tr_http_parser_t *p, tr_http_body_mode_t mode, size_t max_body);
/* True when the message has been parsed to its end (TR_HTTP_REQUEST is due
 * or was returned). */
bool tr__http_parser_complete(const tr_http_parser_t *p);

#endif

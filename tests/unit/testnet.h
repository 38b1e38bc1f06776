/*
 * testnet.h - the blocking loopback client that the server unit tests
 * (test_server.c, test_server_stream.c, test_server_tls.c) drive a running
 * tr_server_t with from the test thread.
 *
 * Every socket has a receive timeout of TESTNET_TIMEOUT_S, so a server that
 * never answers shows as a failed assertion, not a hung test. The client
 * buffers what it received in a fixed array: testnet_read_response takes
 * one response off its front and leaves any pipelined bytes after it, so a
 * test can read answers one by one or look at the raw rest (c->buf).
 *
 * Header-only (static inline) because every test file is its own
 * executable and each uses only some of it. Include it after <cmocka.h>'s
 * prerequisites, like any cmocka test; it asserts with cmocka.
 */
#ifndef TR_TESTS_TESTNET_H
#define TR_TESTS_TESTNET_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define TESTNET_TIMEOUT_S 2

/* Socket options set before connecting (so a small window is in force
 * from the first segment); zero fields keep the kernel's defaults. */
typedef struct testnet_opts {
    int rcvbuf;        /* SO_RCVBUF bytes */
    int sndbuf;        /* SO_SNDBUF bytes */
    bool send_timeout; /* sends, too, give up after TESTNET_TIMEOUT_S */
} testnet_opts_t;

typedef struct testnet_client {
    int fd;
    char buf[1 << 17]; /* received, not yet taken */
    size_t len;
} testnet_client_t;

typedef struct testnet_response {
    int status;
    char head[4096]; /* status line and headers, NUL-terminated */
    char body[1 << 16];
    size_t body_len;
    bool chunked; /* the body came chunked (and was de-chunked) */
} testnet_response_t;

static inline void testnet_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Connects a blocking TCP socket to 127.0.0.1:port and returns it; any
 * failure fails the test. */
static inline int testnet_dial(int port, testnet_opts_t opts)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = TESTNET_TIMEOUT_S};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (opts.send_timeout) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (opts.rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opts.rcvbuf, sizeof(opts.rcvbuf));
    if (opts.sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &opts.sndbuf, sizeof(opts.sndbuf));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* A connected client; free it with testnet_client_close or _reset. */
static inline testnet_client_t *testnet_client_open(int port, testnet_opts_t opts)
{
    testnet_client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = testnet_dial(port, opts);
    return c;
}

static inline void testnet_client_close(testnet_client_t *c)
{
    close(c->fd);
    free(c);
}

/* Closes with an RST instead of a FIN: the server sees a reset. */
static inline void testnet_client_reset(testnet_client_t *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    testnet_client_close(c);
}

/* Sends all of data; a failed or timed-out send fails the test. */
static inline void testnet_send(testnet_client_t *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

static inline void testnet_send_str(testnet_client_t *c, const char *s)
{
    testnet_send(c, s, strlen(s));
}

/* Receives once into the buffer; returns what recv returned (0 on EOF,
 * negative on error or timeout), or -1 when the buffer is full. */
static inline ssize_t testnet_fill(testnet_client_t *c)
{
    if (c->len == sizeof(c->buf)) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n > 0) c->len += (size_t)n;
    return n;
}

/* Drops the first n buffered bytes. */
static inline void testnet_consume(testnet_client_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Receives until `want` bytes are buffered; 0, or -1 on EOF/error. */
static inline int testnet_need(testnet_client_t *c, size_t want)
{
    while (c->len < want)
        if (testnet_fill(c) <= 0) return -1;
    return 0;
}

/* The value of the first header called name (any case), or NULL. The
 * result lives in a static buffer until the next call. */
static inline const char *testnet_find_header(const testnet_response_t *r, const char *name)
{
    static char value[512];
    size_t nlen = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2]) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t len = (size_t)(end - v);
            if (len >= sizeof(value)) len = sizeof(value) - 1;
            memcpy(value, v, len);
            value[len] = '\0';
            return value;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

/* How many headers called name (any case) the response has. */
static inline int testnet_count_headers(const testnet_response_t *r, const char *name)
{
    int n = 0;
    size_t nlen = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, nlen) == 0 && p[2 + nlen] == ':') n++;
    return n;
}

/* Reads one response: Content-Length, chunked (de-chunked into body) or,
 * with until_eof, everything until the server closes. For HEAD pass
 * no_body; 1xx, 204 and 304 never have one. Returns 0, or -1 when the
 * server closed or sent something that is not a response. */
static inline int testnet_read_response(testnet_client_t *c, testnet_response_t *r, bool no_body,
                                        bool until_eof)
{
    char *end;
    memset(r, 0, sizeof(*r));
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (testnet_fill(c) <= 0) return -1;
    size_t head_len = (size_t)(end - c->buf) + 2;
    assert_true(head_len < sizeof(r->head));
    memcpy(r->head, c->buf, head_len);
    r->head[head_len] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1) return -1;
    testnet_consume(c, head_len + 2);
    if (no_body || r->status < 200 || r->status == 204 || r->status == 304) return 0;
    const char *te = testnet_find_header(r, "Transfer-Encoding");
    const char *cl = testnet_find_header(r, "Content-Length");
    if (te && strcasecmp(te, "chunked") == 0) {
        r->chunked = true;
        for (;;) {
            char *eol;
            while (!(eol = memmem(c->buf, c->len, "\r\n", 2)))
                if (testnet_fill(c) <= 0) return -1;
            size_t size = strtoul(c->buf, NULL, 16);
            testnet_consume(c, (size_t)(eol - c->buf) + 2);
            if (testnet_need(c, size + 2) != 0) return -1;
            if (size == 0) {
                if (memcmp(c->buf, "\r\n", 2) != 0) return -1;
                testnet_consume(c, 2);
                return 0;
            }
            assert_true(r->body_len + size < sizeof(r->body));
            memcpy(r->body + r->body_len, c->buf, size);
            r->body_len += size;
            if (memcmp(c->buf + size, "\r\n", 2) != 0) return -1;
            testnet_consume(c, size + 2);
        }
    }
    if (cl) {
        size_t n = strtoul(cl, NULL, 10);
        if (testnet_need(c, n) != 0) return -1;
        assert_true(n < sizeof(r->body));
        memcpy(r->body, c->buf, n);
        r->body_len = n;
        testnet_consume(c, n);
        return 0;
    }
    if (!until_eof) return 0;
    while (testnet_fill(c) > 0)
        ;
    assert_true(c->len < sizeof(r->body));
    memcpy(r->body, c->buf, c->len);
    r->body_len = c->len;
    c->len = 0;
    return 0;
}

/* True when the server closes the connection (EOF or reset) in time and
 * sends nothing more. */
static inline bool testnet_closed_by_server(testnet_client_t *c)
{
    if (c->len > 0) return false;
    char b[64];
    ssize_t n = recv(c->fd, b, sizeof(b), 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

#endif

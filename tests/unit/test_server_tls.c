/*
 * test_server_tls.c - the HTTP server with TLS termination (tls.h), over
 * real loopback sockets.
 *
 * Each test writes a fresh self-signed certificate (EC P-256, CN localhost)
 * and its key into a private temporary directory with the OpenSSL API,
 * starts a server with them on 127.0.0.1, port 0, and talks to it from the
 * test thread with an OpenSSL client over a blocking socket (receive timeout
 * 2 s, so a bug shows as a failure, not a hang). The client trusts exactly
 * that certificate, so a handshake that succeeds proves the server used it.
 *
 * Every test ends with tr_server_stop + tr_server_wait, and the worker_stop
 * hook checks that no handle of the worker's loop is left open.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kit/http.h"
#include "kit/router.h"
#include "kit/server.h"
#include "testnet.h"
#include "testutil.h"

/* ---- handlers ----------------------------------------------------------- */

static atomic_int open_handles, worker_stops, upgrade_rc;

/* Says whether the server saw the connection as TLS. */
static void handle_hello(tr_req_t *req)
{
    const char *body = req->tls ? "hello over tls" : "hello over plain";
    tr_respond(req, 200, "text/plain", body, strlen(body));
}

static void handle_echo(tr_req_t *req)
{
    tr_respond(req, 200, "application/octet-stream", req->body, req->body_len);
}

/* A chunked answer in two writes: the streamed write path. */
static void handle_stream(tr_req_t *req)
{
    if (tr_respond_start(req, 200, "text/plain", -1) != 0 ||
        tr_respond_write(req, "abc", 3, NULL, NULL) != 0 ||
        tr_respond_write(req, "defg", 4, NULL, NULL) != 0 || tr_respond_end(req) != 0)
        tr_respond_abort(req);
}

/* Tries to take the connection over; answers with what tr_req_upgrade said. */
static void handle_upgrade(tr_req_t *req)
{
    tr_upgrade_t up;
    int rc = tr_req_upgrade(req, 101, &up);
    atomic_store(&upgrade_rc, rc);
    if (rc == 0) {
        close(up.fd);
        free(up.pending);
        return;
    }
    tr_respond(req, 501, "text/plain", "no", 2);
}

static const tr_route_t routes[] = {
    {"GET", "/hello", handle_hello, TR_AUTH_NONE, NULL, 0},
    {"POST", "/echo", handle_echo, TR_AUTH_NONE, NULL, 64 * 1024},
    {"GET", "/stream", handle_stream, TR_AUTH_NONE, NULL, 0},
    {"GET", "/upgrade", handle_upgrade, TR_AUTH_NONE, NULL, 0},
};

static void count_open(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) atomic_fetch_add(&open_handles, 1);
}

/* worker_stop runs only for workers whose worker_start ran. */
static int worker_start(tr_worker_t *w)
{
    (void)w;
    return 0;
}

static void worker_stop(tr_worker_t *w)
{
    atomic_fetch_add(&worker_stops, 1);
    uv_walk(w->loop, count_open, NULL);
}

/* ---- fixture ------------------------------------------------------------ */

typedef struct fixture {
    char dir[128];
    char cert[192];
    char key[192];
    char other_key[192]; /* a key that does not match cert */
    tr_router_t *router;
    tr_server_t *srv;
    int port;
    SSL_CTX *client_ctx;
} fixture_t;

static fixture_t fx;

static EVP_PKEY *new_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static int write_key(const char *path, EVP_PKEY *pkey)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    int ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

/* Self-signed, CN=localhost, valid from an hour ago for a day. */
static int write_cert(const char *cert_path, const char *key_path, const char *other_key_path)
{
    int rc = -1;
    EVP_PKEY *pkey = new_key(), *other = new_key();
    X509 *x = X509_new();
    FILE *f = NULL;

    if (!pkey || !other || !x) goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    if (X509_sign(x, pkey, EVP_sha256()) == 0) goto out;
    if (!(f = fopen(cert_path, "w"))) goto out;
    if (PEM_write_X509(f, x) != 1) goto out;
    if (write_key(key_path, pkey) != 0 || write_key(other_key_path, other) != 0) goto out;
    rc = 0;
out:
    if (f) fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(other);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    if (testutil_tmpdir(fx.dir, sizeof(fx.dir), "tls") != 0) return -1;
    snprintf(fx.cert, sizeof(fx.cert), "%s/cert.pem", fx.dir);
    snprintf(fx.key, sizeof(fx.key), "%s/key.pem", fx.dir);
    snprintf(fx.other_key, sizeof(fx.other_key), "%s/other.pem", fx.dir);
    if (write_cert(fx.cert, fx.key, fx.other_key) != 0) return -1;
    fx.router = tr_router_new();
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (tr_router_add(fx.router, &routes[i]) != 0) return -1;
    /* The client trusts exactly the test certificate. */
    fx.client_ctx = SSL_CTX_new(TLS_client_method());
    if (!fx.client_ctx || SSL_CTX_load_verify_locations(fx.client_ctx, fx.cert, NULL) != 1)
        return -1;
    SSL_CTX_set_verify(fx.client_ctx, SSL_VERIFY_PEER, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(fx.client_ctx);
    tr_router_free(fx.router);
    testutil_remove_tree(fx.dir);
    return 0;
}

static void base_config(tr_server_config_t *cfg)
{
    tr_server_config_defaults(cfg);
    cfg->router = fx.router;
    cfg->worker_start = worker_start;
    cfg->worker_stop = worker_stop;
    cfg->max_header_bytes = 4096;
    cfg->header_timeout_ms = 1000;
    cfg->idle_timeout_ms = 1000;
    cfg->drain_timeout_ms = 2000;
    cfg->tls_cert_file = fx.cert;
    cfg->tls_key_file = fx.key;
}

static void start(void)
{
    tr_server_config_t cfg;
    base_config(&cfg);
    atomic_store(&open_handles, 0);
    atomic_store(&worker_stops, 0);
    assert_int_equal(tr_server_start(&cfg, &fx.srv), 0);
    fx.port = tr_server_port(fx.srv);
    assert_true(fx.port > 0);
}

static void stop(void)
{
    tr_server_stop(fx.srv);
    tr_server_wait(fx.srv);
    fx.srv = NULL;
    assert_int_equal(atomic_load(&worker_stops), 1);
    assert_int_equal(atomic_load(&open_handles), 0);
}

/* ---- a tiny blocking HTTPS client --------------------------------------- */

typedef struct client {
    int fd;
    SSL *ssl;
} client_t;

static void client_open(client_t *cl)
{
    cl->fd = testnet_dial(fx.port, (testnet_opts_t){0});
    cl->ssl = SSL_new(fx.client_ctx);
    assert_non_null(cl->ssl);
    SSL_set_fd(cl->ssl, cl->fd);
    SSL_set_tlsext_host_name(cl->ssl, "localhost");
    if (SSL_connect(cl->ssl) != 1) ERR_print_errors_fp(stderr);
    assert_int_equal(SSL_get_verify_result(cl->ssl), X509_V_OK);
    assert_int_equal(SSL_is_init_finished(cl->ssl), 1);
    assert_int_equal(SSL_get_verify_result(cl->ssl), X509_V_OK);
    assert_true(SSL_version(cl->ssl) >= TLS1_2_VERSION);
}

static void client_close(client_t *cl)
{
    SSL_free(cl->ssl);
    close(cl->fd);
    ERR_clear_error();
}

static void client_send(client_t *cl, const char *data)
{
    size_t len = strlen(data), done = 0;
    assert_int_equal(SSL_write_ex(cl->ssl, data, len, &done), 1);
    assert_int_equal(done, len);
}

/* Reads one response into buf (NUL-terminated): the head, then a
 * Content-Length body (none for HEAD) or a chunked body up to its last
 * chunk. Returns the bytes read, or -1 when the server closed first. */
static int read_response(client_t *cl, char *buf, size_t cap, bool head)
{
    size_t len = 0;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            size_t head_len = (size_t)(end + 4 - buf);
            const char *cl_hdr = strcasestr(buf, "Content-Length: ");
            if (head) return (int)len;
            if (cl_hdr && cl_hdr < end && len >= head_len + strtoul(cl_hdr + 16, NULL, 10))
                return (int)len;
            if (strcasestr(buf, "Transfer-Encoding: chunked") && strstr(end + 4, "0\r\n\r\n"))
                return (int)len;
        }
        size_t got = 0;
        if (len + 1 >= cap || SSL_read_ex(cl->ssl, buf + len, cap - 1 - len, &got) != 1) return -1;
        len += got;
    }
}

static const char *body_of(const char *response)
{
    const char *end = strstr(response, "\r\n\r\n");
    return end ? end + 4 : "";
}

/* ---- tests -------------------------------------------------------------- */

static void test_keep_alive_gets(void **state)
{
    (void)state;
    char buf[4096];
    client_t cl;
    start();
    client_open(&cl);
    for (int i = 0; i < 2; i++) {
        client_send(&cl, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
        assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
        assert_string_equal(body_of(buf), "hello over tls");
        assert_null(strcasestr(buf, "Connection: close"));
    }
    client_close(&cl);
    stop();
}

static void test_post_body(void **state)
{
    (void)state;
    char body[20000], req[21000], buf[24000];
    client_t cl;
    /* Larger than one TLS record, so the body spans several. */
    for (size_t i = 0; i < sizeof(body) - 1; i++)
        body[i] = (char)('a' + i % 26);
    body[sizeof(body) - 1] = '\0';
    snprintf(req, sizeof(req),
             "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    start();
    client_open(&cl);
    client_send(&cl, req);
    assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    assert_string_equal(body_of(buf), body);
    client_close(&cl);
    stop();
}

static void test_head_then_get(void **state)
{
    (void)state;
    char buf[4096];
    client_t cl;
    start();
    client_open(&cl);
    client_send(&cl, "HEAD /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(&cl, buf, sizeof(buf), true) > 0);
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    assert_non_null(strcasestr(buf, "Content-Length: 14\r\n"));
    assert_string_equal(body_of(buf), "");
    /* No body bytes followed the head: the next answer starts clean. */
    client_send(&cl, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    assert_string_equal(body_of(buf), "hello over tls");
    client_close(&cl);
    stop();
}

static void test_streamed_answer(void **state)
{
    (void)state;
    char buf[4096];
    client_t cl;
    start();
    client_open(&cl);
    client_send(&cl, "GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
    assert_true(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
    assert_string_equal(body_of(buf), "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    client_close(&cl);
    stop();
}

static void test_upgrade_refused(void **state)
{
    (void)state;
    char buf[4096];
    client_t cl;
    start();
    client_open(&cl);
    client_send(&cl, "GET /upgrade HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
    assert_true(strncmp(buf, "HTTP/1.1 501 ", 13) == 0);
    assert_int_equal(atomic_load(&upgrade_rc), -ENOTSUP);
    client_close(&cl);
    stop();
}

/* Plain HTTP on the TLS port: closed without an HTTP answer, and the
 * server goes on serving TLS clients. */
static void test_plain_http_closed(void **state)
{
    (void)state;
    char buf[4096];
    static const char plain[] = "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n";
    client_t cl;
    start();
    int fd = testnet_dial(fx.port, (testnet_opts_t){0});
    assert_int_equal(send(fd, plain, sizeof(plain) - 1, 0), (ssize_t)sizeof(plain) - 1);
    size_t total = 0;
    ssize_t n;
    while ((n = recv(fd, buf + total, sizeof(buf) - 1 - total, 0)) > 0)
        total += (size_t)n;
    /* Closed (EOF or reset), not timed out. */
    assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
    buf[total] = '\0';
    assert_null(strstr(buf, "HTTP/1.1"));
    close(fd);

    client_open(&cl);
    client_send(&cl, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
    assert_string_equal(body_of(buf), "hello over tls");
    client_close(&cl);
    stop();
}

/* An idle keep-alive client at shutdown gets close_notify, then EOF. */
static void test_shutdown_sends_close_notify(void **state)
{
    (void)state;
    char buf[4096];
    client_t cl;
    start();
    client_open(&cl);
    client_send(&cl, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(&cl, buf, sizeof(buf), false) > 0);
    tr_server_stop(fx.srv);
    size_t got = 0;
    assert_int_equal(SSL_read_ex(cl.ssl, buf, sizeof(buf), &got), 0);
    assert_int_equal(SSL_get_error(cl.ssl, 0), SSL_ERROR_ZERO_RETURN);
    client_close(&cl);
    stop();
}

static void test_config_errors(void **state)
{
    (void)state;
    tr_server_config_t cfg;
    tr_server_t *srv = (tr_server_t *)&cfg; /* must be reset to NULL */

    base_config(&cfg);
    cfg.tls_key_file = NULL;
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);
    assert_null(srv);

    base_config(&cfg);
    cfg.tls_key_file = fx.other_key;
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);
    assert_null(srv);

    base_config(&cfg);
    cfg.tls_cert_file = fx.key; /* not a certificate */
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);

    base_config(&cfg);
    cfg.tls_key_file = "/nonexistent/key.pem";
    assert_int_equal(tr_server_start(&cfg, &srv), -EINVAL);
    assert_null(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive_gets),
        cmocka_unit_test(test_post_body),
        cmocka_unit_test(test_head_then_get),
        cmocka_unit_test(test_streamed_answer),
        cmocka_unit_test(test_upgrade_refused),
        cmocka_unit_test(test_plain_http_closed),
        cmocka_unit_test(test_shutdown_sends_close_notify),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

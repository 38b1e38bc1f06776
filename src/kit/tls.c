/*
 * tls.c - the OpenSSL side of tls.h.
 *
 * OpenSSL keeps a per-thread error queue; a failed call leaves entries that
 * a later, unrelated SSL_get_error() on the same thread would misread, so
 * every failure path here empties it (ERR_clear_error) before returning.
 *
 * Renegotiation is refused (a client could otherwise make the server redo
 * expensive handshakes at will on one connection) and buffers are released
 * while a connection is idle, which matters with many keep-alive clients.
 */
#include "kit/tls.h"
#include "kit/alloc.h"
#include "kit/log.h"

#include <errno.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>

struct tr__tls_ctx {
    SSL_CTX *ssl_ctx;
};

struct tr__tls {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer, owned by ssl */
    BIO *wbio; /* ciphertext for the peer, owned by ssl */
    bool notify_sent;
};

static void log_openssl_error(const char *what, const char *file)
{
    char reason[256] = "unknown error";
    unsigned long e = ERR_peek_last_error();
    if (e) ERR_error_string_n(e, reason, sizeof(reason));
    tr_log_error("tls: %s %s: %s", what, file, reason);
    ERR_clear_error();
}

int tr__tls_ctx_new(const char *cert_file, const char *key_file, tr__tls_ctx_t **out)
{
    int rc = -EINVAL;
    SSL_CTX *sc = SSL_CTX_new(TLS_server_method());

    *out = NULL;
    if (!sc) {
        log_openssl_error("cannot create a context for", cert_file);
        goto out;
    }
    SSL_CTX_set_min_proto_version(sc, TLS1_2_VERSION);
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(sc, cert_file) != 1) {
        log_openssl_error("cannot load certificate", cert_file);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(sc, key_file, SSL_FILETYPE_PEM) != 1) {
        log_openssl_error("cannot load private key", key_file);
        goto out;
    }
    if (SSL_CTX_check_private_key(sc) != 1) {
        log_openssl_error("private key does not match certificate", cert_file);
        goto out;
    }
    *out = tr_xmalloc(sizeof(**out));
    (*out)->ssl_ctx = sc;
    sc = NULL;
    rc = 0;
out:
    SSL_CTX_free(sc);
    return rc;
}

void tr__tls_ctx_free(tr__tls_ctx_t *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

tr__tls_t *tr__tls_new(tr__tls_ctx_t *ctx)
{
    tr__tls_t *t = tr_xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(ctx->ssl_ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        /* OpenSSL fails here only for lack of memory: abort as tr_xmalloc. */
        tr_log_error("tls: out of memory");
        abort();
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tr__tls_free(tr__tls_t *t)
{
    if (!t) return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

int tr__tls_feed(tr__tls_t *t, const void *data, size_t len)
{
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int n = BIO_write(t->rbio, data, chunk);
        if (n <= 0) {
            ERR_clear_error();
            return -EPROTO;
        }
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    return 0;
}

int tr__tls_read(tr__tls_t *t, void *buf, size_t cap, size_t *n)
{
    size_t got = 0;
    *n = 0;
    int r = SSL_read_ex(t->ssl, buf, cap, &got);
    if (r == 1) {
        *n = got;
        return 0;
    }
    int err = SSL_get_error(t->ssl, r);
    ERR_clear_error();
    switch (err) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -ESHUTDOWN;
    default:
        return -EPROTO;
    }
}

int tr__tls_write(tr__tls_t *t, const void *data, size_t len)
{
    size_t done = 0;
    if (len == 0) return 0;
    if (SSL_write_ex(t->ssl, data, len, &done) != 1 || done != len) {
        ERR_clear_error();
        return -EPROTO;
    }
    return 0;
}

void tr__tls_close_notify(tr__tls_t *t)
{
    if (t->notify_sent || !SSL_is_init_finished(t->ssl)) return;
    t->notify_sent = true;
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

bool tr__tls_established(const tr__tls_t *t)
{
    return SSL_is_init_finished(t->ssl);
}

size_t tr__tls_pending(const tr__tls_t *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t tr__tls_take(tr__tls_t *t, void *buf, size_t cap)
{
    size_t got = 0;
    if (cap == 0 || BIO_read_ex(t->wbio, buf, cap, &got) != 1) {
        ERR_clear_error();
        return 0;
    }
    return got;
}

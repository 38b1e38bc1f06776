/*
 * tls.h - TLS termination for the HTTP server (server.c), on OpenSSL 3.
 *
 * The TLS engine never touches a socket: each connection's SSL object sits
 * between two memory BIOs. The server feeds ciphertext it read from the
 * socket in (tr__tls_feed), takes plaintext out (tr__tls_read), puts
 * plaintext in (tr__tls_write) and takes the ciphertext to send out
 * (tr__tls_pending / tr__tls_take), so libuv keeps owning all I/O and the
 * server's read and write paths stay what they are for plain connections.
 * The handshake is driven by tr__tls_read: it runs as the client's bytes
 * arrive, and its answers appear as pending ciphertext.
 *
 * One context (certificate, key, protocol floor TLS 1.2) is shared by all
 * workers; OpenSSL 3 allows SSL_new() on a shared SSL_CTX from any thread.
 * A connection object is used by its worker's thread only.
 */
#ifndef TR_TLS_H
#define TR_TLS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tr__tls_ctx tr__tls_ctx_t;
typedef struct tr__tls tr__tls_t;

/* Loads a PEM certificate chain and its PEM private key. Returns 0 and the
 * context in *out, or -EINVAL (files unreadable, not PEM, key not matching
 * the certificate) after logging OpenSSL's reason; *out is then NULL. */
int tr__tls_ctx_new(const char *cert_file, const char *key_file, tr__tls_ctx_t **out);
void tr__tls_ctx_free(tr__tls_ctx_t *ctx);

/* A server-side connection in the accept state. Never fails (aborts on OOM
 * like tr_xmalloc). Freed with tr__tls_free. */
tr__tls_t *tr__tls_new(tr__tls_ctx_t *ctx);
void tr__tls_free(tr__tls_t *t);

/* Appends ciphertext received from the peer. Returns 0 or -EPROTO. */
int tr__tls_feed(tr__tls_t *t, const void *data, size_t len);

/* Advances the handshake and decrypts what it can into buf (cap bytes).
 * Returns 0 with *n > 0 (plaintext), 0 with *n == 0 (needs more input),
 * -ESHUTDOWN when the peer sent close_notify, or -EPROTO on a protocol
 * error (then nothing more is to be read or written but an alert, which
 * may be pending). Call it until *n == 0 or an error; either way send
 * tr__tls_pending() bytes afterwards (handshake messages, tickets). */
int tr__tls_read(tr__tls_t *t, void *buf, size_t cap, size_t *n);

/* Encrypts len bytes of plaintext; the records become pending ciphertext.
 * Only valid once the handshake is complete. Returns 0 or -EPROTO. */
int tr__tls_write(tr__tls_t *t, const void *data, size_t len);

/* Queues close_notify (once; nothing before the handshake completed). */
void tr__tls_close_notify(tr__tls_t *t);

/* True once the handshake completed. */
bool tr__tls_established(const tr__tls_t *t);

/* Ciphertext waiting to be sent, and taking it (up to cap bytes; returns
 * the bytes copied into buf). */
size_t tr__tls_pending(const tr__tls_t *t);
size_t tr__tls_take(tr__tls_t *t, void *buf, size_t cap);

#endif

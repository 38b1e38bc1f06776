/*
 * buf.h - a growable byte buffer with a hard maximum.
 *
 * Every buffer that grows with client input has a ceiling so a client cannot
 * make us allocate without bound (curl's dynbuf "toobig"). The contents are
 * always NUL-terminated (the NUL is not counted in len), so text can be used
 * in place.
 */
#ifndef TR_BUF_H
#define TR_BUF_H

#include <stddef.h>

#define TR_ETOOBIG (-7001) /* appending would exceed the buffer's maximum */

typedef struct tr_buf {
    char *data;     /* NULL until the first append */
    size_t len;     /* bytes in use, excluding the terminating NUL */
    size_t cap;     /* bytes allocated */
    size_t max_len; /* hard maximum for len; 0 means SIZE_MAX */
} tr_buf_t;

/* Initializes an empty buffer that may hold at most max_len bytes. */
void tr_buf_init(tr_buf_t *b, size_t max_len);
/* Appends len bytes. Returns 0, or TR_ETOOBIG leaving b unchanged. */
int tr_buf_append(tr_buf_t *b, const void *data, size_t len);
int tr_buf_append_str(tr_buf_t *b, const char *s);
/* Appends printf output. Returns 0 or TR_ETOOBIG. */
int tr_buf_printf(tr_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (n <= len), keeping the rest. */
void tr_buf_consume(tr_buf_t *b, size_t n);
/* Empties the buffer, keeping its memory. */
void tr_buf_reset(tr_buf_t *b);
/* Hands the data (malloc'ed, NUL-terminated, may be NULL if never appended)
 * to the caller and leaves b empty. */
char *tr_buf_detach(tr_buf_t *b, size_t *len);
/* Frees the memory; b is empty and reusable afterwards. */
void tr_buf_free(tr_buf_t *b);

#endif

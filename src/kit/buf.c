/* buf.c - see buf.h. Capacity doubles; len never exceeds max_len. */
#include "kit/buf.h"
#include "kit/alloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tr_buf_init(tr_buf_t *b, size_t max_len)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max_len = max_len ? max_len : SIZE_MAX - 1;
}

static int reserve(tr_buf_t *b, size_t extra)
{
    if (extra > b->max_len - b->len) return TR_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = tr_xrealloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int tr_buf_append(tr_buf_t *b, const void *data, size_t len)
{
    int rc = reserve(b, len);
    if (rc) return rc;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int tr_buf_append_str(tr_buf_t *b, const char *s)
{
    return tr_buf_append(b, s, strlen(s));
}

int tr_buf_printf(tr_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return TR_ETOOBIG;
    int rc = reserve(b, (size_t)n);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void tr_buf_consume(tr_buf_t *b, size_t n)
{
    if (n >= b->len) {
        tr_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void tr_buf_reset(tr_buf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

char *tr_buf_detach(tr_buf_t *b, size_t *len)
{
    char *d = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void tr_buf_free(tr_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/*
 * alloc.h - allocation that never returns NULL.
 *
 * A server process that cannot allocate a few bytes cannot do anything useful,
 * so out-of-memory aborts in exactly one place (as Redis' zmalloc does). Callers
 * never check the result of these functions for NULL.
 */
#ifndef TR_ALLOC_H
#define TR_ALLOC_H

#include <stddef.h>

void *tr_xmalloc(size_t size);
void *tr_xcalloc(size_t count, size_t size);
void *tr_xrealloc(void *ptr, size_t size);
/* Returns a malloc'ed copy of s (NULL stays NULL). Free with free(). */
char *tr_xstrdup(const char *s);
/* Returns a malloc'ed, NUL-terminated copy of the first len bytes of s. */
char *tr_xstrndup(const char *s, size_t len);
/* printf into a freshly malloc'ed string. */
char *tr_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

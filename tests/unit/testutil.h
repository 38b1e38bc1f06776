/*
 * testutil.h - the set-up and tear-down that unit tests working on files
 * share: a private temporary directory, and removing a tree.
 *
 * Header-only (static inline) because every test file is its own
 * executable and each uses only some of it.
 */
#ifndef TR_TESTS_TESTUTIL_H
#define TR_TESTS_TESTUTIL_H

#include <ftw.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Creates a fresh directory /tmp/trellis-test-<tag>-XXXXXX, mode 0700, and
 * writes its path into dir (size bytes). Returns 0, or -1 when the path
 * does not fit or mkdtemp fails. */
static inline int testutil_tmpdir(char *dir, size_t size, const char *tag)
{
    int n = snprintf(dir, size, "/tmp/trellis-test-%s-XXXXXX", tag);
    if (n < 0 || (size_t)n >= size) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

static inline int testutil__remove_entry(const char *path, const struct stat *st, int flag,
                                         struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes path and everything below it, children first, without following
 * symbolic links. Returns 0, or -1 when anything could not be removed. */
static inline int testutil_remove_tree(const char *path)
{
    return nftw(path, testutil__remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif

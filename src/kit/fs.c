/*
 * fs.c - file-system chores (see fs.h).
 *
 * tr_mkdir_p walks the path from the root, creating each prefix that ends
 * before a '/' and then the whole path. EEXIST is expected for existing
 * parents and is not an error; only for the last component does it need a
 * stat, since a parent that is not a directory makes the next mkdir fail
 * with ENOTDIR by itself. Creating rather than testing first also makes
 * concurrent callers (two services creating one data dir) both succeed.
 */
#include "kit/fs.h"
#include "kit/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* 0 when dir was created or already exists (as anything: see above). */
static int mkdir_one(const char *dir, mode_t mode)
{
    return mkdir(dir, mode) == 0 || errno == EEXIST ? 0 : -errno;
}

int tr_mkdir_p(const char *path, mode_t mode)
{
    struct stat st;
    int rc = 0;

    if (!*path) return -ENOENT;
    char *buf = tr_xstrdup(path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        rc = mkdir_one(buf, mode);
        *p = '/';
        if (rc != 0) goto out;
    }
    if ((rc = mkdir_one(buf, mode)) != 0) goto out;
    if (stat(buf, &st) != 0)
        rc = -errno;
    else if (!S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
out:
    free(buf);
    return rc;
}

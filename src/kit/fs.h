/*
 * fs.h - file-system chores shared by the runner and the command line.
 */
#ifndef TR_FS_H
#define TR_FS_H

#include <sys/types.h>

/* Creates the directory path and every missing parent, each with mode (less
 * the umask), like `mkdir -p`. Directories that already exist are left as
 * they are. Returns 0, or a negative errno: -ENOTDIR when path or one of its
 * parents exists but is not a directory, -ENOENT for an empty path, or what
 * mkdir(2) reported. On error, parents created so far are kept. */
int tr_mkdir_p(const char *path, mode_t mode);

#endif

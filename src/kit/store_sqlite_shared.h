/*
 * store_sqlite_shared.h - what the SQLite connections of one process to one
 * database file share: a writer lock and a background checkpointer.
 * Internal to the SQLite engine (store_sqlite.c); see store_sqlite_shared.c
 * for the design.
 */
#ifndef TR_STORE_SQLITE_SHARED_H
#define TR_STORE_SQLITE_SHARED_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The checkpointer is woken when a commit leaves more frames than this in
 * the WAL (SQLite's own auto-checkpoint default). */
#define TR__SQLITE_WAL_SIGNAL_FRAMES 1000
/* Past this many frames the checkpointer forces the WAL to be rewound
 * (RESTART), briefly holding off this process's writers. */
#define TR__SQLITE_WAL_LIMIT_FRAMES 20000
/* While there were commits, a checkpoint runs at least this often. */
#define TR__SQLITE_CHECKPOINT_PERIOD_MS 2000
/* How long a writer waits for the writer lock before TR_STORE_EBUSY, as
 * SQLite's busy timeout does for other processes. */
#define TR__SQLITE_BUSY_TIMEOUT_MS 5000

typedef struct tr__sqlite_shared tr__sqlite_shared_t;

/* Attaches conn, a connection just opened and set up by the engine, to the
 * shared state of its database file (found by canonical path, created on
 * first use). When wal is true the connection's automatic checkpoints are
 * turned off and its commits feed the file's checkpointer thread, started
 * here with the state. *out is NULL for databases that are not files
 * (":memory:"), which need nothing shared. Returns 0, or TR_STORE_EERROR
 * with a reason in err (the connection is then not attached). */
int tr__sqlite_shared_attach(sqlite3 *conn, bool wal, tr__sqlite_shared_t **out, char *err,
                             size_t errlen);

/* Drops one attachment; call after closing the connection. The last one
 * stops the checkpointer (which first truncates the WAL), joins it and frees
 * the state. */
void tr__sqlite_shared_detach(tr__sqlite_shared_t *sh);

/* Takes the file's writer lock for the calling thread. Returns 0, -EDEADLK
 * when this thread already holds it (through another connection: waiting
 * would never end), or -ETIMEDOUT after TR__SQLITE_BUSY_TIMEOUT_MS. */
int tr__sqlite_writer_lock(tr__sqlite_shared_t *sh);
/* Hands the writer lock to the thread that has waited longest, or frees it
 * when none waits. Only its holder calls this. */
void tr__sqlite_writer_unlock(tr__sqlite_shared_t *sh);

/* Checkpoints run by the checkpointer thread so far, how many of them were
 * forced RESTART checkpoints that succeeded, and the WAL's length in frames
 * as the last commit left it (0 before the first commit). */
void tr__sqlite_shared_stats(tr__sqlite_shared_t *sh, uint64_t *checkpoints, uint64_t *restarts,
                             int64_t *wal_frames);

#endif

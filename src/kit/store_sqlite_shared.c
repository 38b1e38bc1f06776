/*
 * store_sqlite_shared.c - the state the SQLite connections of one process
 * to one database file share: a writer lock and a checkpointer thread.
 *
 * DESIGN NOTES
 *
 * Each worker of a service runs an event loop with its own connection to the
 * service's database file. A loop must never block for more than about a
 * millisecond, and SQLite, left alone, blocks it in two ways: a writer that
 * finds the file locked sleeps in the busy handler (1, 2, 5, 10... ms steps),
 * and the commit that crosses the auto-checkpoint threshold runs the
 * checkpoint, fsyncs included. Both are fixed here, per process and file.
 *
 * 1. Writer lock. Writes within a process queue on a lock of ours before
 *    they touch SQLite's: a writer then starts microseconds after the
 *    holder commits instead of polling. SQLite's busy timeout stays, for
 *    other processes (`trellis admin` on the same file) that do not see our
 *    lock. It is a queue under a mutex rather than a bare mutex because:
 *    a) Arrival order. Unlock hands the lock to the first waiter; it is
 *       never free while someone waits. A plain mutex lets the thread that
 *       just unlocked take it again at once, and a worker writing in a loop
 *       then starves another for milliseconds (measured: p99 0.7 ms for a
 *       15 us transaction). With hand-over, a writer waits at most for the
 *       writers ahead of it. The next in line spins for WRITER_SPIN_NS
 *       before sleeping (given more than one CPU), since a transaction is
 *       shorter than a sleep and wake-up; the unlocker sets `granted` last,
 *       after signalling, so a waiter that sees it may drop its stack node
 *       at once.
 *    b) It knows its owner thread (see 2) and waits on a monotonic deadline
 *       (TR__SQLITE_BUSY_TIMEOUT_MS, then TR_STORE_EBUSY, as SQLite would).
 *
 * 2. Who holds it (maintained by store_sqlite.c). A connection holds the
 *    writer lock exactly while it has a transaction open or an autocommit
 *    statement that writes in progress (a writing cursor included). It is
 *    taken before BEGIN IMMEDIATE, before an autocommit statement that is
 *    not read-only, and before a migration script outside a transaction. It
 *    is given back after every operation that leaves the connection in
 *    autocommit mode with no cursor, so every error path - a failed BEGIN,
 *    SQLite rolling back by itself, a cleanup rollback, closing inside a
 *    transaction - releases it. A thread that holds the lock through one
 *    connection and writes through another would wait for itself forever;
 *    tr__sqlite_writer_lock refuses at once instead (TR_STORE_EBUSY).
 *
 * 3. Checkpointer. Worker connections turn automatic checkpoints off (PRAGMA
 *    wal_autocheckpoint=0) and register sqlite3_wal_hook, which SQLite calls
 *    after each commit with the WAL's size in frames. Past
 *    TR__SQLITE_WAL_SIGNAL_FRAMES the hook wakes the checkpointer thread
 *    through a condition variable; the thread also wakes every
 *    TR__SQLITE_CHECKPOINT_PERIOD_MS and checkpoints if there were commits.
 *    It runs PASSIVE checkpoints on a connection of its own: they copy what
 *    they can without waiting for anyone, and the fsyncs happen on this
 *    thread. The hook only stores two atomics on most commits; it takes the
 *    thread's mutex once per wake-up (`requested` flips false->true), which
 *    is also what makes a wake-up impossible to lose: the flag is set before
 *    the mutex is taken, and the thread tests it under the mutex.
 *
 *    After each checkpoint the thread pauses CHECKPOINT_GAP_MS: under a
 *    stream of writes the WAL is past the threshold again at the next
 *    commit, and checkpointing every few frames would spend two fsyncs on
 *    each and compete with the workers for the CPU and the disk.
 *
 * 4. Bounding the WAL. A passive checkpoint cannot finish while a reader
 *    still uses an old snapshot, and SQLite only rewinds the WAL when a
 *    writer starts after a finished checkpoint - which, under a steady
 *    stream of writes, may never happen. So once a commit reports more than
 *    TR__SQLITE_WAL_LIMIT_FRAMES, the thread takes the writer lock (our
 *    writers then wait on it, not in SQLite's busy handler) and runs a
 *    RESTART checkpoint: copy the rest and make the next writer start the
 *    WAL from the beginning.
 *    - A passive pass first leaves the RESTART little to copy and sync, so
 *      writers wait about a millisecond, once per LIMIT frames. But when
 *      passes take longer than SLOW_PASS_MS (the disk is behind) the RESTART
 *      goes first: the WAL would otherwise grow by all that is written
 *      during the pass (measured: up to four times the limit, with passes
 *      of a second while four processes were writing).
 *    - Not TRUNCATE: freeing a WAL of that size took 30 ms, all under the
 *      lock. The file keeps its size instead, bounded by the limit, and is
 *      truncated at the last close.
 *    - A forced checkpoint waits for old readers at most FORCED_BUSY_MS (a
 *      thread with a cursor open on one connection may be waiting for the
 *      writer lock on another, and would otherwise deadlock with it), and
 *      after a failure is not retried for FORCED_RETRY_MS, so that a long
 *      reader (an export) cannot make the writers stall again and again.
 *      The limit is exceeded until that reader is done: nothing can
 *      checkpoint past it.
 *
 * 5. Lifetime. A registry (global mutex, list) maps canonical file paths to
 *    shared states, reference counted by attached connections. The last
 *    detach stops the thread, which does a final TRUNCATE checkpoint, and
 *    joins it - under the registry mutex, so a new attach to the same file
 *    never runs beside a finishing checkpointer with a different writer
 *    lock. Closing happens at shutdown, so holding the registry that long
 *    does not matter. The checkpointer connection is opened by the attaching
 *    thread (so failure is reported by tr_store_open) and then used only by
 *    the checkpointer. The thread blocks all signals, so process signals go
 *    to the threads that expect them. As with SQLite itself, a child process
 *    must not use a database file its parent has open (the registry, like
 *    SQLite's own lock bookkeeping, would describe the parent's state).
 *
 * 6. What remains on the loop: the first commit after SQLite rewinds the WAL
 *    writes and syncs a new WAL header (SQLite does that inside the writer),
 *    once per rewind rather than two fsyncs and the copying per checkpoint.
 */
#include "kit/store_sqlite_shared.h"
#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/store.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WRITER_SPIN_NS    50000 /* how long a waiting writer stays awake */
#define CHECKPOINT_GAP_MS 10    /* least time between two checkpoints */
#define SLOW_PASS_MS      20    /* a passive pass this long means the disk is behind */
#define FORCED_BUSY_MS    10    /* how long a forced checkpoint waits for readers */
#define FORCED_RETRY_MS   1000  /* pause after a forced checkpoint that failed */

struct tr__sqlite_shared {
    char *path; /* canonical; the registry key */
    int refs;   /* attached connections; under registry_mutex */
    struct tr__sqlite_shared *next;

    /* Writer lock (note 1). */
    pthread_mutex_t writer_mutex;
    bool writer_held;
    pthread_t writer_thread;       /* valid while writer_held */
    struct writer_waiter *waiters; /* FIFO of threads waiting for it */
    struct writer_waiter **waiters_tail;
    bool spin; /* several CPUs: waiting awake can pay off */

    /* Checkpointer (notes 3 and 4); has_checkpointer only for WAL files. */
    bool has_checkpointer;
    pthread_t thread;
    sqlite3 *conn; /* used only by the checkpointer thread once it runs */
    pthread_mutex_t wake_mutex;
    pthread_cond_t wake;
    bool stopping;           /* under wake_mutex */
    atomic_bool requested;   /* the WAL passed the signal threshold */
    atomic_bool committed;   /* commits since the last checkpoint */
    atomic_int wal_frames;   /* WAL length the last commit reported */
    int last_error;          /* checkpointer thread only: last rc logged */
    int64_t forced_after_ms; /* checkpointer thread only: no forcing before */
    int64_t pass_ms;         /* checkpointer thread only: last passive pass took */
    atomic_uint_fast64_t checkpoints, restarts;
};

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static tr__sqlite_shared_t *registry;

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline_after(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* A condition variable whose timed waits use CLOCK_MONOTONIC. */
static void cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

/* ---- writer lock -------------------------------------------------------- */

/* One thread waiting for the writer lock; lives on that thread's stack. */
typedef struct writer_waiter {
    pthread_cond_t granted_cond;
    atomic_bool granted; /* set under writer_mutex, after the signal */
    pthread_t thread;
    struct writer_waiter *next;
} writer_waiter_t;

/* Waits up to WRITER_SPIN_NS for the lock to be handed over, awake: a
 * transaction takes tens of microseconds, less than putting a thread to
 * sleep and waking it costs. */
static bool writer_spin(writer_waiter_t *self)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&self->granted, memory_order_acquire)) return true;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) >
            WRITER_SPIN_NS)
            return false;
    }
}

int tr__sqlite_writer_lock(tr__sqlite_shared_t *sh)
{
    writer_waiter_t self = {.thread = pthread_self()};
    int rc = 0;

    pthread_mutex_lock(&sh->writer_mutex);
    if (sh->writer_held && pthread_equal(sh->writer_thread, self.thread)) {
        pthread_mutex_unlock(&sh->writer_mutex);
        return -EDEADLK;
    }
    if (!sh->writer_held) {
        sh->writer_held = true;
        sh->writer_thread = self.thread;
        pthread_mutex_unlock(&sh->writer_mutex);
        return 0;
    }
    cond_init_monotonic(&self.granted_cond);
    /* Only the next in line spins: the others have longer to wait. */
    bool spin = sh->spin && !sh->waiters;
    *sh->waiters_tail = &self;
    sh->waiters_tail = &self.next;
    pthread_mutex_unlock(&sh->writer_mutex);

    /* The unlocker is done with self once granted is set (note 1a), so the
     * spinning path may destroy it without taking the mutex. */
    if (!spin || !writer_spin(&self)) {
        struct timespec deadline = deadline_after(TR__SQLITE_BUSY_TIMEOUT_MS);
        pthread_mutex_lock(&sh->writer_mutex);
        while (!atomic_load(&self.granted) && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&self.granted_cond, &sh->writer_mutex, &deadline);
        if (atomic_load(&self.granted)) {
            rc = 0;
        } else {
            writer_waiter_t **link = &sh->waiters;
            while (*link != &self)
                link = &(*link)->next;
            *link = self.next;
            if (!self.next) sh->waiters_tail = link;
            rc = -ETIMEDOUT;
        }
        pthread_mutex_unlock(&sh->writer_mutex);
    }
    pthread_cond_destroy(&self.granted_cond);
    return rc;
}

void tr__sqlite_writer_unlock(tr__sqlite_shared_t *sh)
{
    pthread_mutex_lock(&sh->writer_mutex);
    writer_waiter_t *next = sh->waiters;
    if (next) {
        /* Handed over, never released: a thread that comes later (this one,
         * looping) cannot take it first, so writers go in arrival order. */
        sh->waiters = next->next;
        if (!sh->waiters) sh->waiters_tail = &sh->waiters;
        sh->writer_thread = next->thread;
        pthread_cond_signal(&next->granted_cond);
        atomic_store_explicit(&next->granted, true, memory_order_release);
    } else {
        sh->writer_held = false;
    }
    pthread_mutex_unlock(&sh->writer_mutex);
}

/* ---- checkpointer ------------------------------------------------------- */

static int wal_hook(void *arg, sqlite3 *conn, const char *dbname, int frames)
{
    tr__sqlite_shared_t *sh = arg;
    (void)conn;
    if (strcmp(dbname, "main") != 0) return SQLITE_OK;
    atomic_store_explicit(&sh->wal_frames, frames, memory_order_relaxed);
    if (!atomic_load_explicit(&sh->committed, memory_order_relaxed))
        atomic_store_explicit(&sh->committed, true, memory_order_relaxed);
    if (frames > TR__SQLITE_WAL_SIGNAL_FRAMES && !atomic_load(&sh->requested) &&
        !atomic_exchange(&sh->requested, true)) {
        pthread_mutex_lock(&sh->wake_mutex);
        pthread_cond_signal(&sh->wake);
        pthread_mutex_unlock(&sh->wake_mutex);
    }
    return SQLITE_OK;
}

/* The checkpointer's busy handler: only forced checkpoints call it, while
 * waiting for readers (or another process's writer); give up soon. */
static int checkpoint_busy(void *arg, int count)
{
    (void)arg;
    if (count >= FORCED_BUSY_MS) return 0;
    sqlite3_sleep(1);
    return 1;
}

/* Logs a checkpoint failure once, not on every attempt while it lasts.
 * SQLITE_BUSY is expected (readers, another process's checkpoint). */
static void note_result(tr__sqlite_shared_t *sh, int rc, const char *mode)
{
    if (rc == SQLITE_OK || (rc & 0xff) == SQLITE_BUSY) {
        sh->last_error = SQLITE_OK;
        return;
    }
    if (rc == sh->last_error) return;
    sh->last_error = rc;
    json_t *fields = json_object();
    json_object_set_new(fields, "database", json_string(sh->path));
    json_object_set_new(fields, "mode", json_string(mode));
    json_object_set_new(fields, "error", json_string(sqlite3_errmsg(sh->conn)));
    json_object_set_new(fields, "wal_frames", json_integer(atomic_load(&sh->wal_frames)));
    tr_log_json(TR_LOG_ERROR, "database checkpoint failed", fields);
}

/* Whether to force the WAL back now. The hook's count drops once a writer
 * has rewound the WAL after an earlier RESTART; a checkpoint's would not. */
static bool over_limit(tr__sqlite_shared_t *sh)
{
    return atomic_load(&sh->wal_frames) > TR__SQLITE_WAL_LIMIT_FRAMES &&
           monotonic_ms() >= sh->forced_after_ms;
}

static void checkpoint(tr__sqlite_shared_t *sh)
{
    int frames = 0, copied = 0, rc;
    /* Passive first, so that the forced checkpoint has little left to copy
     * and sync under the writer lock - unless passes are slow (the disk is
     * behind): the WAL would grow by all that is written meanwhile. */
    if (!over_limit(sh) || sh->pass_ms <= SLOW_PASS_MS) {
        int64_t start = monotonic_ms();
        rc = sqlite3_wal_checkpoint_v2(sh->conn, "main", SQLITE_CHECKPOINT_PASSIVE, &frames,
                                       &copied);
        sh->pass_ms = monotonic_ms() - start;
        atomic_fetch_add(&sh->checkpoints, 1);
        note_result(sh, rc, "passive");
        if (rc != SQLITE_OK || !over_limit(sh)) return;
    }
    if (tr__sqlite_writer_lock(sh) != 0) return; /* a writer held it for the whole busy timeout */
    rc = sqlite3_wal_checkpoint_v2(sh->conn, "main", SQLITE_CHECKPOINT_RESTART, &frames, &copied);
    tr__sqlite_writer_unlock(sh);
    atomic_fetch_add(&sh->checkpoints, 1);
    note_result(sh, rc, "restart");
    if (rc == SQLITE_OK)
        atomic_fetch_add(&sh->restarts, 1);
    else
        sh->forced_after_ms = monotonic_ms() + FORCED_RETRY_MS;
}

/* Sleeps until deadline, or until the thread is told to stop; under
 * wake_mutex. Returns false when told to stop. */
static bool pause_until(tr__sqlite_shared_t *sh, const struct timespec *deadline, bool on_request)
{
    while (!sh->stopping && !(on_request && atomic_load(&sh->requested)))
        if (pthread_cond_timedwait(&sh->wake, &sh->wake_mutex, deadline) == ETIMEDOUT) break;
    return !sh->stopping;
}

static void *checkpointer_main(void *arg)
{
    tr__sqlite_shared_t *sh = arg;
    pthread_mutex_lock(&sh->wake_mutex);
    for (;;) {
        struct timespec period = deadline_after(TR__SQLITE_CHECKPOINT_PERIOD_MS);
        if (!pause_until(sh, &period, true)) break;
        /* Cleared before checkpointing: commits made meanwhile ask again. */
        bool requested = atomic_exchange(&sh->requested, false);
        bool committed = atomic_exchange(&sh->committed, false);
        pthread_mutex_unlock(&sh->wake_mutex);
        if (requested || committed) checkpoint(sh);
        pthread_mutex_lock(&sh->wake_mutex);
        /* Under a stream of writes the WAL passes the threshold again on
         * the next commit; a short pause batches what piles up meanwhile
         * instead of paying two fsyncs for every few frames. */
        struct timespec gap = deadline_after(CHECKPOINT_GAP_MS);
        if (!pause_until(sh, &gap, false)) break;
    }
    pthread_mutex_unlock(&sh->wake_mutex);

    /* No connection of this process is left: leave the WAL empty for the
     * next start, or for other processes still using the file. */
    int rc = sqlite3_wal_checkpoint_v2(sh->conn, "main", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    note_result(sh, rc, "truncate");
    sqlite3_close_v2(sh->conn);
    sh->conn = NULL;
    return NULL;
}

static int checkpointer_start(tr__sqlite_shared_t *sh, char *err, size_t errlen)
{
    sigset_t all, old;
    int rc =
        sqlite3_open_v2(sh->path, &sh->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(sh->conn, 1);
        sqlite3_busy_handler(sh->conn, checkpoint_busy, NULL);
        rc = sqlite3_exec(sh->conn, "PRAGMA wal_autocheckpoint=0; PRAGMA synchronous=NORMAL", NULL,
                          NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open checkpointer connection to %s: %s", sh->path,
                 sh->conn ? sqlite3_errmsg(sh->conn) : sqlite3_errstr(rc));
        goto fail;
    }
    /* A read opens the WAL and keeps a shared lock on the file, so that
     * closing a worker connection never checkpoints on the worker's thread
     * (SQLite checkpoints when the last connection closes). Best effort: a
     * failure here only means the first checkpoint opens the WAL instead. */
    sqlite3_exec(sh->conn, "SELECT 1 FROM sqlite_master LIMIT 1", NULL, NULL, NULL);

    cond_init_monotonic(&sh->wake);
    pthread_mutex_init(&sh->wake_mutex, NULL);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&sh->thread, NULL, checkpointer_main, sh);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start checkpointer thread: %s", strerror(rc));
        pthread_cond_destroy(&sh->wake);
        pthread_mutex_destroy(&sh->wake_mutex);
        goto fail;
    }
    pthread_setname_np(sh->thread, "tr-checkpoint");
    sh->has_checkpointer = true;
    return 0;

fail:
    sqlite3_close_v2(sh->conn);
    sh->conn = NULL;
    return TR_STORE_EERROR;
}

static void checkpointer_stop(tr__sqlite_shared_t *sh)
{
    pthread_mutex_lock(&sh->wake_mutex);
    sh->stopping = true;
    pthread_cond_signal(&sh->wake);
    pthread_mutex_unlock(&sh->wake_mutex);
    pthread_join(sh->thread, NULL);
    pthread_cond_destroy(&sh->wake);
    pthread_mutex_destroy(&sh->wake_mutex);
}

/* ---- registry ----------------------------------------------------------- */

static void shared_free(tr__sqlite_shared_t *sh)
{
    pthread_mutex_destroy(&sh->writer_mutex);
    free(sh->path);
    free(sh);
}

/* Finds or makes the state for path and counts the attachment; under
 * registry_mutex. */
static int shared_get(const char *path, bool wal, tr__sqlite_shared_t **out, char *err,
                      size_t errlen)
{
    tr__sqlite_shared_t *sh = registry;
    bool made = false;

    while (sh && strcmp(sh->path, path) != 0)
        sh = sh->next;
    if (!sh) {
        sh = tr_xcalloc(1, sizeof(*sh));
        sh->path = tr_xstrdup(path);
        pthread_mutex_init(&sh->writer_mutex, NULL);
        sh->waiters_tail = &sh->waiters;
        sh->spin = sysconf(_SC_NPROCESSORS_ONLN) > 1;
        made = true;
    }
    /* Also for an existing state: the file may have been switched to WAL
     * since it was made. */
    if (wal && !sh->has_checkpointer) {
        int rc = checkpointer_start(sh, err, errlen);
        if (rc != 0) {
            if (made) shared_free(sh);
            return rc;
        }
    }
    if (made) {
        sh->next = registry;
        registry = sh;
    }
    sh->refs++;
    *out = sh;
    return 0;
}

int tr__sqlite_shared_attach(sqlite3 *conn, bool wal, tr__sqlite_shared_t **out, char *err,
                             size_t errlen)
{
    const char *name = sqlite3_db_filename(conn, "main");
    char canonical[PATH_MAX];
    int rc;

    *out = NULL;
    if (!name || !*name) return 0; /* in-memory or temporary database */
    /* SQLite's name is absolute; realpath also resolves symbolic links, so
     * every spelling of the path finds the same state. */
    if (!realpath(name, canonical)) snprintf(canonical, sizeof(canonical), "%s", name);
    pthread_mutex_lock(&registry_mutex);
    rc = shared_get(canonical, wal, out, err, errlen);
    bool hook = rc == 0 && (*out)->has_checkpointer;
    pthread_mutex_unlock(&registry_mutex);
    if (!hook) return rc;

    /* In this order: the pragma installs (or, at 0, removes) SQLite's own
     * WAL hook, replacing any other. */
    if (sqlite3_exec(conn, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot set up %s: %s", canonical, sqlite3_errmsg(conn));
        tr__sqlite_shared_detach(*out);
        *out = NULL;
        return TR_STORE_EERROR;
    }
    sqlite3_wal_hook(conn, wal_hook, *out);
    return 0;
}

void tr__sqlite_shared_detach(tr__sqlite_shared_t *sh)
{
    if (!sh) return;
    pthread_mutex_lock(&registry_mutex);
    if (--sh->refs > 0) {
        pthread_mutex_unlock(&registry_mutex);
        return;
    }
    tr__sqlite_shared_t **link = &registry;
    while (*link != sh)
        link = &(*link)->next;
    *link = sh->next;
    if (sh->has_checkpointer) checkpointer_stop(sh);
    pthread_mutex_unlock(&registry_mutex);
    shared_free(sh);
}

void tr__sqlite_shared_stats(tr__sqlite_shared_t *sh, uint64_t *checkpoints, uint64_t *restarts,
                             int64_t *wal_frames)
{
    *checkpoints = atomic_load(&sh->checkpoints);
    *restarts = atomic_load(&sh->restarts);
    *wal_frames = atomic_load(&sh->wal_frames);
}

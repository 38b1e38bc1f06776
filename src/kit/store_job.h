/*
 * store_job.h - the one shape of a handler's database work.
 *
 * A handler never touches a database connection on its event loop. It puts
 * what the work needs into a context (usually allocated with
 * tr_req_alloc), and calls tr_store_run(req, flags, job, done, ctx):
 *
 *   job(db, ctx)       runs with a connection of the service's database and
 *                      returns 0 or a negative code; it reads and writes
 *                      ctx only, never req (it may run on another thread);
 *   done(req, ctx, rc) runs afterwards on the request's loop with job's
 *                      result (or the transaction's), and answers.
 *
 * WHERE THE JOB RUNS depends on the engine, never on the handler:
 *   - SQLite (embedded, a file on this machine): inline on the worker loop
 *     with the worker's own connection, and done is called before
 *     tr_store_run returns. A SQLite statement here takes microseconds and
 *     a thread hop would cost more than the query (bench/store_bench.c);
 *     writers queue on the store's in-process lock, never in a sleep.
 *   - PostgreSQL (networked): on a thread of the service's bounded pool of
 *     connections (--db-pool); done comes later, from the loop. A slow query
 *     delays its own request, never the loop.
 * So a handler must not touch req after calling tr_store_run, and done must
 * not assume it runs after the handler returned.
 *
 * TRANSACTIONS. With TR_STORE_TX the job runs between BEGIN and COMMIT; a
 * non-zero result from job, or a failed COMMIT, rolls back, and done gets
 * that code. When the engine reports a serialization failure or a deadlock
 * (TR_STORE_ERETRY: PostgreSQL 40001 / 40P01), the transaction is rolled
 * back and the job is run again from the start, up to
 * TR_STORE_TX_ATTEMPTS times in all, so a job must be re-runnable: it
 * resets whatever it writes into ctx before it writes it.
 *
 * ERRORS. The store logs every engine error where it happens, with the
 * engine's message. tr_store_respond_error() maps a store code to the one
 * answer every service gives (503 when busy, 500 otherwise). Codes a job
 * returns for its own reasons (-ENOENT for "no such row", ...) pass
 * through unchanged.
 */
#ifndef TR_STORE_JOB_H
#define TR_STORE_JOB_H

#include "kit/http.h"
#include "kit/store.h"

typedef int (*tr_store_job_fn)(tr_store_t *db, void *ctx);
typedef void (*tr_store_done_fn)(tr_req_t *req, void *ctx, int rc);

/* Runs job with a connection of req's service database, then done on req's
 * loop (see the file comment). flags: 0 or TR_STORE_TX. When the service
 * has no database, or its pool is shutting down, done gets -ESHUTDOWN
 * without job having run; when the pool's queue is full (--db-pool × 256
 * jobs waiting), done gets TR_STORE_EBUSY at once, also without job having
 * run. done always runs exactly once. */
void tr_store_run(tr_req_t *req, unsigned flags, tr_store_job_fn job, tr_store_done_fn done,
                  void *ctx);

/* Work that belongs to no request: runs job with a connection of w's
 * service database (flags as for tr_store_run), then finish(ctx, rc) on w's
 * loop, exactly once, and never from inside this call. ctx belongs to the
 * caller (typically malloc'ed and freed by finish); nothing of a request
 * may be in it. Meant for work a handler does after its answer, so that
 * the answer's timing cannot reveal it (e.g. /password/forgot): the job
 * starts TR_STORE_DETACHED_DELAY_MS plus a random 0..JITTER ms later, when
 * the answer has long reached the client -- on the loop with SQLite, on the
 * pool with a networked engine. A pending job keeps the worker's loop
 * running, so a draining worker finishes it before it closes its store.
 * Without a database finish gets -ESHUTDOWN. */
#define TR_STORE_DETACHED_DELAY_MS  10
#define TR_STORE_DETACHED_JITTER_MS 20
typedef void (*tr_store_finish_fn)(void *ctx, int rc);
void tr_store_run_detached(tr_worker_t *w, unsigned flags, tr_store_job_fn job,
                           tr_store_finish_fn finish, void *ctx);

/* Logs "what: database error rc" and answers 503
 * unavailable for TR_STORE_EBUSY / TR_STORE_ERETRY / -ESHUTDOWN, 500
 * internal for anything else. */
void tr_store_respond_error(tr_req_t *req, int rc, const char *what);

#endif

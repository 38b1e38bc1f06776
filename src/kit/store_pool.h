/*
 * store_pool.h - the bounded pool of database connections that runs
 * tr_store_run jobs for a service whose database is networked
 * (PostgreSQL). Kit-internal, except the option table.
 *
 * K threads each own one connection and take jobs from one bounded FIFO
 * queue. An event loop that submits jobs attaches a client first (a
 * uv_async_t on that loop); a finished job's completion is put on its
 * client's list and the async wakes the loop, where the completion runs. So
 * job(db, ctx) runs on a pool thread and complete(arg, ctx, rc) on the loop
 * that submitted it, and a slow query never blocks a loop.
 *
 * Backpressure: when the queue holds queue_max jobs, a submit completes at
 * once, on the caller's loop, with TR_STORE_EBUSY (the service answers 503).
 *
 * Shutdown: tr__store_pool_detach() (on the client's loop thread, after its
 * loop stopped or from a callback on it) completes the client's queued jobs
 * with -ESHUTDOWN without running them, waits for its in-flight jobs to
 * finish and runs their completions, then closes the async (its memory is
 * freed in the close callback, so the loop must run once more).
 * tr__store_pool_stop() then joins the threads and closes the connections.
 */
#ifndef TR_STORE_POOL_H
#define TR_STORE_POOL_H

#include <stddef.h>
#include <uv.h>

#include "kit/config.h"
#include "kit/store.h"
#include "kit/store_engine.h"

#define TR_STORE_POOL_DEFAULT_THREADS 4
#define TR_STORE_POOL_MAX_THREADS     256
/* Default queue bound per pool thread. */
#define TR_STORE_POOL_QUEUE_PER_THREAD 256

/* The kit's option for the pool: "db-pool" (connections of a service to a
 * networked database, default 4). Services list it through the runner. */
extern const tr_option_t tr_store_pool_options[];

typedef struct tr__store_pool tr__store_pool_t;
typedef struct tr__store_pool_client tr__store_pool_client_t;

/* Runs on the submitting loop with the job's result (or the transaction's,
 * or TR_STORE_EBUSY / -ESHUTDOWN when the job did not run). */
typedef void (*tr__store_complete_fn)(void *arg, void *ctx, int rc);

/* Opens `threads` connections to url (on the calling thread, so a bad URL
 * fails here) and starts one thread per connection. queue_max >= 1 bounds
 * the jobs waiting for a thread. Returns 0, or a negative code with *out
 * NULL and tr_store_errmsg(NULL) saying why (never the URL). */
int tr__store_pool_start(const char *url, int threads, size_t queue_max, tr__store_pool_t **out);

/* Completes with -ESHUTDOWN any job still queued (for clients that were not
 * detached), lets in-flight jobs finish, joins the threads, closes the
 * connections and frees the pool. Every client must be detached first. */
void tr__store_pool_stop(tr__store_pool_t *pool);

/* Attaches loop (call on its thread) so it may submit jobs. Returns 0 or a
 * negative libuv code. */
int tr__store_pool_attach(tr__store_pool_t *pool, uv_loop_t *loop, tr__store_pool_client_t **out);

/* See the file comment. c is gone once the loop has run its close callback. */
void tr__store_pool_detach(tr__store_pool_client_t *c);

/* Queues job(db, ctx) (flags: 0 or TR_STORE_TX, see store_job.h) and
 * calls complete(arg, ctx, rc) on c's loop afterwards: exactly once, either
 * later from the loop, or before returning when the queue is full
 * (TR_STORE_EBUSY) or the client is detached / the pool stopping
 * (-ESHUTDOWN). Call on c's loop thread. */
void tr__store_pool_submit(tr__store_pool_client_t *c, unsigned flags, tr_store_job_fn job,
                           void *ctx, tr__store_complete_fn complete, void *arg);

/* Jobs waiting for a thread now (for metrics and tests). Any thread. */
size_t tr__store_pool_queued(tr__store_pool_t *pool);

#endif

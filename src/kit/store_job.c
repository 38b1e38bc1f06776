/*
 * store_job.c - running a request's database work (see store_job.h).
 *
 * A service on SQLite runs the job inline on the worker's own connection. A
 * service whose database is networked has a store pool (store_pool.c) and
 * each worker a client of it: the job goes to a pool thread, and done comes
 * back on the request's loop through the client's async.
 *
 * DETACHED JOBS (tr_store_run_detached) wait on a one-shot timer of the
 * worker's loop and then run like a request's job; the networked engine's
 * pool takes them at the same point. Their timers are uv handles that the
 * server's shutdown would close without running them, hence the
 * per-thread list that tr__store_detached_flush drains first: inline on
 * SQLite; on a networked database the pool is shutting down by then, so
 * such a job finishes with -ESHUTDOWN (logged) without running.
 */
#include "kit/store_job.h"

#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "kit/alloc.h"
#include "kit/log.h"
#include "kit/store_engine.h"
#include "kit/server.h"
#include "kit/store_pool.h"

/* The database of the worker loop that runs on this thread: each worker
 * loop is one thread, so what service.c binds at the worker's start is the
 * worker's (its SQLite connection, or its client of the store pool). */
static _Thread_local tr_store_t *worker_db;
static _Thread_local tr__store_pool_client_t *worker_pool;

void tr__store_job_bind(tr_store_t *db, tr__store_pool_client_t *pool)
{
    worker_db = db;
    worker_pool = pool;
}

/* What a pooled job needs to finish its request (allocated on the request). */
typedef struct req_done {
    tr_req_t *req;
    tr_store_done_fn done;
} req_done_t;

static void complete_request(void *arg, void *ctx, int rc)
{
    req_done_t *d = arg;
    d->done(d->req, ctx, rc);
}

void tr_store_run(tr_req_t *req, unsigned flags, tr_store_job_fn job, tr_store_done_fn done,
                  void *ctx)
{
    tr__store_pool_client_t *pool = worker_pool;
    if (pool) {
        req_done_t *d = tr_req_alloc(req, sizeof(*d));
        d->req = req;
        d->done = done;
        tr__store_pool_submit(pool, flags, job, ctx, complete_request, d);
        return;
    }
    int rc = worker_db ? tr__store_job_execute(worker_db, flags, job, ctx) : -ESHUTDOWN;
    done(req, ctx, rc);
}

/* A detached job waiting for its moment on the worker's loop. Pending ones
 * are linked per worker thread (each worker loop is one thread), so that
 * tr__store_detached_flush can run them when the worker stops: the
 * server's loop ends on uv_stop, not when no handle is left. */
typedef struct detached {
    uv_timer_t timer;
    struct detached *next;
    tr_worker_t *worker;
    unsigned flags;
    tr_store_job_fn job;
    tr_store_finish_fn finish;
    void *ctx;
} detached_t;

static _Thread_local detached_t *pending_detached;

static void detached_closed(uv_handle_t *h)
{
    free(h->data);
}

static void unlink_detached(detached_t *d)
{
    for (detached_t **p = &pending_detached; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            break;
        }
    }
}

/* A pooled detached job came back. */
static void complete_detached(void *arg, void *ctx, int rc)
{
    tr_store_finish_fn finish = (tr_store_finish_fn)(uintptr_t)arg;
    finish(ctx, rc);
}

/* Runs d (once; inline, or handed to the pool when due), unlinks it and
 * closes its timer, which frees it. */
static void detached_run(detached_t *d, bool stopping)
{
    unlink_detached(d);
    tr__store_pool_client_t *pool = worker_pool;
    if (pool && !stopping) {
        tr__store_pool_submit(pool, d->flags, d->job, d->ctx, complete_detached,
                              (void *)(uintptr_t)d->finish);
    } else if (pool) {
        tr_log_warn("background database work dropped at shutdown");
        d->finish(d->ctx, -ESHUTDOWN);
    } else {
        int rc =
            worker_db ? tr__store_job_execute(worker_db, d->flags, d->job, d->ctx) : -ESHUTDOWN;
        d->finish(d->ctx, rc);
    }
    uv_close((uv_handle_t *)&d->timer, detached_closed);
}

static void detached_due(uv_timer_t *t)
{
    detached_run(t->data, false);
}

void tr_store_run_detached(tr_worker_t *w, unsigned flags, tr_store_job_fn job,
                           tr_store_finish_fn finish, void *ctx)
{
    detached_t *d = tr_xcalloc(1, sizeof(*d));
    *d = (detached_t){.worker = w, .flags = flags, .job = job, .finish = finish, .ctx = ctx};
    d->timer.data = d;
    uint64_t delay = TR_STORE_DETACHED_DELAY_MS + randombytes_uniform(TR_STORE_DETACHED_JITTER_MS);
    /* uv_timer_init cannot fail on a live loop (it only fills the handle). */
    uv_timer_init(w->loop, &d->timer);
    d->next = pending_detached;
    pending_detached = d;
    uv_timer_start(&d->timer, detached_due, delay, 0);
}

void tr__store_detached_flush(tr_worker_t *w)
{
    (void)w; /* the list is this thread's, i.e. w's */
    while (pending_detached)
        detached_run(pending_detached, true);
}

void tr_store_respond_error(tr_req_t *req, int rc, const char *what)
{
    tr_log_error("%s: database error %d", what, rc);
    if (rc == TR_STORE_EBUSY || rc == TR_STORE_ERETRY || rc == -ESHUTDOWN)
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "database busy, try again", NULL);
    else
        tr_respond_error(req, TR_ERR_INTERNAL, "internal error", NULL);
}

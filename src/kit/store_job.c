/*
 * store_job.c - running a request's database work (see store_job.h).
 *
 * A service on SQLite runs the job inline on the worker's own connection. A
 * service whose database is networked has a store pool (store_pool.c) and
 * each worker a client of it: the job goes to a pool thread, and done comes
 * back on the request's loop through the client's async.
 */
#include "kit/store_job.h"

#include <errno.h>

#include "kit/log.h"
#include "kit/store_engine.h"
#include "kit/service.h"
#include "kit/store_pool.h"

int tr__store_job_execute(tr_store_t *db, unsigned flags, tr_store_job_fn job, void *ctx)
{
    if (!(flags & TR_STORE_TX)) return job(db, ctx);
    int rc = TR_STORE_ERETRY;
    for (int attempt = 0; attempt < TR_STORE_TX_ATTEMPTS && rc == TR_STORE_ERETRY; attempt++) {
        if ((rc = tr_store_begin(db)) != 0) break;
        rc = job(db, ctx);
        if (rc == 0) rc = tr_store_commit(db);
        if (rc != 0) tr_store_rollback(db);
    }
    return rc;
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
    tr__store_pool_client_t *pool = tr__worker_store_pool(req->worker);
    if (pool) {
        req_done_t *d = tr_req_alloc(req, sizeof(*d));
        d->req = req;
        d->done = done;
        tr__store_pool_submit(pool, flags, job, ctx, complete_request, d);
        return;
    }
    tr_store_t *db = tr_worker_store(req->worker);
    int rc = db ? tr__store_job_execute(db, flags, job, ctx) : -ESHUTDOWN;
    done(req, ctx, rc);
}

void tr_store_respond_error(tr_req_t *req, int rc, const char *what)
{
    tr_log_error("%s: database error %d", what, rc);
    if (rc == TR_STORE_EBUSY || rc == TR_STORE_ERETRY || rc == -ESHUTDOWN)
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "database busy, try again", NULL);
    else
        tr_respond_error(req, TR_ERR_INTERNAL, "internal error", NULL);
}

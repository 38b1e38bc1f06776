/*
 * store_job.c - running a request's database work (see store_job.h).
 *
 * Today every engine the kit opens is SQLite, which runs inline on the
 * worker's own connection. The networked engine's pool plugs in at
 * run_job_on: a service whose database is networked hands the job to its
 * pool instead, and the pool calls tr__store_job_execute on one of its
 * threads and done back on the request's loop.
 */
#include "kit/store_job.h"

#include <errno.h>

#include "kit/log.h"
#include "kit/store_engine.h"
#include "kit/service.h"

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

void tr_store_run(tr_req_t *req, unsigned flags, tr_store_job_fn job, tr_store_done_fn done,
                  void *ctx)
{
    tr_store_t *db = tr_worker_store(req->worker);
    int rc = db ? tr__store_job_execute(db, flags, job, ctx) : -ESHUTDOWN;
    done(req, ctx, rc);
}

void tr_store_run_detached(tr_worker_t *w, unsigned flags, tr_store_job_fn job,
                           tr_store_finish_fn finish, void *ctx)
{
    tr_store_t *db = tr_worker_store(w);
    int rc = db ? tr__store_job_execute(db, flags, job, ctx) : -ESHUTDOWN;
    finish(ctx, rc);
}

void tr_store_respond_error(tr_req_t *req, int rc, const char *what)
{
    tr_log_error("%s: database error %d", what, rc);
    if (rc == TR_STORE_EBUSY || rc == TR_STORE_ERETRY || rc == -ESHUTDOWN)
        tr_respond_error(req, TR_ERR_UNAVAILABLE, "database busy, try again", NULL);
    else
        tr_respond_error(req, TR_ERR_INTERNAL, "internal error", NULL);
}

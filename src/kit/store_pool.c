/*
 * store_pool.c - the store pool (see store_pool.h).
 *
 * DESIGN NOTES
 *
 * 1. One mutex guards the queue, every client's completion list and the
 *    in-flight counts. The critical sections are a few pointer moves; the
 *    job itself and the wake-ups (uv_async_send) run outside it.
 *
 * 2. Invariant for detaching safely: a pool thread appends a job's
 *    completion to its client's list and sends the client's async BEFORE it
 *    decrements the client's in-flight count, and detach closes the async
 *    only after that count reached zero. So no thread touches a client, or
 *    sends on its async, after detach has returned.
 *
 * 3. A job never runs after its client detached: detach takes the client's
 *    queued jobs out of the queue under the lock, so a thread either took a
 *    job before (it is in flight and detach waits for it) or never sees it.
 */
#include "kit/store_job.h"
#include "kit/store_pool.h"
#include "kit/alloc.h"
#include "kit/log.h"

#include <errno.h>
#include <stdlib.h>

const tr_option_t tr_store_pool_options[] = {
    {"db-pool", "4",
     "connections (and threads) per service for a networked database (postgres://); "
     "SQLite runs on the workers' own connections"},
    {NULL, NULL, NULL},
};

typedef struct pool_job {
    struct pool_job *next;
    tr__store_pool_client_t *client;
    unsigned flags;
    tr_store_job_fn job;
    void *ctx;
    tr__store_complete_fn complete;
    void *arg;
    int rc;
} pool_job_t;

struct tr__store_pool_client {
    tr__store_pool_t *pool;
    uv_async_t async;
    pool_job_t *done_head, *done_tail; /* completions waiting for the loop */
    size_t inflight;                   /* jobs of this client on a thread now */
    bool detached;
};

typedef struct pool_thread {
    tr__store_pool_t *pool;
    uv_thread_t tid;
    tr_store_t *db;
    bool started;
} pool_thread_t;

struct tr__store_pool {
    uv_mutex_t lock;
    uv_cond_t work; /* a job was queued, or stopping */
    uv_cond_t idle; /* some client's in-flight count dropped to zero */
    pool_job_t *head, *tail;
    size_t queued, queue_max;
    bool stopping;
    int nthreads;
    pool_thread_t *threads;
};

static void append(pool_job_t **head, pool_job_t **tail, pool_job_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

/* Hands j's completion to its client's loop (pool lock held). */
static void deliver_locked(pool_job_t *j)
{
    tr__store_pool_client_t *c = j->client;
    append(&c->done_head, &c->done_tail, j);
    uv_async_send(&c->async);
}

static void thread_main(void *arg)
{
    pool_thread_t *t = arg;
    tr__store_pool_t *pool = t->pool;

    uv_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stopping)
            uv_cond_wait(&pool->work, &pool->lock);
        pool_job_t *j = pool->head;
        if (!j) break; /* stopping and nothing left */
        pool->head = j->next;
        if (!pool->head) pool->tail = NULL;
        pool->queued--;
        j->client->inflight++;
        uv_mutex_unlock(&pool->lock);

        j->rc = tr__store_job_execute(t->db, j->flags, j->job, j->ctx);

        uv_mutex_lock(&pool->lock);
        tr__store_pool_client_t *c = j->client;
        deliver_locked(j); /* before the count drops (note 2) */
        if (--c->inflight == 0) uv_cond_broadcast(&pool->idle);
    }
    uv_mutex_unlock(&pool->lock);
}

static void stop_threads(tr__store_pool_t *pool)
{
    uv_mutex_lock(&pool->lock);
    pool->stopping = true;
    uv_cond_broadcast(&pool->work);
    uv_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++) {
        if (pool->threads[i].started) uv_thread_join(&pool->threads[i].tid);
        tr_store_close(pool->threads[i].db);
    }
}

static void pool_free(tr__store_pool_t *pool)
{
    uv_cond_destroy(&pool->idle);
    uv_cond_destroy(&pool->work);
    uv_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

int tr__store_pool_start(const char *url, int threads, size_t queue_max, tr__store_pool_t **out)
{
    int rc = 0;
    *out = NULL;
    if (threads < 1 || threads > TR_STORE_POOL_MAX_THREADS || queue_max < 1) return -EINVAL;
    tr__store_pool_t *pool = tr_xcalloc(1, sizeof(*pool));
    pool->queue_max = queue_max;
    pool->threads = tr_xcalloc((size_t)threads, sizeof(*pool->threads));
    if (uv_mutex_init(&pool->lock) != 0 || uv_cond_init(&pool->work) != 0 ||
        uv_cond_init(&pool->idle) != 0)
        abort(); /* only fails for lack of memory */

    for (int i = 0; i < threads; i++) {
        pool_thread_t *t = &pool->threads[i];
        t->pool = pool;
        pool->nthreads = i + 1;
        if ((rc = tr_store_open(url, &t->db)) != 0) goto out;
        if ((rc = uv_thread_create(&t->tid, thread_main, t)) != 0) goto out;
        t->started = true;
    }
    *out = pool;
out:
    if (rc != 0) {
        stop_threads(pool);
        pool_free(pool);
    }
    return rc;
}

void tr__store_pool_stop(tr__store_pool_t *pool)
{
    if (!pool) return;
    uv_mutex_lock(&pool->lock);
    /* Jobs of clients that were never detached: not run. */
    while (pool->head) {
        pool_job_t *j = pool->head;
        pool->head = j->next;
        j->rc = -ESHUTDOWN;
        deliver_locked(j);
    }
    pool->tail = NULL;
    pool->queued = 0;
    uv_mutex_unlock(&pool->lock);
    stop_threads(pool);
    pool_free(pool);
}

/* Runs the completions waiting for c's loop. */
static void run_completions(tr__store_pool_client_t *c)
{
    uv_mutex_lock(&c->pool->lock);
    pool_job_t *j = c->done_head;
    c->done_head = c->done_tail = NULL;
    uv_mutex_unlock(&c->pool->lock);
    while (j) {
        pool_job_t *next = j->next;
        j->complete(j->arg, j->ctx, j->rc);
        free(j);
        j = next;
    }
}

static void on_async(uv_async_t *a)
{
    run_completions(a->data);
}

int tr__store_pool_attach(tr__store_pool_t *pool, uv_loop_t *loop, tr__store_pool_client_t **out)
{
    tr__store_pool_client_t *c = tr_xcalloc(1, sizeof(*c));
    c->pool = pool;
    int rc = uv_async_init(loop, &c->async, on_async);
    if (rc != 0) {
        free(c);
        *out = NULL;
        return rc;
    }
    c->async.data = c;
    *out = c;
    return 0;
}

static void on_client_closed(uv_handle_t *h)
{
    free(h->data);
}

void tr__store_pool_detach(tr__store_pool_client_t *c)
{
    if (!c) return;
    tr__store_pool_t *pool = c->pool;
    uv_mutex_lock(&pool->lock);
    c->detached = true;
    /* Take this client's queued jobs out of the queue (note 3). */
    pool_job_t **link = &pool->head, *last = NULL;
    while (*link) {
        pool_job_t *j = *link;
        if (j->client == c) {
            *link = j->next;
            pool->queued--;
            j->rc = -ESHUTDOWN;
            append(&c->done_head, &c->done_tail, j);
        } else {
            last = j;
            link = &j->next;
        }
    }
    pool->tail = last;
    while (c->inflight > 0)
        uv_cond_wait(&pool->idle, &pool->lock);
    uv_mutex_unlock(&pool->lock);
    run_completions(c);
    uv_close((uv_handle_t *)&c->async, on_client_closed);
}

void tr__store_pool_submit(tr__store_pool_client_t *c, unsigned flags, tr_store_job_fn job,
                           void *ctx, tr__store_complete_fn complete, void *arg)
{
    tr__store_pool_t *pool = c->pool;
    int rc = 0;
    pool_job_t *j = tr_xmalloc(sizeof(*j));
    *j = (pool_job_t){
        .client = c, .flags = flags, .job = job, .ctx = ctx, .complete = complete, .arg = arg};
    uv_mutex_lock(&pool->lock);
    if (c->detached || pool->stopping) {
        rc = -ESHUTDOWN;
    } else if (pool->queued >= pool->queue_max) {
        rc = TR_STORE_EBUSY;
    } else {
        append(&pool->head, &pool->tail, j);
        pool->queued++;
        uv_cond_signal(&pool->work);
    }
    uv_mutex_unlock(&pool->lock);
    if (rc != 0) {
        if (rc == TR_STORE_EBUSY)
            tr_log_warn("database pool queue full (%zu jobs)", pool->queue_max);
        free(j);
        complete(arg, ctx, rc);
    }
}

size_t tr__store_pool_queued(tr__store_pool_t *pool)
{
    uv_mutex_lock(&pool->lock);
    size_t n = pool->queued;
    uv_mutex_unlock(&pool->lock);
    return n;
}

/*
 * store_hop_bench.c - what a thread hop costs a SQLite job: the same
 * read (a primary-key SELECT, like GET /api/auth/me's session lookup) run
 * the way tr_store_run runs it on SQLite (inline on the loop's own
 * connection) and the way it runs for a networked database (on a store pool
 * thread, completion back on the loop through a uv_async), one job at a
 * time and 64 at a time. This is why SQLite stays inline (store_job.h).
 * Pass a postgres:// URL as the second argument to time the pool on
 * PostgreSQL as well.
 *
 * Not part of the build; compile by hand from the repo root after
 * `make build`:
 *
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -Isrc bench/store_hop_bench.c build/libtrellis_kit.a \
 *       build/libllhttp.a $(pkg-config --libs libuv jansson libjwt libsodium sqlite3 \
 *       openssl hiredis libpq) -lpthread -lm -o /tmp/store_hop_bench
 *   /tmp/store_hop_bench [jobs=200000] [postgres://...]
 */
#include "kit/log.h"
#include "kit/store.h"
#include "kit/store_engine.h"
#include "kit/store_pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define ROWS 1000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_job(tr_store_t *db, void *ctx)
{
    int64_t *id = ctx;
    tr_rows_t *rows = NULL;
    int rc = tr_store_query(db, &rows, "SELECT id, name FROM bench WHERE id = $1", "i", *id);
    if (rc != 0) return rc;
    rc = tr_rows_next(rows) == 1 ? 0 : -1;
    tr_rows_free(rows);
    return rc;
}

typedef struct driver {
    tr__store_pool_client_t *client;
    long total, submitted, completed, failed;
    int64_t ids[64];
} driver_t;

static void submit_next(driver_t *d, int slot);

static void on_done(void *arg, void *ctx, int rc)
{
    driver_t *d = arg;
    if (rc != 0) d->failed++;
    d->completed++;
    if (d->submitted < d->total)
        submit_next(d, (int)((int64_t *)ctx - d->ids));
    else if (d->completed == d->total)
        tr__store_pool_detach(d->client);
}

static void submit_next(driver_t *d, int slot)
{
    d->ids[slot] = 1 + d->submitted++ % ROWS;
    tr__store_pool_submit(d->client, 0, read_job, &d->ids[slot], on_done, d);
}

/* Runs `total` jobs through a pool of `threads`, `depth` in flight. */
static double run_pool(const char *url, long total, int threads, int depth)
{
    tr__store_pool_t *pool = NULL;
    uv_loop_t loop;
    driver_t d = {.total = total};
    if (tr__store_pool_start(url, threads, 1024, &pool) != 0) {
        fprintf(stderr, "pool: %s\n", tr_store_errmsg(NULL));
        exit(1);
    }
    uv_loop_init(&loop);
    tr__store_pool_attach(pool, &loop, &d.client);
    double t0 = now_s();
    for (int i = 0; i < depth && d.submitted < total; i++)
        submit_next(&d, i);
    uv_run(&loop, UV_RUN_DEFAULT);
    double dt = now_s() - t0;
    uv_loop_close(&loop);
    tr__store_pool_stop(pool);
    if (d.failed) fprintf(stderr, "pool: %ld jobs failed\n", d.failed);
    return dt;
}

static void setup(const char *url)
{
    tr_store_t *db = NULL;
    if (tr_store_open(url, &db) != 0) {
        fprintf(stderr, "open: %s\n", tr_store_errmsg(NULL));
        exit(1);
    }
    tr_store_exec(db, NULL, "DROP TABLE IF EXISTS bench", NULL);
    tr_store_exec(db, NULL, "CREATE TABLE bench (id BIGINT PRIMARY KEY, name TEXT NOT NULL)", NULL);
    tr_store_begin(db);
    for (int64_t i = 1; i <= ROWS; i++)
        tr_store_exec(db, NULL, "INSERT INTO bench (id, name) VALUES ($1, $2)", "it", i, "row");
    tr_store_commit(db);
    tr_store_close(db);
}

static void report(const char *what, long n, double dt)
{
    printf("%-44s %10.0f jobs/s %8.2f us/job\n", what, (double)n / dt, dt * 1e6 / (double)n);
}

static void bench_url(const char *label, const char *url, long n, bool inline_too)
{
    char what[96];
    setup(url);
    if (inline_too) {
        tr_store_t *db = NULL;
        tr_store_open(url, &db);
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            int64_t id = 1 + i % ROWS;
            if (tr__store_job_execute(db, 0, read_job, &id) != 0) exit(1);
        }
        report(strcat(strcpy(what, label), ": inline on the loop"), n, now_s() - t0);
        tr_store_close(db);
    }
    snprintf(what, sizeof(what), "%s: pool of 1, 1 in flight", label);
    report(what, n, run_pool(url, n, 1, 1));
    snprintf(what, sizeof(what), "%s: pool of 4, 64 in flight", label);
    report(what, n, run_pool(url, n, 4, 64));
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    char dir[] = "/tmp/store-hop-XXXXXX", url[64];
    tr_log_init("bench", TR_LOG_WARN);
    if (!mkdtemp(dir)) return 1;
    snprintf(url, sizeof(url), "sqlite://%s/bench.db", dir);
    bench_url("sqlite", url, n, true);
    if (argc > 2) bench_url("postgres", argv[2], n / 10, false);
    char path[96];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/bench.db%s", dir, suffix[i]);
        unlink(path);
    }
    rmdir(dir);
    return 0;
}

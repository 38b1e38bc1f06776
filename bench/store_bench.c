/*
 * store_bench.c - write throughput and per-transaction latency of the store
 * (kit/store.h over SQLite) with several threads, each with its own
 * connection to one file, as the workers of a service have.
 *
 * Each thread runs N transactions "BEGIN; INSERT one row; COMMIT", back to
 * back or with a pause after each (standing in for the rest of a request's
 * work; a tight loop of two writers is the worst case for lock hand-over).
 * The figures that matter for an event loop are the tail latencies: a
 * transaction is time the loop cannot serve anything else, so p99.9 and max
 * show sleeps in SQLite's busy handler and checkpoints (fsync) run inside a
 * commit. Not part of the build; compile by hand from the repo root:
 *
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -Isrc bench/store_bench.c src/kit/store*.c \
 *       src/kit/alloc.c src/kit/log.c src/kit/ids.c \
 *       $(pkg-config --cflags --libs sqlite3 jansson libsodium) -lpthread \
 *       -o /tmp/store_bench
 *   /tmp/store_bench [threads=2] [transactions per thread=20000] [dir=/tmp]
 *                    [pause between transactions in us=0]
 *
 * The database is created fresh in dir (which should be on the disk the
 * service uses: tmpfs makes fsync free) and removed afterwards.
 */
#include "kit/log.h"
#include "kit/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *url;
    int index;
    int count;
    double *latency_us; /* count entries */
    int failures;
    long pause_us;
    pthread_barrier_t *start;
} worker_t;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    tr_store_t *db = NULL;
    if (tr_store_open(w->url, &db) != 0) {
        fprintf(stderr, "open: %s\n", tr_store_errmsg(NULL));
        exit(1);
    }
    pthread_barrier_wait(w->start);
    for (int i = 0; i < w->count; i++) {
        double t0 = now_us();
        int rc = tr_store_begin(db);
        if (rc == 0)
            rc = tr_store_exec(db, NULL, "INSERT INTO t (worker, seq, body) VALUES ($1, $2, $3)",
                               "iit", (int64_t)w->index, (int64_t)i, "a refresh token row");
        if (rc == 0) rc = tr_store_commit(db);
        if (rc != 0) {
            tr_store_rollback(db);
            w->failures++;
        }
        w->latency_us[i] = now_us() - t0;
        if (w->pause_us > 0) {
            struct timespec pause = {w->pause_us / 1000000, (w->pause_us % 1000000) * 1000};
            nanosleep(&pause, NULL);
        }
    }
    tr_store_close(db);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int count = argc > 2 ? atoi(argv[2]) : 20000;
    const char *dir = argc > 3 ? argv[3] : "/tmp";
    long pause_us = argc > 4 ? atol(argv[4]) : 0;
    char path[512], url[600], side[600];
    pthread_barrier_t start;
    pthread_t tids[64];
    worker_t workers[64];
    tr_store_t *db = NULL;

    if (threads < 1 || threads > 64 || count < 1 || pause_us < 0) {
        fprintf(stderr, "usage: %s [threads 1..64] [transactions per thread] [dir] [pause us]\n",
                argv[0]);
        return 2;
    }
    tr_log_init("store_bench", TR_LOG_ERROR);
    snprintf(path, sizeof(path), "%s/store_bench_%d.db", dir, (int)getpid());
    snprintf(url, sizeof(url), "sqlite://%s", path);
    if (tr_store_open(url, &db) != 0 ||
        tr_store_exec(db, NULL,
                      "CREATE TABLE t (id INTEGER PRIMARY KEY, worker INTEGER, seq INTEGER, "
                      "body TEXT)",
                      NULL) != 0) {
        fprintf(stderr, "setup: %s\n", db ? tr_store_errmsg(db) : tr_store_errmsg(NULL));
        return 1;
    }

    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        workers[i] = (worker_t){
            .url = url, .index = i, .count = count, .pause_us = pause_us, .start = &start};
        workers[i].latency_us = calloc((size_t)count, sizeof(double));
        pthread_create(&tids[i], NULL, worker_main, &workers[i]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_us();
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    double elapsed = (now_us() - t0) / 1e6;

    size_t total = (size_t)threads * (size_t)count;
    double *all = malloc(total * sizeof(double));
    int failures = 0, over_1ms = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + (size_t)i * (size_t)count, workers[i].latency_us,
               (size_t)count * sizeof(double));
        failures += workers[i].failures;
        free(workers[i].latency_us);
    }
    qsort(all, total, sizeof(double), cmp_double);
    for (size_t i = 0; i < total; i++)
        over_1ms += all[i] > 1000.0;
    printf("%d threads x %d transactions, pause %ld us: %.0f tx/s, failures %d\n", threads, count,
           pause_us, (double)total / elapsed, failures);
    printf("latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (>1ms: %d)\n", all[total / 2],
           all[total * 99 / 100], all[total * 999 / 1000], all[total - 1], over_1ms);

    tr_store_close(db);
    free(all);
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    return failures != 0;
}

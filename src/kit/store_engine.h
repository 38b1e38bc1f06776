/*
 * store_engine.h - the seam between the store front (store.c) and one
 * database engine (store_sqlite.c, later store_pg.c). Internal to the kit.
 *
 * The front owns everything engine-independent: URL parsing, decoding the
 * "t/i/b" parameter format into an array, the one-cursor-at-a-time rule,
 * error logging and migrations. An engine only opens connections, runs
 * already-decoded statements and maps its own result codes to the
 * TR_STORE_E* codes.
 *
 * Engine objects embed the front's structs as their FIRST member, so the
 * front hands the engine a tr_store_t * / tr_rows_t * and the engine casts it
 * back to its own type. A connection has at most one open cursor, so an
 * engine may keep its tr_rows_t inside its connection struct and never
 * allocate per query.
 */
#ifndef TR_STORE_ENGINE_H
#define TR_STORE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kit/store.h"

/* Upper bound on parameters per statement (SQLite's default limit). */
#define TR__STORE_MAX_PARAMS 999

/* One decoded parameter: $N in the SQL is params[N-1]. */
typedef struct tr__store_param {
    char type;        /* 't', 'i' or 'b' (already validated) */
    const char *text; /* 't': may be NULL, binds SQL NULL */
    int64_t num;      /* 'i'; 'b' as 0 or 1 */
} tr__store_param_t;

struct tr_store {
    const struct tr_store_engine *engine;
    tr_rows_t *open_rows; /* the cursor handed out and not yet freed, or NULL */
    char errmsg[256];     /* last error, for tr_store_errmsg */
};

struct tr_rows {
    tr_store_t *db;
};

struct tr_store_engine {
    const char *name; /* "sqlite", "postgres" */
    /* True for a database reached over the network: a service then runs its
     * jobs on the store pool's threads, never on an event loop. */
    bool networked;
    /* Opens target (the URL with its scheme removed). On failure returns a
     * negative code, *out is NULL and err holds a reason. */
    int (*open)(const char *target, tr_store_t **out, char *err, size_t errlen);
    void (*close)(tr_store_t *db);
    /* Runs one or more statements that take no parameters (migrations). */
    int (*exec_script)(tr_store_t *db, const char *sql);
    /* Runs one statement to completion; *changes may be NULL. */
    int (*exec)(tr_store_t *db, int64_t *changes, const char *sql, const tr__store_param_t *params,
                size_t nparams);
    /* Starts one statement and returns its cursor. The parameters are copied
     * by the engine, so the caller's strings may go away afterwards. */
    int (*query)(tr_store_t *db, tr_rows_t **rows, const char *sql, const tr__store_param_t *params,
                 size_t nparams);
    int (*rows_next)(tr_rows_t *rows);
    const char *(*rows_text)(tr_rows_t *rows, int col);
    int64_t (*rows_int)(tr_rows_t *rows, int col);
    bool (*rows_is_null)(tr_rows_t *rows, int col);
    void (*rows_free)(tr_rows_t *rows);
    int (*begin)(tr_store_t *db);
    int (*commit)(tr_store_t *db);
    int (*rollback)(tr_store_t *db);
    /* Called right after BEGIN in each migration transaction, to serialize
     * processes migrating at once; NULL when BEGIN already does (SQLite's
     * BEGIN IMMEDIATE). */
    int (*lock_migrations)(tr_store_t *db);
    /* SQL that takes a transaction-scoped lock on the text key $1 (for
     * tr_store_lock); NULL when the engine's writers already take turns. */
    const char *lock_key_sql;
};

extern const struct tr_store_engine tr__store_sqlite_engine;
extern const struct tr_store_engine tr__store_pg_engine;

/* Statement-cache figures of a SQLite connection (for metrics and tests).
 * Returns -EINVAL when db is not a SQLite connection. */
int tr__store_sqlite_cache_stats(tr_store_t *db, size_t *entries, uint64_t *hits, uint64_t *misses);

/* WAL figures of the database file of a SQLite connection (for metrics
 * and tests). */
typedef struct tr__store_wal_stats {
    uint64_t checkpoints; /* run by the background checkpointer so far */
    uint64_t restarts;    /* of them, forced RESTARTs that rewound a long WAL */
    int64_t wal_frames;   /* the WAL's length after the last commit */
} tr__store_wal_stats_t;

/* Fills *out. Returns -EINVAL when db is not a SQLite connection to a file
 * (all figures stay 0 for a file that is not in WAL mode). */
int tr__store_sqlite_wal_stats(tr_store_t *db, tr__store_wal_stats_t *out);

/* Runs a tr_store_run job on db (store_job.c): inside a transaction for
 * TR_STORE_TX, run again on TR_STORE_ERETRY. For a networked engine's pool
 * threads. Returns the job's or the transaction's result. */
typedef int (*tr_store_job_fn)(tr_store_t *db, void *ctx);
int tr__store_job_execute(tr_store_t *db, unsigned flags, tr_store_job_fn job, void *ctx);

/* Binds the calling worker thread's database for tr_store_run and detached
 * jobs (store_job.c): its own connection (SQLite) or its client of the
 * store pool (a networked engine), NULL/NULL when it has none. The service
 * runner binds at a worker's start and unbinds at its stop. */
struct tr__store_pool_client;
void tr__store_job_bind(tr_store_t *db, struct tr__store_pool_client *pool);

/* Runs now every tr_store_run_detached job still waiting on the calling
 * worker thread's loop, with w's store, and closes their timers (freed once
 * the loop runs again). The service calls it when a worker stops, before it
 * closes the worker's store. */
struct tr_worker;
void tr__store_detached_flush(struct tr_worker *w);

/* Records an error message on db (printf-style) for tr_store_errmsg. */
void tr__store_set_error(tr_store_t *db, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif

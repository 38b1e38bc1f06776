/*
 * log.h - structured JSON logs, one object per line on stderr.
 *
 * Every line carries ts (RFC 3339 UTC, milliseconds), level, service and msg;
 * callers add fields as key/value pairs. Lines are written with one write(2)
 * so lines from several threads never interleave. Never pass a password,
 * token or secret as a field.
 */
#ifndef TR_LOG_H
#define TR_LOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum tr_log_level { TR_LOG_DEBUG, TR_LOG_INFO, TR_LOG_WARN, TR_LOG_ERROR } tr_log_level_t;

/* Sets the service name written in every line (copied) and the minimum level. */
void tr_log_init(const char *service, tr_log_level_t level);
/* Parses "debug", "info", "warn", "error". Returns 0 or -EINVAL. */
int tr_log_parse_level(const char *text, tr_log_level_t *out);
/* True when lines of this level are written. */
int tr_log_enabled(tr_log_level_t level);

/* Writes one line: msg plus the fields of the object `fields` (stolen; may be
 * NULL). */
void tr_log_json(tr_log_level_t level, const char *msg, json_t *fields);
/* Fields without building a JSON object, for hot paths (the access log). */
typedef enum tr_log_field_type {
    TR_LOGF_STR,   /* str; NULL writes "" */
    TR_LOGF_INT,   /* num */
    TR_LOGF_MILLIS /* num microseconds, written as milliseconds: 1.234 */
} tr_log_field_type_t;

typedef struct tr_log_field {
    const char *key;
    tr_log_field_type_t type;
    const char *str;
    int64_t num;
} tr_log_field_t;

#define TR_LOG_STR(k, v)     ((tr_log_field_t){(k), TR_LOGF_STR, (v), 0})
#define TR_LOG_INT(k, v)     ((tr_log_field_t){(k), TR_LOGF_INT, NULL, (int64_t)(v)})
#define TR_LOG_MILLIS(k, us) ((tr_log_field_t){(k), TR_LOGF_MILLIS, NULL, (int64_t)(us)})

/* Writes one line: msg plus the n fields in order. */
void tr_log_fields(tr_log_level_t level, const char *msg, const tr_log_field_t *fields, size_t n);

/* printf-style message without extra fields. */
void tr_log(tr_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Batching for event-loop threads. With it on, this thread's lines collect in
 * a thread-local buffer (whole lines only) and reach stderr at tr_log_flush(),
 * when the buffer is full, or at once for TR_LOG_ERROR lines. Server workers
 * flush once per loop iteration, so a busy worker writes its access log with
 * one write(2) per batch instead of one per request. Turning it off flushes
 * and frees the buffer; do that before the thread ends. */
void tr_log_buffer_thread(int on);
/* Writes this thread's buffered lines, if any. */
void tr_log_flush(void);

#define tr_log_info(...)  tr_log(TR_LOG_INFO, __VA_ARGS__)
#define tr_log_warn(...)  tr_log(TR_LOG_WARN, __VA_ARGS__)
#define tr_log_error(...) tr_log(TR_LOG_ERROR, __VA_ARGS__)
#define tr_log_debug(...) tr_log(TR_LOG_DEBUG, __VA_ARGS__)

#endif

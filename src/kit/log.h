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

typedef enum tr_log_level {
    TR_LOG_DEBUG,
    TR_LOG_INFO,
    TR_LOG_WARN,
    TR_LOG_ERROR
} tr_log_level_t;

/* Sets the service name written in every line (copied) and the minimum level. */
void tr_log_init(const char *service, tr_log_level_t level);
/* Parses "debug", "info", "warn", "error". Returns 0 or -EINVAL. */
int tr_log_parse_level(const char *text, tr_log_level_t *out);
/* True when lines of this level are written. */
int tr_log_enabled(tr_log_level_t level);

/* Writes one line: msg plus the fields of the object `fields` (stolen; may be
 * NULL). */
void tr_log_json(tr_log_level_t level, const char *msg, json_t *fields);
/* printf-style message without extra fields. */
void tr_log(tr_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tr_log_info(...) tr_log(TR_LOG_INFO, __VA_ARGS__)
#define tr_log_warn(...) tr_log(TR_LOG_WARN, __VA_ARGS__)
#define tr_log_error(...) tr_log(TR_LOG_ERROR, __VA_ARGS__)
#define tr_log_debug(...) tr_log(TR_LOG_DEBUG, __VA_ARGS__)

#endif

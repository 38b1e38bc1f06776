/*
 * upstream_internal.h - what client.c needs from upstream.c and nothing else
 * may use: references, addresses, instance selection and the reporting of
 * outcomes into the shared (atomic) state. Not part of the kit's API.
 */
#ifndef TR_UPSTREAM_INTERNAL_H
#define TR_UPSTREAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "kit/breaker.h"
#include "kit/upstream.h"

void tr__upstream_ref(tr_upstream_t *up);
void tr__upstream_unref(tr_upstream_t *up);
bool tr__upstream_retired(const tr_upstream_t *up);

const struct sockaddr *tr__upstream_addr(const tr_upstream_t *up, size_t i);
const char *tr__upstream_address(const tr_upstream_t *up, size_t i);
/* "Host: host:port\r\n" for instance i. */
const char *tr__upstream_host_line(const tr_upstream_t *up, size_t i, size_t *len);
tr_breaker_t *tr__upstream_breaker(tr_upstream_t *up);

/* Picks an available instance for this worker: *cursor is the worker's
 * round-robin position (advanced), outstanding[i] its requests in flight to
 * instance i (used by least-request). Returns 0 and *out, or -ENOENT when no
 * instance is available. */
int tr__upstream_pick(tr_upstream_t *up, uint64_t now_ms, size_t *cursor,
                      const uint32_t *outstanding, size_t *out);
/* Feeds outlier detection with one try's outcome on instance i. */
void tr__upstream_record(tr_upstream_t *up, size_t i, bool failure, uint64_t now_ms);
/* One active health check result for instance i (health loop only). */
void tr__upstream_health_report(tr_upstream_t *up, size_t i, bool ok);

/* Metrics: one finished request, with its HTTP status (100..599) or, when
 * status is 0, the error name as the status label. */
void tr__upstream_observe(tr_upstream_t *up, int status, const char *error_name, double seconds);
void tr__upstream_count_connect_error(tr_upstream_t *up);
void tr__upstream_count_retry(tr_upstream_t *up);
void tr__upstream_count_timeout(tr_upstream_t *up);

#endif

/*
 * metrics.h - process-wide metrics in Prometheus text exposition format.
 *
 * Counters and gauges are registered once (at start, before workers run) and
 * updated lock-free from any thread. Labelled series are created on first use
 * under a mutex and then updated atomically. tr_metrics_render() writes the
 * whole registry, plus process_* metrics read from /proc, in the text format
 * version 0.0.4 accepted by `promtool check metrics`.
 */
#ifndef TR_METRICS_H
#define TR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "kit/buf.h"

typedef struct tr_counter tr_counter_t;
typedef struct tr_gauge tr_gauge_t;

/* A counter family. label_names is a comma-separated list ("result") or NULL
 * for an unlabelled counter. name must end in _total. Returns a family that
 * lives until exit; registering the same name twice returns the same family. */
tr_counter_t *tr_counter_register(const char *name, const char *help, const char *label_names);
/* Adds n to the series with these label values (as many as the family has
 * label names; ignored for an unlabelled counter). */
void tr_counter_add(tr_counter_t *c, uint64_t n, const char *const *label_values);
#define tr_counter_inc(c, labels) tr_counter_add((c), 1, (labels))

tr_gauge_t *tr_gauge_register(const char *name, const char *help);
void tr_gauge_add(tr_gauge_t *g, int64_t delta);
void tr_gauge_set(tr_gauge_t *g, int64_t value);

/* Records one finished HTTP request: http_requests_total{route,method,status}
 * and http_request_duration_seconds{route,method} (histogram). */
void tr_metrics_observe_request(const char *route, const char *method, int status, double seconds);
/* The http_requests_in_flight gauge (the server keeps it). */
void tr_metrics_in_flight(int delta);
/* The http_connections_active gauge (the server keeps it). */
void tr_metrics_connections(int delta);

/* Appends the exposition text to out. Returns 0 or TR_ETOOBIG. */
int tr_metrics_render(tr_buf_t *out);

#endif

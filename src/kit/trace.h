/*
 * trace.h - request ids and W3C trace context.
 */
#ifndef TR_TRACE_H
#define TR_TRACE_H

#include <stdbool.h>
#include <stddef.h>

#include "kit/http.h"

/* True when value is a sane request id to accept from a client: 1 to
 * TR_REQUEST_ID_MAX chars of [A-Za-z0-9._-]. */
bool tr_request_id_valid(const char *value);
/* Writes a fresh request id (a UUIDv7). out must hold TR_REQUEST_ID_MAX+1. */
void tr_request_id_generate(char *out);

/* Parses a traceparent header (version 00 format; future versions are parsed
 * by their first four fields, as the spec asks). On success fills trace_id,
 * parent_id and flags and returns 0; on any defect returns -EINVAL and leaves
 * *trace untouched. */
int tr_traceparent_parse(const char *header, tr_trace_t *trace);
/* Starts this hop's span: keeps trace_id when set (else generates one) and
 * generates span_id. */
void tr_trace_start(tr_trace_t *trace);
/* Formats "00-<trace_id>-<span_id>-<flags>" for propagation (56 chars + NUL). */
void tr_traceparent_format(const tr_trace_t *trace, char out[56]);

#endif

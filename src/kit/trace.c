/*
 * trace.c - request ids and W3C Trace Context (level 1) traceparent headers.
 *
 * traceparent = version "-" trace-id "-" parent-id "-" trace-flags, all
 * lowercase hex. Parsing follows §3.2 and §4.3 of the recommendation:
 *   - version "ff" is invalid; version 00 must be exactly 55 chars;
 *   - a higher version may be longer, but only if the char after the flags is
 *     '-' (its extra fields are ignored), so we parse what we understand of
 *     future versions instead of dropping the trace;
 *   - an all-zero trace-id or parent-id is invalid.
 * A header that fails any check is ignored as a whole: the caller starts a
 * fresh trace.
 */
#include "kit/trace.h"
#include "kit/ids.h"

#include <errno.h>
#include <string.h>

#define TRACEPARENT_V0_LEN 55

bool tr_request_id_valid(const char *value)
{
    if (!value) return false;
    size_t n = 0;
    for (; value[n]; n++) {
        char c = value[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= TR_REQUEST_ID_MAX) return false;
    }
    return n > 0;
}

void tr_request_id_generate(char *out)
{
    tr_uuid7(out);
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

static bool all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0') return false;
    return true;
}

static int hex_value(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

int tr_traceparent_parse(const char *header, tr_trace_t *trace)
{
    if (!header) return -EINVAL;
    size_t len = strlen(header);
    if (len < TRACEPARENT_V0_LEN) return -EINVAL;

    const char *version = header;
    const char *trace_id = header + 3;
    const char *parent_id = header + 36;
    const char *flags = header + 53;

    if (!is_lower_hex(version, 2) || memcmp(version, "ff", 2) == 0) return -EINVAL;
    if (memcmp(version, "00", 2) == 0) {
        if (len != TRACEPARENT_V0_LEN) return -EINVAL;
    } else if (len > TRACEPARENT_V0_LEN && header[TRACEPARENT_V0_LEN] != '-') {
        return -EINVAL;
    }
    if (header[2] != '-' || header[35] != '-' || header[52] != '-') return -EINVAL;
    if (!is_lower_hex(trace_id, 32) || all_zero(trace_id, 32)) return -EINVAL;
    if (!is_lower_hex(parent_id, 16) || all_zero(parent_id, 16)) return -EINVAL;
    if (!is_lower_hex(flags, 2)) return -EINVAL;

    memcpy(trace->trace_id, trace_id, 32);
    trace->trace_id[32] = '\0';
    memcpy(trace->parent_id, parent_id, 16);
    trace->parent_id[16] = '\0';
    trace->flags = (uint8_t)(hex_value(flags[0]) << 4 | hex_value(flags[1]));
    return 0;
}

/* Random hex id of n bytes; the spec forbids the all-zero id. */
static void random_id(char *out, size_t n)
{
    unsigned char bytes[16];
    do {
        tr_random_bytes(bytes, n);
        tr_hex_encode(bytes, n, out);
    } while (all_zero(out, 2 * n));
}

void tr_trace_start(tr_trace_t *trace)
{
    if (trace->trace_id[0] == '\0') {
        random_id(trace->trace_id, 16);
        trace->parent_id[0] = '\0';
    }
    random_id(trace->span_id, 8);
}

void tr_traceparent_format(const tr_trace_t *trace, char out[56])
{
    static const char digits[] = "0123456789abcdef";
    memcpy(out, "00-", 3);
    memcpy(out + 3, trace->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, trace->span_id, 16);
    out[52] = '-';
    out[53] = digits[trace->flags >> 4];
    out[54] = digits[trace->flags & 0x0f];
    out[55] = '\0';
}

/*
 * fuzz_traceparent.c - libFuzzer target for the W3C traceparent parser
 * (trace.c), which reads a header every client may send.
 *
 * The input is the header value. Contracts: a refused value leaves the
 * trace untouched; an accepted one yields a 32-hex trace id and a 16-hex
 * parent id, lowercase and not all zeros, and formatting the trace and
 * parsing that again gives the same ids and flags (the round trip the
 * gateway relies on when it propagates a child span).
 * Seeds: tests/fuzz/corpus/traceparent/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kit/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_hex(const char *s, size_t n)
{
    bool nonzero = false;
    if (strlen(s) != n) abort();
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) abort();
        if (s[i] != '0') nonzero = true;
    }
    if (!nonzero) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *header = malloc(size + 1);
    memcpy(header, data, size);
    header[size] = '\0';

    tr_trace_t t, before;
    memset(&t, 0x5a, sizeof(t));
    before = t;
    if (tr_traceparent_parse(header, &t) != 0) {
        if (memcmp(&t, &before, sizeof(t)) != 0) abort();
    } else {
        check_hex(t.trace_id, 32);
        check_hex(t.parent_id, 16);
        tr_trace_t child = t;
        tr_trace_start(&child);
        if (strcmp(child.trace_id, t.trace_id) != 0) abort();
        char out[56];
        tr_traceparent_format(&child, out);
        tr_trace_t again;
        memset(&again, 0, sizeof(again));
        if (tr_traceparent_parse(out, &again) != 0) abort();
        if (strcmp(again.trace_id, child.trace_id) != 0 ||
            strcmp(again.parent_id, child.span_id) != 0 || again.flags != child.flags)
            abort();
    }
    free(header);
    return 0;
}

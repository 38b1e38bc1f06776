/*
 * ids.h - identifiers and timestamps in the platform's wire formats.
 */
#ifndef TR_IDS_H
#define TR_IDS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define TR_UUID_LEN 36 /* without NUL */

/* Writes a UUIDv7 (RFC 9562: 48-bit unix ms, version, random) as 36 lowercase
 * chars plus NUL. Monotonic within a thread for ids made in the same ms. */
void tr_uuid7(char out[TR_UUID_LEN + 1]);
/* True when s is a canonical lowercase or uppercase UUID string. */
int tr_uuid_valid(const char *s);
/* Parses a UUID in its 36-character text form (either case) into 16 bytes.
 * Returns 0 or -EINVAL. */
int tr_uuid_parse(const char *s, uint8_t out[16]);

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t tr_now_ms(void);
/* Monotonic nanoseconds, for durations. */
uint64_t tr_mono_ns(void);
/* Formats unix ms as RFC 3339 UTC with milliseconds: 2026-11-22T15:11:33.123Z
 * (24 chars plus NUL). */
void tr_time_format(int64_t unix_ms, char out[32]);
/* The JSON of a timestamp column: unix ms as an RFC 3339 string (as
 * tr_time_format), or JSON null for 0 ("never"). New reference. */
json_t *tr_time_json(int64_t unix_ms);

/* Fills out with n random bytes from the OS CSPRNG (libsodium). */
void tr_random_bytes(void *out, size_t n);
/* Writes 2*n lowercase hex chars plus NUL. */
void tr_hex_encode(const void *data, size_t n, char *out);

#endif

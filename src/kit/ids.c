/*
 * ids.c - UUIDv7, clocks, RFC 3339 timestamps, random bytes and hex.
 *
 * UUIDv7 LAYOUT (RFC 9562 §5.7, "Method 1" of §6.2 for monotonicity):
 *
 *   bytes 0-5   unix time in ms, big-endian
 *   byte  6     version 7 in the high nibble, then the top 4 bits of rand_a
 *   byte  7     the low 8 bits of rand_a
 *   byte  8     variant 10 in the top two bits, then 6 random bits
 *   bytes 9-15  random
 *
 * rand_a is a 12-bit counter kept per thread. When the clock has moved past
 * the last id made on this thread the counter is re-seeded at random with its
 * top bit clear, which leaves at least 2048 increments before it can overflow
 * (the RFC's advice against early rollover). Within the same millisecond, or
 * when the clock stepped back, the counter is incremented instead; on overflow
 * the timestamp is advanced by one ms past the real clock. Hence ids made on
 * one thread always sort (as strings, too) in the order they were made. Ids
 * from different threads are unique through the 62 random bits of rand_b.
 */
#include "kit/ids.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * RANDOM POOL. Small requests (ids, trace ids, span ids: three per HTTP
 * request) are served from a per-thread pool, because a getrandom(2) per id
 * was the largest per-request cost of the server. A refill draws a 32-byte
 * seed from the OS CSPRNG and expands it with ChaCha20
 * (randombytes_buf_deterministic), one syscall per POOL_BYTES. Pool bytes are handed out once and
 * wiped as they go. Requests larger than POOL_MAX_REQUEST go straight to the OS. A forked child
 * starts with an empty pool so it never repeats its parent's bytes.
 */
#define POOL_BYTES       4096
#define POOL_MAX_REQUEST 64

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static _Thread_local unsigned char pool[POOL_BYTES];
static _Thread_local size_t pool_left;

static void pool_forget(void)
{
    pool_left = 0;
}

static void sodium_setup(void)
{
    /* Without a working CSPRNG every id and token we would make is suspect. */
    if (sodium_init() < 0) {
        fputs("trellis: sodium_init failed\n", stderr);
        abort();
    }
    pthread_atfork(NULL, NULL, pool_forget);
}

void tr_random_bytes(void *out, size_t n)
{
    pthread_once(&sodium_once, sodium_setup);
    if (n > POOL_MAX_REQUEST) {
        randombytes_buf(out, n);
        return;
    }
    if (pool_left < n) {
        unsigned char seed[randombytes_SEEDBYTES];
        randombytes_buf(seed, sizeof(seed));
        randombytes_buf_deterministic(pool, sizeof(pool), seed);
        sodium_memzero(seed, sizeof(seed));
        pool_left = sizeof(pool);
    }
    unsigned char *src = pool + sizeof(pool) - pool_left;
    memcpy(out, src, n);
    sodium_memzero(src, n);
    pool_left -= n;
}

void tr_hex_encode(const void *data, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

int64_t tr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t tr_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void tr_time_format(int64_t unix_ms, char out[32])
{
    /* Floor division, so instants before 1970 still get a 0..999 ms part. */
    int64_t secs = unix_ms / 1000;
    int64_t ms = unix_ms % 1000;
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(out, 32, "1970-01-01T00:00:00.000Z");
        return;
    }
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)ms);
}

static _Thread_local int64_t uuid_last_ms = -1;
static _Thread_local uint16_t uuid_counter;

static uint16_t counter_seed(const unsigned char *rnd)
{
    return (uint16_t)(((rnd[0] << 8) | rnd[1]) & 0x07ff);
}

void tr_uuid7(char out[TR_UUID_LEN + 1])
{
    unsigned char rnd[10];
    tr_random_bytes(rnd, sizeof rnd);

    int64_t now = tr_now_ms();
    if (now > uuid_last_ms) {
        uuid_last_ms = now;
        uuid_counter = counter_seed(rnd);
    } else if (++uuid_counter > 0x0fff) {
        uuid_last_ms++;
        uuid_counter = counter_seed(rnd);
    }

    uint64_t ts = (uint64_t)uuid_last_ms;
    unsigned char b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ts >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (uuid_counter >> 8));
    b[7] = (unsigned char)(uuid_counter & 0xff);
    b[8] = (unsigned char)(0x80 | (rnd[2] & 0x3f));
    memcpy(b + 9, rnd + 3, 7);

    char hex[33];
    tr_hex_encode(b, sizeof b, hex);
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[TR_UUID_LEN] = '\0';
}

int tr_uuid_valid(const char *s)
{
    if (!s) return 0;
    for (int i = 0; i < TR_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0; /* also stops at a NUL before the 36th char */
        }
    }
    return s[TR_UUID_LEN] == '\0';
}

int tr_uuid_parse(const char *s, uint8_t out[16])
{
    static const int dash[] = {8, 13, 18, 23};
    size_t n = 0;
    if (!s || strlen(s) != 36) return -EINVAL;
    for (int i = 0; i < 4; i++)
        if (s[dash[i]] != '-') return -EINVAL;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) continue;
        char ch = s[i];
        int v = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (v < 0) return -EINVAL;
        if (n % 2 == 0)
            out[n / 2] = (uint8_t)(v << 4);
        else
            out[n / 2] |= (uint8_t)v;
        n++;
    }
    return 0;
}

json_t *tr_time_json(int64_t unix_ms)
{
    char text[32];
    if (unix_ms == 0) return json_null();
    tr_time_format(unix_ms, text);
    return json_string(text);
}

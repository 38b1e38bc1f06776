/* test_ids.c - UUIDv7 layout and ordering, UUID validation, clocks, RFC 3339
 * formatting and hex encoding (kit/ids.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "kit/ids.h"

static int hex_nibble(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void test_uuid7_layout(void **state)
{
    (void)state;
    int64_t before = tr_now_ms();
    char id[TR_UUID_LEN + 1];
    tr_uuid7(id);
    int64_t after = tr_now_ms();

    assert_int_equal(strlen(id), TR_UUID_LEN);
    assert_true(tr_uuid_valid(id));
    for (int i = 0; i < TR_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(id[i], '-');
        else
            assert_true((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'));
    }
    assert_int_equal(id[14], '7');                   /* version */
    assert_int_equal(hex_nibble(id[19]) & 0xc, 0x8); /* variant 10 */

    /* The first 48 bits are the creation time in ms (maybe bumped by at most
     * a few ms if earlier ids on this thread overflowed the counter). */
    char ts_hex[13];
    memcpy(ts_hex, id, 8);
    memcpy(ts_hex + 8, id + 9, 4);
    ts_hex[12] = '\0';
    int64_t ts = (int64_t)strtoll(ts_hex, NULL, 16);
    assert_true(ts >= before);
    assert_true(ts <= after + 5);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_uuid7_monotonic(void **state)
{
    (void)state;
    enum { N = 10000 };
    char(*ids)[TR_UUID_LEN + 1] = malloc(N * sizeof *ids);
    char **sorted = malloc(N * sizeof *sorted);
    assert_non_null(ids);
    assert_non_null(sorted);
    for (int i = 0; i < N; i++) {
        tr_uuid7(ids[i]);
        sorted[i] = ids[i];
    }
    qsort(sorted, N, sizeof *sorted, cmp_str);
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(sorted[i], ids[i]);                    /* sort order == creation order */
        if (i > 0) assert_true(strcmp(ids[i - 1], ids[i]) < 0); /* and no duplicates */
        assert_int_equal(ids[i][14], '7');
    }
    free(sorted);
    free(ids);
}

static void test_uuid_valid_table(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int valid;
    } cases[] = {
        {"01890a5d-ac96-774b-bcce-b302099a8057", 1},
        {"01890A5D-AC96-774B-BCCE-B302099A8057", 1},
        {"00000000-0000-0000-0000-000000000000", 1},
        {"01890a5d-ac96-774b-bcce-b302099a805", 0},   /* 35 chars */
        {"01890a5d-ac96-774b-bcce-b302099a80570", 0}, /* 37 chars */
        {"01890a5dac96-774b-bcce-b302099a8057-", 0},  /* dash misplaced */
        {"01890a5d-ac96-774b-bcce_b302099a8057", 0},
        {"01890a5g-ac96-774b-bcce-b302099a8057", 0}, /* non-hex */
        {"01890a5d-ac96-774b-bcce-b302099a805 ", 0},
        {"{01890a5d-ac96-774b-bcce-b302099a8057}", 0},
        {"01890a5dac96774bbcceb302099a8057", 0}, /* no dashes */
        {"", 0},
        {NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (tr_uuid_valid(cases[i].s) != cases[i].valid)
            fail_msg("tr_uuid_valid(\"%s\") != %d", cases[i].s ? cases[i].s : "NULL",
                     cases[i].valid);
    }
}

static void test_time_format(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {10, "1970-01-01T00:00:00.010Z"},
        {999, "1970-01-01T00:00:00.999Z"},
        {951782400000, "2000-02-29T00:00:00.000Z"}, /* leap day */
        {1700000000123, "2023-11-14T22:13:20.123Z"},
        {1704067199999, "2023-12-31T23:59:59.999Z"},
        {1704067200000, "2024-01-01T00:00:00.000Z"},
        {4102444800005, "2100-01-01T00:00:00.005Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[32];
        memset(out, 'x', sizeof out);
        tr_time_format(cases[i].ms, out);
        assert_string_equal(out, cases[i].text);
        assert_int_equal(strlen(out), 24);
    }
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = tr_now_ms();
    assert_true(now > 1700000000000); /* after Nov 2023 */
    uint64_t a = tr_mono_ns();
    uint64_t b = tr_mono_ns();
    assert_true(b >= a);
}

static void test_hex_and_random(void **state)
{
    (void)state;
    const unsigned char bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char hex[2 * sizeof bytes + 1];
    tr_hex_encode(bytes, sizeof bytes, hex);
    assert_string_equal(hex, "00017f80abff");
    tr_hex_encode(bytes, 0, hex);
    assert_string_equal(hex, "");

    unsigned char r1[32] = {0}, r2[32] = {0}, zero[32] = {0};
    tr_random_bytes(r1, sizeof r1);
    tr_random_bytes(r2, sizeof r2);
    assert_memory_not_equal(r1, zero, sizeof r1);
    assert_memory_not_equal(r1, r2, sizeof r1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid7_layout),     cmocka_unit_test(test_uuid7_monotonic),
        cmocka_unit_test(test_uuid_valid_table), cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_clocks),           cmocka_unit_test(test_hex_and_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_trace.c - request id validation and W3C traceparent parsing, starting
 * and formatting (kit/trace.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "kit/ids.h"
#include "kit/trace.h"

static void test_traceparent_valid(void **state)
{
    (void)state;
    static const struct {
        const char *header;
        const char *trace_id;
        const char *parent_id;
        uint8_t flags;
    } cases[] = {
        /* The examples of W3C Trace Context §3.2.2.5 / §3.2.2.4. */
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0x01},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
         "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 0x00},
        {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
         "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0x01},
        /* Unknown flag bits are kept (§3.2.2.5: other bits are not reset). */
        {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
         "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0xff},
        /* A future version: parse the known fields, ignore what follows '-'. */
        {"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
         "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0x01},
        {"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09-what-the-future-holds",
         "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0x09},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tr_trace_t t;
        memset(&t, 0, sizeof t);
        strcpy(t.span_id, "keepme");
        if (tr_traceparent_parse(cases[i].header, &t) != 0)
            fail_msg("rejected %s", cases[i].header);
        assert_string_equal(t.trace_id, cases[i].trace_id);
        assert_string_equal(t.parent_id, cases[i].parent_id);
        assert_int_equal(t.flags, cases[i].flags);
        assert_string_equal(t.span_id, "keepme");
    }
}

static void test_traceparent_invalid(void **state)
{
    (void)state;
    static const char *const cases[] = {
        NULL,
        "",
        "00",
        /* version ff is forbidden */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        /* version 00 must be exactly 55 chars */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
        /* a future version may only continue with '-' */
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        /* uppercase hex is not allowed anywhere */
        "0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A",
        /* all-zero ids */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        /* wrong separators and field sizes */
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
        "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-101",
        /* non-hex */
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        /* surrounding whitespace is the HTTP layer's business, not ours */
        " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tr_trace_t t, before;
        memset(&t, 0xa5, sizeof t);
        before = t;
        if (tr_traceparent_parse(cases[i], &t) != -EINVAL)
            fail_msg("accepted \"%s\"", cases[i] ? cases[i] : "NULL");
        assert_memory_equal(&t, &before, sizeof t); /* untouched on error */
    }
}

static int is_lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static void test_trace_start_and_format(void **state)
{
    (void)state;
    /* Continuing a caller's trace keeps trace id and parent, adds a span. */
    tr_trace_t t;
    memset(&t, 0, sizeof t);
    assert_int_equal(
        tr_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t), 0);
    tr_trace_start(&t);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_id, "00f067aa0ba902b7");
    assert_true(is_lower_hex(t.span_id, 16));
    assert_string_not_equal(t.span_id, "0000000000000000");

    char out[56];
    tr_traceparent_format(&t, out);
    assert_int_equal(strlen(out), 55);
    assert_memory_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    assert_memory_equal(out + 36, t.span_id, 16);
    assert_string_equal(out + 52, "-01");

    /* What we send must be accepted by a peer, and names our span as parent. */
    tr_trace_t peer;
    memset(&peer, 0, sizeof peer);
    assert_int_equal(tr_traceparent_parse(out, &peer), 0);
    assert_string_equal(peer.parent_id, t.span_id);

    /* A new trace gets a fresh trace id, no parent, and distinct spans. */
    tr_trace_t fresh1, fresh2;
    memset(&fresh1, 0, sizeof fresh1);
    memset(&fresh2, 0, sizeof fresh2);
    tr_trace_start(&fresh1);
    tr_trace_start(&fresh2);
    assert_true(is_lower_hex(fresh1.trace_id, 32));
    assert_string_equal(fresh1.parent_id, "");
    assert_string_not_equal(fresh1.trace_id, fresh2.trace_id);
    assert_string_not_equal(fresh1.span_id, fresh2.span_id);

    fresh1.flags = 0xa3;
    tr_traceparent_format(&fresh1, out);
    assert_string_equal(out + 52, "-a3");
}

static void test_request_id_valid(void **state)
{
    (void)state;
    char max_ok[TR_REQUEST_ID_MAX + 1];
    char too_long[TR_REQUEST_ID_MAX + 2];
    memset(max_ok, 'a', TR_REQUEST_ID_MAX);
    max_ok[TR_REQUEST_ID_MAX] = '\0';
    memset(too_long, 'a', TR_REQUEST_ID_MAX + 1);
    too_long[TR_REQUEST_ID_MAX + 1] = '\0';
    assert_int_equal(TR_REQUEST_ID_MAX, 128);

    static const struct {
        const char *id;
        bool valid;
    } cases[] = {
        {"a", true},          {"req-123", true},
        {"A.b_C-9", true},    {"01890a5d-ac96-774b-bcce-b302099a8057", true},
        {"", false},          {NULL, false},
        {"has space", false}, {"semi;colon", false},
        {"new\nline", false}, {"cr\r", false},
        {"quote\"", false},   {"slash/", false},
        {"colon:", false},    {"caf\xc3\xa9", false}, /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (tr_request_id_valid(cases[i].id) != cases[i].valid)
            fail_msg("tr_request_id_valid(\"%s\") != %d", cases[i].id ? cases[i].id : "NULL",
                     cases[i].valid);
    }
    assert_true(tr_request_id_valid(max_ok));    /* 128 chars */
    assert_false(tr_request_id_valid(too_long)); /* 129 chars */

    char generated[TR_REQUEST_ID_MAX + 1];
    tr_request_id_generate(generated);
    assert_true(tr_request_id_valid(generated));
    assert_true(tr_uuid_valid(generated));
    assert_int_equal(generated[14], '7');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_trace_start_and_format),
        cmocka_unit_test(test_request_id_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_log.c - JSON log lines on stderr (kit/log.h): one valid object per
 * line, the fixed fields, caller fields, level filtering, escaping, the line
 * size cap, ownership of the fields object, and lines from several threads.
 *
 * stderr is captured by pointing fd 2 at a pipe drained by a reader thread,
 * so lines larger than the pipe's buffer cannot block the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kit/log.h"

typedef struct capture {
    int read_fd;
    int saved_stderr;
    pthread_t reader;
    char *data;
    size_t len;
    size_t cap;
} capture_t;

static void *drain(void *arg)
{
    capture_t *c = arg;
    for (;;) {
        if (c->cap - c->len < 4096) {
            c->cap = c->cap ? c->cap * 2 : 65536;
            c->data = realloc(c->data, c->cap);
            if (!c->data) abort();
        }
        ssize_t n = read(c->read_fd, c->data + c->len, c->cap - c->len - 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        c->len += (size_t)n;
    }
    c->data[c->len] = '\0';
    return NULL;
}

static void capture_start(capture_t *c)
{
    memset(c, 0, sizeof *c);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    c->read_fd = fds[0];
    c->saved_stderr = dup(STDERR_FILENO);
    assert_true(c->saved_stderr >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    close(fds[1]);
    assert_int_equal(pthread_create(&c->reader, NULL, drain, c), 0);
}

/* Restores stderr and returns everything written meanwhile (owned by c). */
static const char *capture_stop(capture_t *c)
{
    dup2(c->saved_stderr, STDERR_FILENO); /* closes the last write end */
    close(c->saved_stderr);
    pthread_join(c->reader, NULL);
    close(c->read_fd);
    return c->data;
}

static void capture_free(capture_t *c)
{
    free(c->data);
}

/* Splits captured text into lines, checks each is one JSON object, and
 * returns them as an array (caller decrefs). */
static json_t *parse_lines(const char *text)
{
    json_t *lines = json_array();
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) fail_msg("last line has no newline: %s", p);
        json_error_t err;
        json_t *obj = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &err);
        if (!obj) fail_msg("invalid JSON line (%s): %.*s", err.text, (int)(nl - p), p);
        assert_true(json_is_object(obj));
        json_array_append_new(lines, obj);
        p = nl + 1;
    }
    return lines;
}

static const char *str_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) fail_msg("field %s missing or not a string", key);
    return json_string_value(v);
}

static void assert_timestamp(const char *ts)
{
    /* 2026-11-22T15:11:33.123Z */
    assert_int_equal(strlen(ts), 24);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (int i = 0; i < 24; i++) {
        if (shape[i] == 'd')
            assert_true(ts[i] >= '0' && ts[i] <= '9');
        else
            assert_int_equal(ts[i], shape[i]);
    }
}

static void test_basic_line(void **state)
{
    (void)state;
    tr_log_init("test-svc", TR_LOG_DEBUG);
    capture_t c;
    capture_start(&c);
    tr_log_info("hello %d", 42);
    const char *text = capture_stop(&c);

    assert_non_null(text);
    assert_memory_equal(text, "{\"ts\":\"", 7); /* ts comes first */
    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 1);
    json_t *line = json_array_get(lines, 0);
    assert_timestamp(str_field(line, "ts"));
    assert_string_equal(str_field(line, "level"), "info");
    assert_string_equal(str_field(line, "service"), "test-svc");
    assert_string_equal(str_field(line, "msg"), "hello 42");
    assert_int_equal(json_object_size(line), 4);
    json_decref(lines);
    capture_free(&c);
}

static void test_typed_fields_and_batching(void **state)
{
    (void)state;
    tr_log_init("test-svc", TR_LOG_DEBUG);
    capture_t c;
    capture_start(&c);
    tr_log_buffer_thread(1);
    tr_log_field_t f[] = {
        TR_LOG_STR("route", "/api/x/{id}"),
        TR_LOG_STR("quote", "a\"b"),
        TR_LOG_STR("none", NULL),
        TR_LOG_INT("status", 404),
        TR_LOG_INT("neg", -12),
        TR_LOG_MILLIS("d1", 1234),
        TR_LOG_MILLIS("d2", 5),
        TR_LOG_MILLIS("d3", 2000000),
        TR_LOG_STR("msg", "reserved keys are dropped"),
    };
    tr_log_fields(TR_LOG_INFO, "request", f, sizeof(f) / sizeof(f[0]));
    tr_log_fields(TR_LOG_DEBUG, "second", NULL, 0);
    tr_log_flush();
    tr_log_buffer_thread(0);
    const char *text = capture_stop(&c);

    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 2);
    json_t *line = json_array_get(lines, 0);
    assert_string_equal(str_field(line, "msg"), "request");
    assert_string_equal(str_field(line, "route"), "/api/x/{id}");
    assert_string_equal(str_field(line, "quote"), "a\"b");
    assert_string_equal(str_field(line, "none"), "");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 404);
    assert_int_equal(json_integer_value(json_object_get(line, "neg")), -12);
    assert_true(json_real_value(json_object_get(line, "d1")) == 1.234);
    assert_true(json_real_value(json_object_get(line, "d2")) == 0.005);
    assert_true(json_real_value(json_object_get(line, "d3")) == 2000.0);
    assert_string_equal(str_field(json_array_get(lines, 1), "msg"), "second");
    json_decref(lines);
    capture_free(&c);
}

static void test_fields(void **state)
{
    (void)state;
    tr_log_init("orders", TR_LOG_INFO);
    json_t *fields =
        json_pack("{s:s, s:i, s:b, s:b, s:n, s:f, s:{s:i}, s:[i,s], s:s, s:s}", "request_id", "r-1",
                  "status", 201, "ok", 1, "bad", 0, "user_id", "duration_ms", 12.5, "nested", "a",
                  1, "list", 7, "x", "msg", "spoofed", "level", "spoofed");
    assert_non_null(fields);
    json_incref(fields); /* keep a reference to observe that the call drops one */

    capture_t c;
    capture_start(&c);
    tr_log_json(TR_LOG_WARN, "request done", fields);
    const char *text = capture_stop(&c);

    assert_int_equal(fields->refcount, 1);
    json_decref(fields);

    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 1);
    json_t *line = json_array_get(lines, 0);
    assert_string_equal(str_field(line, "level"), "warn");
    assert_string_equal(str_field(line, "service"), "orders");
    assert_string_equal(str_field(line, "msg"), "request done");
    assert_string_equal(str_field(line, "request_id"), "r-1");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 201);
    assert_true(json_is_true(json_object_get(line, "ok")));
    assert_true(json_is_false(json_object_get(line, "bad")));
    assert_true(json_is_null(json_object_get(line, "user_id")));
    assert_true(json_real_value(json_object_get(line, "duration_ms")) == 12.5);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(line, "nested"), "a")), 1);
    json_t *list = json_object_get(line, "list");
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_array_get(list, 1)), "x");
    /* Caller fields cannot duplicate or override the fixed ones. */
    assert_null(strstr(text, "spoofed"));
    assert_non_null(strstr(text, "\"level\""));
    assert_null(strstr(strstr(text, "\"level\"") + 1, "\"level\""));
    json_decref(lines);
    capture_free(&c);

    /* NULL fields and a message of NULL are fine. */
    capture_start(&c);
    tr_log_json(TR_LOG_ERROR, NULL, NULL);
    text = capture_stop(&c);
    lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 1);
    assert_string_equal(str_field(json_array_get(lines, 0), "msg"), "");
    assert_string_equal(str_field(json_array_get(lines, 0), "level"), "error");
    json_decref(lines);
    capture_free(&c);
}

static void test_level_filter(void **state)
{
    (void)state;
    tr_log_init("svc", TR_LOG_WARN);
    assert_false(tr_log_enabled(TR_LOG_DEBUG));
    assert_false(tr_log_enabled(TR_LOG_INFO));
    assert_true(tr_log_enabled(TR_LOG_WARN));
    assert_true(tr_log_enabled(TR_LOG_ERROR));

    json_t *dropped = json_pack("{s:s}", "k", "v");
    json_incref(dropped);

    capture_t c;
    capture_start(&c);
    tr_log_debug("debug %s", "no");
    tr_log_info("info no");
    tr_log_json(TR_LOG_INFO, "json info no", dropped);
    tr_log_warn("warn yes");
    tr_log_error("error yes");
    const char *text = capture_stop(&c);

    assert_int_equal(dropped->refcount, 1); /* consumed even when filtered */
    json_decref(dropped);

    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 2);
    assert_string_equal(str_field(json_array_get(lines, 0), "msg"), "warn yes");
    assert_string_equal(str_field(json_array_get(lines, 0), "level"), "warn");
    assert_string_equal(str_field(json_array_get(lines, 1), "msg"), "error yes");
    assert_string_equal(str_field(json_array_get(lines, 1), "level"), "error");
    json_decref(lines);
    capture_free(&c);

    tr_log_init("svc", TR_LOG_ERROR);
    capture_start(&c);
    tr_log_warn("warn no");
    text = capture_stop(&c);
    assert_int_equal(c.len, 0);
    capture_free(&c);
}

static void test_parse_level(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        tr_log_level_t level;
    } cases[] = {
        {"debug", 0, TR_LOG_DEBUG}, {"info", 0, TR_LOG_INFO}, {"warn", 0, TR_LOG_WARN},
        {"error", 0, TR_LOG_ERROR}, {"INFO", 0, TR_LOG_INFO}, {"", -EINVAL, 0},
        {"trace", -EINVAL, 0},      {"info ", -EINVAL, 0},    {NULL, -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tr_log_level_t out = (tr_log_level_t)99;
        int rc = tr_log_parse_level(cases[i].text, &out);
        if (rc != cases[i].rc) fail_msg("parse_level(%s) = %d", cases[i].text, rc);
        if (rc == 0)
            assert_int_equal(out, cases[i].level);
        else
            assert_int_equal(out, 99); /* untouched */
    }
}

static void test_escaping(void **state)
{
    (void)state;
    tr_log_init("svc \"quoted\"\n", TR_LOG_DEBUG);
    const char msg[] =
        "q\"b\\s/n\nr\rt\tc\x01\x1f del\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
        " bad\xff\xc3( over\xc0\xaf sur\xed\xa0\x80 end";
    const char expect[] = "q\"b\\s/n\nr\rt\tc\x01\x1f del\x7f caf\xc3\xa9 \xe2\x82\xac "
                          "\xf0\x9f\x98\x80 bad\xef\xbf\xbd\xef\xbf\xbd( "
                          "over\xef\xbf\xbd\xef\xbf\xbd "
                          "sur\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd end";
    json_t *fields = json_object();
    json_object_set_new(fields, "we\"ird\nkey", json_string("v\"al\n"));
    json_object_set_new(fields, "nul", json_stringn("a\0b", 3));

    capture_t c;
    capture_start(&c);
    tr_log_json(TR_LOG_INFO, msg, fields);
    const char *text = capture_stop(&c);

    /* Exactly one newline (the terminator) and no raw control characters. */
    assert_ptr_equal(strchr(text, '\n'), text + c.len - 1);
    for (size_t i = 0; i + 1 < c.len; i++)
        if ((unsigned char)text[i] < 0x20) fail_msg("raw control char 0x%02x at %zu", text[i], i);

    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 1);
    json_t *line = json_array_get(lines, 0);
    assert_string_equal(str_field(line, "msg"), expect);
    assert_string_equal(str_field(line, "service"), "svc \"quoted\"\n");
    assert_string_equal(str_field(line, "we\"ird\nkey"), "v\"al\n");
    json_t *nul = json_object_get(line, "nul");
    assert_int_equal(json_string_length(nul), 3);
    assert_memory_equal(json_string_value(nul), "a\0b", 3);
    json_decref(lines);
    capture_free(&c);
}

/* The edges of well-formed UTF-8 (RFC 3629 table 3-7): the smallest and
 * largest sequences of each length pass unchanged; overlong forms,
 * surrogates, code points above U+10FFFF, bad continuation bytes and a
 * sequence cut by the end of the string become one U+FFFD per byte. */
static void test_utf8_boundaries(void **state)
{
    (void)state;
#define R "\xef\xbf\xbd"
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\xc2\x80|\xdf\xbf", "\xc2\x80|\xdf\xbf"},
        {"\xe0\xa0\x80|\xed\x9f\xbf|\xee\x80\x80|\xef\xbf\xbf",
         "\xe0\xa0\x80|\xed\x9f\xbf|\xee\x80\x80|\xef\xbf\xbf"},
        {"\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf", "\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf"},
        {"a\xc1\xbfz", "a" R R "z"},             /* overlong 2-byte */
        {"a\xe0\x80\x80z", "a" R R R "z"},       /* overlong 3-byte */
        {"a\xe0\x9f\xbfz", "a" R R R "z"},       /* overlong 3-byte, top */
        {"a\xf0\x80\x80\x80z", "a" R R R R "z"}, /* overlong 4-byte */
        {"a\xf0\x8f\xbf\xbfz", "a" R R R R "z"}, /* overlong 4-byte, top */
        {"a\xf4\x90\x80\x80z", "a" R R R R "z"}, /* U+110000 */
        {"a\xf5\x80\x80\x80z", "a" R R R R "z"}, /* no such lead byte */
        {"a\xed\xbf\xbfz", "a" R R R "z"},       /* low surrogate */
        {"a\xe2\x28\xa1z", "a" R "(" R "z"},     /* bad second byte */
        {"a\xe2\x82\x28z", "a" R R "(z"},        /* bad third byte */
        {"a\xf0\x9f\x98\x28z", "a" R R R "(z"},  /* bad fourth byte */
        {"a\x80\xbfz", "a" R R "z"},             /* lone continuations */
        {"end\xe2\x82", "end" R R},              /* cut 3-byte sequence */
        {"end\xf0\x9f\x98", "end" R R R},        /* cut 4-byte sequence */
        {"end\xc3", "end" R},                    /* cut 2-byte sequence */
    };
#undef R
    tr_log_init("utf8", TR_LOG_DEBUG);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        capture_t c;
        capture_start(&c);
        tr_log_json(TR_LOG_INFO, cases[i].in, NULL);
        const char *text = capture_stop(&c);
        json_t *lines = parse_lines(text);
        assert_int_equal(json_array_size(lines), 1);
        const char *got = str_field(json_array_get(lines, 0), "msg");
        if (strcmp(got, cases[i].out) != 0) fail_msg("case %zu: got %s", i, text);
        json_decref(lines);
        capture_free(&c);
    }
}

static void test_truncation(void **state)
{
    (void)state;
    tr_log_init("svc", TR_LOG_DEBUG);
    size_t big = 100 * 1024;
    char *msg = malloc(big + 1);
    assert_non_null(msg);
    /* Multi-byte chars and escapes, so a cut could land inside either. */
    for (size_t i = 0; i < big; i += 4)
        memcpy(msg + i, i % 8 ? "\xe2\x82\xac\"" : "\xc3\xa9\\\n", 4);
    msg[big] = '\0';

    capture_t c;
    capture_start(&c);
    tr_log_error("%s", msg);
    json_t *fields = json_pack("{s:s, s:s%, s:i}", "first", "kept", "huge", msg, big, "after", 1);
    tr_log_json(TR_LOG_INFO, "small", fields);
    const char *text = capture_stop(&c);
    free(msg);

    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), 2);
    assert_true(strchr(text, '\n') - text <= 64 * 1024);
    assert_true(c.len - (size_t)(strchr(text, '\n') - text) - 1 <= 64 * 1024);

    json_t *l1 = json_array_get(lines, 0);
    assert_true(json_is_true(json_object_get(l1, "log_truncated")));
    assert_true(strlen(str_field(l1, "msg")) > 30 * 1024);
    assert_string_equal(str_field(l1, "level"), "error");

    json_t *l2 = json_array_get(lines, 1);
    assert_true(json_is_true(json_object_get(l2, "log_truncated")));
    assert_string_equal(str_field(l2, "msg"), "small");
    assert_string_equal(str_field(l2, "first"), "kept");
    assert_null(json_object_get(l2, "huge"));
    assert_null(json_object_get(l2, "after"));
    json_decref(lines);
    capture_free(&c);
}

enum { THREADS = 4, LINES_PER_THREAD = 500 };

static void *log_many(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LINES_PER_THREAD; i++)
        tr_log_json(TR_LOG_INFO, "tick",
                    json_pack("{s:i, s:i, s:s}", "thread", id, "seq", i, "pad",
                              "0123456789012345678901234567890123456789"));
    return NULL;
}

static void test_threads_do_not_interleave(void **state)
{
    (void)state;
    tr_log_init("svc", TR_LOG_INFO);
    capture_t c;
    capture_start(&c);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    const char *text = capture_stop(&c);

    json_t *lines = parse_lines(text);
    assert_int_equal(json_array_size(lines), THREADS * LINES_PER_THREAD);
    int next_seq[THREADS] = {0};
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        int t = (int)json_integer_value(json_object_get(line, "thread"));
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(json_integer_value(json_object_get(line, "seq")), next_seq[t]++);
    }
    json_decref(lines);
    capture_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_line),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_typed_fields_and_batching),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_utf8_boundaries),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_threads_do_not_interleave),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

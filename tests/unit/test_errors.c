/* test_errors.c - the error table (ARCHITECTURE.md §5): every code maps to
 * its documented status and name, out-of-range values fall back to 500
 * "internal", and the reason phrases on the status line are the RFC 9110
 * ones for every status the kit sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kit/errors.h"

static void test_codes_and_statuses(void **state)
{
    (void)state;
    static const struct {
        tr_err_t err;
        int status;
        const char *code;
    } want[] = {
        {TR_ERR_INVALID_ARGUMENT, 400, "invalid_argument"},
        {TR_ERR_UNAUTHENTICATED, 401, "unauthenticated"},
        {TR_ERR_PERMISSION_DENIED, 403, "permission_denied"},
        {TR_ERR_NOT_FOUND, 404, "not_found"},
        {TR_ERR_METHOD_NOT_ALLOWED, 405, "method_not_allowed"},
        {TR_ERR_REQUEST_TIMEOUT, 408, "request_timeout"},
        {TR_ERR_ALREADY_EXISTS, 409, "already_exists"},
        {TR_ERR_CONFLICT, 409, "conflict"},
        {TR_ERR_PAYLOAD_TOO_LARGE, 413, "payload_too_large"},
        {TR_ERR_UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type"},
        {TR_ERR_IDEMPOTENCY_KEY_REUSED, 422, "idempotency_key_reused"},
        {TR_ERR_RATE_LIMITED, 429, "rate_limited"},
        {TR_ERR_HEADERS_TOO_LARGE, 431, "headers_too_large"},
        {TR_ERR_INTERNAL, 500, "internal"},
        {TR_ERR_BAD_GATEWAY, 502, "bad_gateway"},
        {TR_ERR_UNAVAILABLE, 503, "unavailable"},
        {TR_ERR_DEADLINE_EXCEEDED, 504, "deadline_exceeded"},
        {TR_ERR_URI_TOO_LONG, 414, "uri_too_long"},
        {TR_ERR_NOT_IMPLEMENTED, 501, "not_implemented"},
    };
    assert_int_equal(sizeof(want) / sizeof(want[0]), TR_ERR__COUNT);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(tr_err_status(want[i].err), want[i].status);
        assert_string_equal(tr_err_code(want[i].err), want[i].code);
    }
}

static void test_out_of_range_is_internal(void **state)
{
    (void)state;
    assert_int_equal(tr_err_status(TR_ERR__COUNT), 500);
    assert_string_equal(tr_err_code(TR_ERR__COUNT), "internal");
    assert_int_equal(tr_err_status((tr_err_t)-1), 500);
    assert_string_equal(tr_err_code((tr_err_t)-1), "internal");
}

static void test_reason_phrases(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *reason;
    } want[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_string_equal(tr_http_reason(want[i].status), want[i].reason);
    /* Every error status has its own phrase, never the fallback. */
    for (int e = 0; e < TR_ERR__COUNT; e++)
        assert_string_not_equal(tr_http_reason(tr_err_status((tr_err_t)e)), "Unknown");
    assert_string_equal(tr_http_reason(299), "Unknown");
    assert_string_equal(tr_http_reason(0), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_and_statuses),
        cmocka_unit_test(test_out_of_range_is_internal),
        cmocka_unit_test(test_reason_phrases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

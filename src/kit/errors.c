/* errors.c - the single table mapping error codes to HTTP statuses. */
#include "kit/errors.h"

static const struct {
    int status;
    const char *code;
} table[TR_ERR__COUNT] = {
    [TR_ERR_INVALID_ARGUMENT] = {400, "invalid_argument"},
    [TR_ERR_UNAUTHENTICATED] = {401, "unauthenticated"},
    [TR_ERR_PERMISSION_DENIED] = {403, "permission_denied"},
    [TR_ERR_NOT_FOUND] = {404, "not_found"},
    [TR_ERR_METHOD_NOT_ALLOWED] = {405, "method_not_allowed"},
    [TR_ERR_REQUEST_TIMEOUT] = {408, "request_timeout"},
    [TR_ERR_ALREADY_EXISTS] = {409, "already_exists"},
    [TR_ERR_CONFLICT] = {409, "conflict"},
    [TR_ERR_PAYLOAD_TOO_LARGE] = {413, "payload_too_large"},
    [TR_ERR_UNSUPPORTED_MEDIA_TYPE] = {415, "unsupported_media_type"},
    [TR_ERR_IDEMPOTENCY_KEY_REUSED] = {422, "idempotency_key_reused"},
    [TR_ERR_RATE_LIMITED] = {429, "rate_limited"},
    [TR_ERR_HEADERS_TOO_LARGE] = {431, "headers_too_large"},
    [TR_ERR_INTERNAL] = {500, "internal"},
    [TR_ERR_BAD_GATEWAY] = {502, "bad_gateway"},
    [TR_ERR_UNAVAILABLE] = {503, "unavailable"},
    [TR_ERR_DEADLINE_EXCEEDED] = {504, "deadline_exceeded"},
    [TR_ERR_URI_TOO_LONG] = {414, "uri_too_long"},
    [TR_ERR_NOT_IMPLEMENTED] = {501, "not_implemented"},
};

int tr_err_status(tr_err_t err)
{
    return (unsigned)err < TR_ERR__COUNT ? table[err].status : 500;
}

const char *tr_err_code(tr_err_t err)
{
    return (unsigned)err < TR_ERR__COUNT ? table[err].code : "internal";
}

const char *tr_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

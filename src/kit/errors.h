/*
 * errors.h - the public error vocabulary (ARCHITECTURE.md §5).
 *
 * Every error a client sees is one of these codes. The code decides the HTTP
 * status; the mapping lives in errors.c and nowhere else.
 */
#ifndef TR_ERRORS_H
#define TR_ERRORS_H

typedef enum tr_err {
    TR_ERR_INVALID_ARGUMENT,       /* 400 invalid_argument */
    TR_ERR_UNAUTHENTICATED,        /* 401 unauthenticated */
    TR_ERR_PERMISSION_DENIED,      /* 403 permission_denied */
    TR_ERR_NOT_FOUND,              /* 404 not_found */
    TR_ERR_METHOD_NOT_ALLOWED,     /* 405 method_not_allowed */
    TR_ERR_REQUEST_TIMEOUT,        /* 408 request_timeout */
    TR_ERR_ALREADY_EXISTS,         /* 409 already_exists */
    TR_ERR_CONFLICT,               /* 409 conflict */
    TR_ERR_PAYLOAD_TOO_LARGE,      /* 413 payload_too_large */
    TR_ERR_UNSUPPORTED_MEDIA_TYPE, /* 415 unsupported_media_type */
    TR_ERR_IDEMPOTENCY_KEY_REUSED, /* 422 idempotency_key_reused */
    TR_ERR_RATE_LIMITED,           /* 429 rate_limited */
    TR_ERR_HEADERS_TOO_LARGE,      /* 431 headers_too_large */
    TR_ERR_INTERNAL,               /* 500 internal */
    TR_ERR_BAD_GATEWAY,            /* 502 bad_gateway */
    TR_ERR_UNAVAILABLE,            /* 503 unavailable */
    TR_ERR_DEADLINE_EXCEEDED,      /* 504 deadline_exceeded */
    TR_ERR_URI_TOO_LONG,           /* 414 uri_too_long */
    TR_ERR_NOT_IMPLEMENTED,        /* 501 not_implemented */
    TR_ERR__COUNT
} tr_err_t;

/* The HTTP status for an error code. */
int tr_err_status(tr_err_t err);
/* The wire name of an error code ("invalid_argument", ...). */
const char *tr_err_code(tr_err_t err);
/* The standard reason phrase for an HTTP status ("Not Found"), or "Unknown". */
const char *tr_http_reason(int status);

#endif

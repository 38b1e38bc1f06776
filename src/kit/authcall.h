/*
 * authcall.h - calls to auth's /internal/ endpoints (the revocation feed,
 * API-key checks) from any service. Internal to the kit.
 *
 * A link names the worker's HTTP client, where auth is (an upstream that
 * may be replaced, or still unknown: NULL) and the internal token. The
 * upstream never opens its breaker: callers retry on their own schedule.
 */
#ifndef TR_AUTHCALL_H
#define TR_AUTHCALL_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kit/client.h"
#include "kit/upstream.h"

typedef struct tr__auth_link {
    tr_client_t *client;            /* the calling worker's */
    _Atomic(tr_upstream_t *) *auth; /* where auth is; *auth NULL until known */
    const char *internal_token;
} tr__auth_link_t;

/* Called once with err 0 and auth's answer (status, doc: the parsed JSON
 * body or NULL when it was not JSON; borrowed for the call), or with a
 * negative err (TR_CLIENT_E* or -EPROTO) and doc NULL. */
typedef void (*tr__auth_call_cb)(void *arg, int err, int status, json_t *doc);
typedef struct tr__auth_call tr__auth_call_t;

/* Sends method target (with body, a JSON text, when not NULL) to auth with
 * the internal token, from the link's worker loop. Returns 0 and *out (may
 * be NULL; cancel with tr__auth_call_cancel: then cb is never called), or a
 * negative code (-EAGAIN while auth's address is unknown) and cb is never
 * called. */
int tr__auth_call(const tr__auth_link_t *link, const char *method, const char *target,
                  const char *body, uint64_t timeout_ms, tr__auth_call_cb cb, void *arg,
                  tr__auth_call_t **out);
void tr__auth_call_cancel(tr__auth_call_t *c);

#endif

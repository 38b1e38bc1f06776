/*
 * authn_internal.h - the kit authenticator's seam with the service runner
 * (service.c) and the revocation feed (revfeed.c). Internal to the kit.
 */
#ifndef TR_AUTHN_INTERNAL_H
#define TR_AUTHN_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kit/authn.h"
#include "kit/client.h"
#include "kit/revocations.h"
#include "kit/server.h"
#include "kit/upstream.h"

typedef struct tr__authn tr__authn_t;               /* process-wide */
typedef struct tr__authn_worker tr__authn_worker_t; /* one per worker thread */
typedef struct tr__revfeed tr__revfeed_t;

/* Loads keys and settings from the service's options (tr_authn_options) and
 * creates the revocation set for nworkers readers. internal_token is
 * borrowed and must outlive the authenticator. With self (the auth service
 * itself) --auth-url is ignored and tr__authn_set_auth must name this
 * process's own listener once it listens. Problems are logged. Returns 0,
 * -EINVAL for unusable options, or another negative code. */
int tr__authn_init(const tr_config_t *cfg, const char *data_dir, const char *internal_token,
                   bool self, int nworkers, tr__authn_t **out);
/* Sets (or replaces) auth's address, "host:port". Any thread. Returns 0 or
 * a negative code (logged). */
int tr__authn_set_auth(tr__authn_t *a, const char *instance);
void tr__authn_free(tr__authn_t *a);

/* Per worker: the verified-token cache, the API-key cache and an HTTP
 * client to auth; worker 0 also runs the revocation feed. Stop before the
 * worker's loop closes. */
tr__authn_worker_t *tr__authn_worker_start(tr__authn_t *a, tr_worker_t *w);
void tr__authn_worker_stop(tr__authn_worker_t *aw);

/* The set of revoked sessions this authenticator checks. */
tr_revocations_t *tr__authn_revocations(const tr__authn_t *a);
/* True once the first revocation-feed answer was applied (/readyz). */
bool tr__authn_ready(const tr__authn_t *a);

/* Authenticates req for a route (bearer token, else an API key when
 * accepted), then calls done exactly once: at once for a bearer token
 * (before this returns), later from the loop for an API key that is not
 * cached. */
void tr__authn_authenticate(tr__authn_worker_t *aw, tr_req_t *req, bool accept_api_key,
                            tr_authn_done_fn done, void *arg);

/* The authenticator of req's worker, NULL when the service has none
 * (service.c). */
tr__authn_worker_t *tr__service_authn_worker(const tr_req_t *req);

/* ---- calls to auth's /internal/ endpoints (authn.c) ----------------------- */

/* Called once with err 0 and auth's answer (status, doc: the parsed JSON
 * body or NULL when it was not JSON; borrowed for the call), or with a
 * negative err (TR_CLIENT_E* or -EPROTO) and doc NULL. */
typedef void (*tr__auth_call_cb)(void *arg, int err, int status, json_t *doc);
typedef struct tr__auth_call tr__auth_call_t;

/* Sends method target (with body, a JSON text, when not NULL) to auth with
 * the internal token. Returns 0 and *out (cancel with tr__auth_call_cancel:
 * then cb is never called), or a negative code and cb is never called. */
int tr__auth_call(tr__authn_worker_t *aw, const char *method, const char *target, const char *body,
                  uint64_t timeout_ms, tr__auth_call_cb cb, void *arg, tr__auth_call_t **out);
void tr__auth_call_cancel(tr__auth_call_t *c);

/* ---- the revocation feed (revfeed.c) -------------------------------------- */

/* Starts long-polling auth's GET /internal/revocations on aw's loop and
 * merging what it answers into set; calls loaded(arg) after the first
 * answer was applied. */
tr__revfeed_t *tr__revfeed_start(tr__authn_worker_t *aw, uv_loop_t *loop, tr_revocations_t *set,
                                 void (*loaded)(void *arg), void *arg);
void tr__revfeed_stop(tr__revfeed_t *f);

#endif

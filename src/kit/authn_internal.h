/*
 * authn_internal.h - the kit authenticator's seam with the service runner
 * (service.c). Internal to the kit.
 */
#ifndef TR_AUTHN_INTERNAL_H
#define TR_AUTHN_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kit/authn.h"
#include "kit/revocations.h"
#include "kit/server.h"

typedef struct tr__authn tr__authn_t;               /* process-wide */
typedef struct tr__authn_worker tr__authn_worker_t; /* one per worker thread */

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

/* tr_authn_bearer / tr_authn_api_key on a given worker's authenticator
 * (service.c finds the request's). */
tr_authn_result_t tr__authn_bearer(tr__authn_worker_t *aw, tr_req_t *req, const char *authorization,
                                   const char **why);
void tr__authn_api_key(tr__authn_worker_t *aw, tr_req_t *req, const char *key,
                       tr_authn_done_fn done, void *arg, tr_authn_lookup_t **pending);

#endif

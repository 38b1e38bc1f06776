/*
 * apikeys.h - X-API-Key checks against auth, cached per worker
 * (apikeys.c).
 */
#ifndef TR_GATEWAY_APIKEYS_H
#define TR_GATEWAY_APIKEYS_H

#include "gateway/state.h"
#include "gateway/table.h"

typedef struct gw_apikey_lookup gw_apikey_lookup_t;

typedef struct gw_api_key_identity {
    char user_id[40];
    char role[24];
} gw_api_key_identity_t;

/* status 0: valid (id filled); -EACCES: refused (reason set); other
 * negative: auth could not be asked (answer 503). */
typedef void (*gw_apikey_cb)(void *arg, int status, const gw_api_key_identity_t *id,
                             const char *reason);

gw_apikey_cache_t *gw_apikey_cache_new(void);
void gw_apikey_cache_free(gw_apikey_cache_t *c);
/* Checks key: from the worker's cache (returns 0 and calls nothing, with
 * *status, *id and *reason filled) or by asking auth (returns 1; cb comes
 * later from the loop unless gw_apikey_cancel is called first; *pending is
 * the handle). live gives the auth upstream; the caller must hold it until
 * the callback or the cancel. Returns a negative code when auth cannot be
 * asked at all (-ENOENT: no auth upstream; the client's fail-fast errors). */
int gw_apikey_check(gw_worker_t *gw, const gw_live_t *live, const char *key, int *status,
                    gw_api_key_identity_t *id, const char **reason, gw_apikey_cb cb, void *arg,
                    gw_apikey_lookup_t **pending);
void gw_apikey_cancel(gw_apikey_lookup_t *l);

#endif

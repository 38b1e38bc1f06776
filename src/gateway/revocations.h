/*
 * revocations.h - the set of revoked sessions and the poller that fills
 * it from auth's feed (revocations.c).
 */
#ifndef TR_GATEWAY_REVOCATIONS_H
#define TR_GATEWAY_REVOCATIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/state.h"

gw_revocations_t *gw_revocations_new(size_t nworkers);
void gw_revocations_free(gw_revocations_t *r);
/* True when the session (a UUID string) was revoked. Called by worker
 * worker_index only (its hazard slot). */
bool gw_revocations_contains(gw_revocations_t *r, int worker_index, const char *session_id);
/* Worker 0 starts and stops the poller of auth's revocation feed. */
int gw_revocations_poller_start(gw_worker_t *gw);
void gw_revocations_poller_stop(gw_worker_t *gw);

/* Pure parts, for tests: a snapshot set of session ids with expiry. */
typedef struct gw_revset gw_revset_t;
/* A new set holding the entries of old (may be NULL) that are not expired
 * at now_ms plus adds (n of them). */
gw_revset_t *gw_revset_merge(const gw_revset_t *old, const uint8_t (*ids)[16],
                             const int64_t *expires_ms, size_t n, int64_t now_ms);
bool gw_revset_contains(const gw_revset_t *s, const uint8_t id[16]);
size_t gw_revset_count(const gw_revset_t *s);
void gw_revset_free(gw_revset_t *s);
/* Parses a UUID string into 16 bytes. Returns 0 or -EINVAL. */
int gw_uuid_parse(const char *s, uint8_t out[16]);

#endif

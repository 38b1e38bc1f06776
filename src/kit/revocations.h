/*
 * revocations.h - the set of revoked sessions every service checks access
 * tokens against, so that logout, "revoke this session", a password change,
 * a ban and a stolen refresh token act within a second everywhere without a
 * call to auth per request.
 *
 * Sessions are 16-byte UUIDs. Each entry carries the time (this host's
 * clock, unix ms) after which no token of that session can still be alive;
 * it is dropped at the next merge after that. The set is filled by one
 * publisher at a time (the revocation feed, revfeed.h) and read by every
 * worker on every authenticated request.
 */
#ifndef TR_REVOCATIONS_H
#define TR_REVOCATIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- an immutable set (pure; exposed for tests) ---------------------------- */

typedef struct tr_revset tr_revset_t;

/* A new set holding old's entries not yet expired at now_ms plus the n given
 * ones (duplicates keep the later expiry). old may be NULL. Never fails. */
tr_revset_t *tr_revset_merge(const tr_revset_t *old, const uint8_t (*ids)[16],
                             const int64_t *expires_ms, size_t n, int64_t now_ms);
bool tr_revset_contains(const tr_revset_t *s, const uint8_t id[16]);
size_t tr_revset_count(const tr_revset_t *s);
void tr_revset_free(tr_revset_t *s);

/* ---- the published set ----------------------------------------------------- */

typedef struct tr_revocations tr_revocations_t;

/* A set read by nreaders reader slots (one per worker thread). Never fails. */
tr_revocations_t *tr_revocations_new(size_t nreaders);
/* Frees the set. No reader may be inside tr_revocations_contains. */
void tr_revocations_free(tr_revocations_t *r);

/* True when session_id (a UUID string) is revoked. reader is the calling
 * worker's index (< nreaders); each reader slot is used by one thread at a
 * time. Lock-free: an empty set costs one relaxed load. */
bool tr_revocations_contains(tr_revocations_t *r, int reader, const char *session_id);

/* Publishes the current set merged with n entries, dropping those expired
 * at now_ms (n may be 0 to just drop expired ones). Publishers are
 * serialised by a mutex; readers never wait. */
void tr_revocations_merge(tr_revocations_t *r, const uint8_t (*ids)[16], const int64_t *expires_ms,
                          size_t n, int64_t now_ms);

/* Entries in the current set. */
size_t tr_revocations_count(tr_revocations_t *r);

#endif

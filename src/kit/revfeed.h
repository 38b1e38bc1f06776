/*
 * revfeed.h - the revocation feed: worker 0 of a service long-polls auth's
 * GET /internal/revocations and merges what it answers into the process's
 * set of revoked sessions (revfeed.c has the protocol). Internal to the kit.
 */
#ifndef TR_REVFEED_H
#define TR_REVFEED_H

#include <uv.h>

#include "kit/authcall.h"
#include "kit/revocations.h"

typedef struct tr__revfeed tr__revfeed_t;

/* Starts the feed on loop (link's worker loop), merging into set; calls
 * loaded(arg) once, after the first answer was applied. link is borrowed
 * and must outlive the feed. Never fails. */
tr__revfeed_t *tr__revfeed_start(const tr__auth_link_t *link, uv_loop_t *loop,
                                 tr_revocations_t *set, void (*loaded)(void *arg), void *arg);
/* Stops the feed (cancels its request; the memory goes with its timer's
 * close callback). NULL is a no-op. */
void tr__revfeed_stop(tr__revfeed_t *f);

#endif

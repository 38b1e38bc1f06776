/*
 * server_internal.h - server.c's internals that tests look at. The request's
 * private part is http_internal.h's (server.c includes it; http.c never
 * includes this header, see DIRECTION there).
 */
#ifndef TR_SERVER_INTERNAL_H
#define TR_SERVER_INTERNAL_H

#include <stddef.h>

#include "kit/http.h"
#include "kit/http_internal.h"

typedef struct tr__conn tr__conn_t;

/* Bytes received on the request's connection and held in user space until
 * they are parsed (the stash), for tests of the streaming bound. */
size_t tr__req_held_bytes(const tr_req_t *req);

#endif

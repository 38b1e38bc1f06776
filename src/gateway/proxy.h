/*
 * proxy.h - the request pipeline after the head (proxy.c): API key,
 * rate limit, then the reverse proxy with streaming both ways.
 */
#ifndef TR_GATEWAY_PROXY_H
#define TR_GATEWAY_PROXY_H

#include "kit/http.h"

/* handle_claimed for every request on_headers claimed. */
void gw_dispatch(tr_req_t *req);

#endif

/*
 * tunnel.h - WebSocket pass-through (tunnel.c): piping two TCP
 * streams.
 */
#ifndef TR_GATEWAY_TUNNEL_H
#define TR_GATEWAY_TUNNEL_H

#include <stddef.h>
#include <uv.h>

#include "gateway/state.h"

/* Pipes a client socket (taken over with tr_req_upgrade) and an upstream
 * stream (from the client's on_upgrade) until either side closes. head is
 * written to the client first (the upstream's 101 answer), then
 * client_extra (bytes the upstream sent after its head); client_pending
 * (bytes the client sent after its request) goes to the upstream. Takes
 * ownership of client_fd and upstream in every case (closes them on
 * failure). Returns 0 or a negative errno. */
int gw_tunnel_start(gw_worker_t *gw, int client_fd, uv_tcp_t *upstream, const char *head,
                    size_t head_len, const char *client_extra, size_t client_extra_len,
                    const char *client_pending, size_t client_pending_len);
/* Closes every tunnel of the worker (worker shutdown). */
void gw_tunnels_close_all(gw_worker_t *gw);

#endif

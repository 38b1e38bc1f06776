/*
 * static.h - the dashboard directory at / (static.c; the path checks
 * are pure).
 */
#ifndef TR_GATEWAY_STATIC_H
#define TR_GATEWAY_STATIC_H

#include <stdbool.h>
#include <stddef.h>

#include "kit/http.h"

/* Maps a request path to a file below the web root: percent-decoded, with
 * "/" and paths ending in '/' meaning index.html. Writes the relative path
 * ("index.html", "assets/app.js") into out. Returns 0, or -EINVAL for a
 * path that is not allowed (a "." or ".." segment, an escaped NUL, a
 * malformed escape, a backslash, a segment starting with '.'), or
 * -ENAMETOOLONG. Pure. */
int gw_static_relpath(const char *path, size_t len, char *out, size_t outlen);
/* The Content-Type for a file name, by extension. Pure. */
const char *gw_static_content_type(const char *name);
/* True when an If-None-Match header value lists etag (or is "*"). Pure. */
bool gw_static_etag_matches(const char *if_none_match, const char *etag);
/* Answers a GET or HEAD for a path no route claims from st->web_root:
 * 200 with the file, 304, 404, or 405 for other methods. */
void gw_static_serve(tr_req_t *req);

#endif

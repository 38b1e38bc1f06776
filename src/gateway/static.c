/*
 * static.c - the web dashboard directory (--web-root, default "web") served
 * at / for GET and HEAD requests no route claims.
 *
 * CONFINEMENT. A request path becomes a file path in two steps, each of
 * which alone would keep it inside the root: gw_static_relpath decodes the
 * percent-escapes and refuses "." and ".." segments, hidden names (a
 * segment starting with '.'), backslashes, NULs and malformed escapes; then
 * the file's real path (every symbolic link resolved) must lie below the
 * root's real path, so a link inside the root pointing outside is refused
 * too. Anything refused is a plain 404, which tells a prober nothing.
 *
 * CACHING. The ETag is the file's size and modification time; a matching
 * If-None-Match gets 304 without a body. Answers say "Cache-Control:
 * no-cache" (use, but revalidate), right for a dashboard that changes with
 * each deploy.
 *
 * I/O. Files up to SMALL_FILE are read at once on the loop (they are in the
 * page cache after the first request; a read costs microseconds); larger
 * ones are streamed in CHUNK pieces read on the thread pool, each sent
 * before the next is read, so memory stays at one chunk per download.
 */
#include "gateway/state.h"
#include "gateway/static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kit/alloc.h"
#include "kit/log.h"

#define SMALL_FILE (1024 * 1024)
#define CHUNK      (64 * 1024)

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int gw_static_relpath(const char *path, size_t len, char *out, size_t outlen)
{
    size_t n = 0;
    if (len == 0 || path[0] != '/' || outlen < 16) return -EINVAL;
    const char *p = path + 1, *end = path + len;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        size_t start = n;
        for (const char *q = p; q < seg_end; q++) {
            unsigned char ch = (unsigned char)*q;
            if (ch == '%') {
                int hi = seg_end - q >= 3 ? hexval(q[1]) : -1;
                int lo = hi >= 0 ? hexval(q[2]) : -1;
                if (hi < 0 || lo < 0) return -EINVAL;
                ch = (unsigned char)(hi * 16 + lo);
                q += 2;
            }
            /* A decoded '/' would smuggle a separator into one segment. */
            if (ch == 0 || ch == '/' || ch == '\\') return -EINVAL;
            if (n == start && ch == '.') return -EINVAL; /* ".", "..", hidden names */
            if (n + 1 >= outlen) return -ENAMETOOLONG;
            out[n++] = (char)ch;
        }
        if (n > start && slash) {
            if (n + 1 >= outlen) return -ENAMETOOLONG;
            out[n++] = '/';
        }
        if (!slash) break;
        p = slash + 1;
    }
    /* "/" and ".../" name a directory: its index. */
    if (n == 0 || out[n - 1] == '/') {
        if (n + sizeof("index.html") > outlen) return -ENAMETOOLONG;
        memcpy(out + n, "index.html", sizeof("index.html"));
        return 0;
    }
    out[n] = '\0';
    return 0;
}

const char *gw_static_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"txt", "text/plain; charset=utf-8"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"ico", "image/x-icon"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"wasm", "application/wasm"},
        {"pdf", "application/pdf"},
        {"xml", "application/xml"},
        {"webmanifest", "application/manifest+json"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash : name, '.');
    if (dot) {
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0) return types[i].type;
    }
    return "application/octet-stream";
}

bool gw_static_etag_matches(const char *if_none_match, const char *etag)
{
    size_t n = strlen(etag);
    for (const char *p = if_none_match; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*') return true;
        /* A weak validator matches too: If-None-Match uses weak comparison. */
        if (strncmp(p, "W/", 2) == 0) p += 2;
        if (strncmp(p, etag, n) == 0 &&
            (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
            return true;
        const char *comma = strchr(p, ',');
        if (!comma) break;
        p = comma + 1;
    }
    return false;
}

/* ---- serving ---------------------------------------------------------------- */

typedef struct download {
    tr_req_t *req;
    uv_fs_t fs;
    uv_file fd;
    char buf[CHUNK];
    int64_t offset, size;
} download_t;

static void download_free(download_t *d)
{
    close(d->fd);
    free(d);
}

static void read_next(download_t *d);

static void on_chunk_written(tr_req_t *req, int status, void *arg)
{
    download_t *d = arg;
    (void)req;
    if (status != 0) {
        tr_respond_abort(d->req);
        download_free(d);
        return;
    }
    read_next(d);
}

static void on_chunk_read(uv_fs_t *fs)
{
    download_t *d = fs->data;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    if (n <= 0) {
        /* A file that shrank or failed mid-way cannot complete its
         * announced length: the answer is cut. */
        if (d->offset == d->size)
            tr_respond_end(d->req);
        else
            tr_respond_abort(d->req);
        download_free(d);
        return;
    }
    if (d->offset + n > d->size) n = (ssize_t)(d->size - d->offset);
    d->offset += n;
    if (tr_respond_write(d->req, d->buf, (size_t)n, on_chunk_written, d) != 0) {
        tr_respond_abort(d->req);
        download_free(d);
    }
}

static void read_next(download_t *d)
{
    if (d->offset >= d->size) {
        tr_respond_end(d->req);
        download_free(d);
        return;
    }
    uv_buf_t b = uv_buf_init(d->buf, sizeof(d->buf));
    d->fs.data = d;
    if (uv_fs_read(d->req->worker->loop, &d->fs, d->fd, &b, 1, d->offset, on_chunk_read) != 0) {
        tr_respond_abort(d->req);
        download_free(d);
    }
}

static void not_found(tr_req_t *req)
{
    tr_respond_error(req, TR_ERR_NOT_FOUND, "no route matches this path", NULL);
}

/* Opens root/rel when its real path is inside root; fills *sb. */
static int open_confined(const char *root, const char *rel, struct stat *sb)
{
    char joined[PATH_MAX], real[PATH_MAX];
    size_t rlen = strlen(root);
    int n = snprintf(joined, sizeof(joined), "%s/%s", root, rel);
    if (n < 0 || (size_t)n >= sizeof(joined) || !realpath(joined, real)) return -ENOENT;
    if (strncmp(real, root, rlen) != 0 || (real[rlen] != '/' && real[rlen] != '\0')) return -EACCES;
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    if (fstat(fd, sb) != 0) {
        close(fd);
        return -EIO;
    }
    return fd;
}

void gw_static_serve(tr_req_t *req)
{
    const char *root = gw_state_of(req)->web_root;
    char rel[1024], etag[64];
    struct stat sb;
    int fd = -1;

    if (!root || gw_static_relpath(req->path, strlen(req->path), rel, sizeof(rel)) != 0) {
        not_found(req);
        return;
    }
    fd = open_confined(root, rel, &sb);
    if (fd >= 0 && S_ISDIR(sb.st_mode)) {
        /* A directory named without its trailing '/': its index. */
        close(fd);
        size_t n = strlen(rel);
        fd = -1;
        if (n + sizeof("/index.html") <= sizeof(rel)) {
            memcpy(rel + n, "/index.html", sizeof("/index.html"));
            fd = open_confined(root, rel, &sb);
        }
    }
    if (fd < 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        not_found(req);
        return;
    }
    snprintf(etag, sizeof(etag), "\"%llx-%llx\"", (unsigned long long)sb.st_size,
             (unsigned long long)sb.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)sb.st_mtim.tv_nsec);
    tr_res_header(req, "ETag", etag);
    tr_res_header(req, "Cache-Control", "no-cache");
    const char *inm = tr_req_header(req, "If-None-Match");
    if (inm && gw_static_etag_matches(inm, etag)) {
        close(fd);
        tr_respond(req, 304, NULL, NULL, 0);
        return;
    }
    const char *type = gw_static_content_type(rel);
    if (strcmp(req->method, "HEAD") == 0 || sb.st_size <= SMALL_FILE) {
        size_t size = strcmp(req->method, "HEAD") == 0 ? 0 : (size_t)sb.st_size;
        char *body = tr_xmalloc(size ? size : 1);
        ssize_t got = size ? pread(fd, body, size, 0) : 0;
        close(fd);
        if (got < 0 || (size_t)got != size) {
            free(body);
            tr_respond_error(req, TR_ERR_INTERNAL, "cannot read the file", NULL);
            return;
        }
        if (strcmp(req->method, "HEAD") == 0) {
            /* The length a GET would get, without reading the file. */
            tr_respond_start(req, 200, type, (int64_t)sb.st_size);
            tr_respond_end(req);
        } else {
            tr_respond(req, 200, type, body, size);
        }
        free(body);
        return;
    }
    download_t *d = tr_xcalloc(1, sizeof(*d));
    d->req = req;
    d->fd = fd;
    d->size = (int64_t)sb.st_size;
    if (tr_respond_start(req, 200, type, d->size) != 0) {
        close(fd);
        free(d);
        tr_respond_error(req, TR_ERR_INTERNAL, "cannot answer", NULL);
        return;
    }
    read_next(d);
}

/*
 * notes.c - the notes service: five endpoints over one table, written the
 * way every service is (docs/new-service.md).
 *
 * The route table says who may call what; the kit authenticates (bearer
 * token or API key), checks roles, answers 401/403, and runs each
 * handler's database work as a store job (inline on SQLite, on a pool of
 * connections on PostgreSQL). A handler validates on the loop, hands its
 * context to a job, and answers in the job's done callback. A note is
 * visible to its owner and to admins; anyone else gets 404, so note ids
 * cannot be probed.
 */
#include "services/notes/notes.h"

#include <errno.h>
#include <string.h>

#include "kit/ids.h"
#include "kit/authn.h"
#include "kit/paging.h"
#include "kit/store_job.h"
#include "kit/validate.h"

#define NOTES_MAX_BODY  (64 * 1024)
#define NOTES_TITLE_MAX 200
#define NOTES_TEXT_MAX  (32 * 1024)
#define NOTES_READERS   "admin" /* roles that see every note */

static void handle_create(tr_req_t *req);
static void handle_list(tr_req_t *req);
static void handle_get(tr_req_t *req);
static void handle_update(tr_req_t *req);
static void handle_delete(tr_req_t *req);

#define USER (TR_AUTH_REQUIRED | TR_AUTH_API_KEY)
static const tr_route_t notes_routes[] = {
    {"POST", "/api/notes", handle_create, USER, NULL, NOTES_MAX_BODY},
    {"GET", "/api/notes", handle_list, USER, NULL, 0},
    {"GET", "/api/notes/{id}", handle_get, USER, NULL, 0},
    {"PATCH", "/api/notes/{id}", handle_update, USER, NULL, NOTES_MAX_BODY},
    {"DELETE", "/api/notes/{id}", handle_delete, USER, NULL, 0},
};

/* One request's work: what the handler parsed, and what the job found. */
typedef struct note {
    char id[TR_UUID_LEN + 1];
    char owner_id[TR_UUID_LEN + 1];
    char caller[TR_UUID_LEN + 1];
    bool reads_all;    /* the caller's role sees every note */
    const char *title; /* NULL: unchanged (PATCH) */
    const char *text;
    tr_page_t page;
    /* results */
    bool found;
    json_t *json;
    tr_page_result_t list;
} note_t;

#define NOTE_COLUMNS "id, owner_id, title, body, created_at, updated_at"

static json_t *note_json(tr_rows_t *rows, void *arg)
{
    (void)arg;
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "id", tr_rows_text(rows, 0), "owner_id",
                     tr_rows_text(rows, 1), "title", tr_rows_text(rows, 2), "body",
                     tr_rows_text(rows, 3), "created_at", tr_time_json(tr_rows_int(rows, 4)),
                     "updated_at", tr_time_json(tr_rows_int(rows, 5)));
}

/* Loads note n->id into n->json and n->owner_id (n->found false when absent). */
static int load_note(tr_store_t *db, note_t *n)
{
    tr_rows_t *rows = NULL;
    json_decref(n->json);
    n->json = NULL;
    n->found = false;
    int rc =
        tr_store_query(db, &rows, "SELECT " NOTE_COLUMNS " FROM notes WHERE id = $1", "t", n->id);
    if (rc == 0 && (rc = tr_rows_next(rows)) == 1) {
        n->found = true;
        n->json = note_json(rows, NULL);
        snprintf(n->owner_id, sizeof(n->owner_id), "%s", tr_rows_text(rows, 1));
        rc = 0;
    }
    tr_rows_free(rows);
    return rc;
}

/* Allocates the context of a request on one note, or answers 404 for an id
 * that cannot be one. */
static note_t *note_for(tr_req_t *req)
{
    const char *id = tr_req_param(req, "id");
    if (!id || strlen(id) != TR_UUID_LEN || !tr_uuid_valid(id)) {
        tr_respond_error(req, TR_ERR_NOT_FOUND, "note not found", NULL);
        return NULL;
    }
    note_t *n = tr_req_zalloc(req, sizeof(*n));
    memcpy(n->id, id, sizeof(n->id));
    memcpy(n->caller, req->identity.user_id, sizeof(n->caller));
    return n;
}

/* The done of jobs that end with one note: 404 unless visible, else 200. */
static void answer_note(tr_req_t *req, void *arg, int rc)
{
    note_t *n = arg;
    if (rc != 0) {
        json_decref(n->json);
        tr_store_respond_error(req, rc, "notes");
        return;
    }
    if (!n->found || !tr_require_owner(req, n->owner_id, NOTES_READERS, "note")) {
        if (!n->found) tr_respond_error(req, TR_ERR_NOT_FOUND, "note not found", NULL);
        json_decref(n->json);
        return;
    }
    tr_respond_json(req, 200, n->json);
}

/* ---- POST /api/notes ------------------------------------------------------ */

static int insert_note(tr_store_t *db, void *arg)
{
    note_t *n = arg;
    int64_t now = tr_now_ms();
    int rc = tr_store_exec(db, NULL,
                           "INSERT INTO notes (" NOTE_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $5)",
                           "tttti", n->id, n->caller, n->title, n->text, now);
    return rc != 0 ? rc : load_note(db, n);
}

static void created(tr_req_t *req, void *arg, int rc)
{
    note_t *n = arg;
    if (rc != 0) {
        json_decref(n->json);
        tr_store_respond_error(req, rc, "create note");
        return;
    }
    tr_respond_json(req, 201, n->json);
}

static void handle_create(tr_req_t *req)
{
    tr_fields_t f;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *title = tr_field_string(&f, body, "title", true, 1, NOTES_TITLE_MAX);
    const char *text = tr_field_string(&f, body, "body", false, 0, NOTES_TEXT_MAX);
    if (tr_fields_respond(&f, req)) {
        json_decref(body);
        return;
    }
    note_t *n = tr_req_zalloc(req, sizeof(*n));
    tr_uuid7(n->id);
    memcpy(n->caller, req->identity.user_id, sizeof(n->caller));
    n->title = tr_req_strdup(req, title);
    n->text = tr_req_strdup(req, text ? text : "");
    json_decref(body);
    tr_store_run(req, TR_STORE_TX, insert_note, created, n);
}

/* ---- GET /api/notes ------------------------------------------------------- */

static int list_notes(tr_store_t *db, void *arg)
{
    note_t *n = arg;
    tr_rows_t *rows = NULL;
    int rc = tr_store_query(db, &rows,
                            "SELECT " NOTE_COLUMNS " FROM notes WHERE owner_id = $1 AND id > $2 "
                            "ORDER BY id LIMIT $3",
                            "tti", n->caller, n->page.after, (int64_t)n->page.limit + 1);
    return tr_page_collect(rc, rows, &n->page, note_json, NULL, &n->list);
}

static void listed(tr_req_t *req, void *arg, int rc)
{
    note_t *n = arg;
    if (rc != 0) {
        tr_page_result_clear(&n->list);
        tr_store_respond_error(req, rc, "list notes");
        return;
    }
    tr_respond_page(req, &n->list);
}

static bool is_uuid(const char *key)
{
    return strlen(key) == TR_UUID_LEN && tr_uuid_valid(key);
}

static void handle_list(tr_req_t *req)
{
    note_t *n = tr_req_zalloc(req, sizeof(*n));
    if (!tr_page_from_query(req, &n->page, is_uuid)) return;
    memcpy(n->caller, req->identity.user_id, sizeof(n->caller));
    tr_store_run(req, 0, list_notes, listed, n);
}

/* ---- GET /api/notes/{id} -------------------------------------------------- */

static int get_note(tr_store_t *db, void *arg)
{
    return load_note(db, arg);
}

static void handle_get(tr_req_t *req)
{
    note_t *n = note_for(req);
    if (n) tr_store_run(req, 0, get_note, answer_note, n);
}

/* ---- PATCH /api/notes/{id} ------------------------------------------------ */

/* Only the owner edits; for anyone else the note does not exist. Read and
 * write are one transaction, so the check and the write see the same row. */
static int update_note(tr_store_t *db, void *arg)
{
    note_t *n = arg;
    int rc = load_note(db, n);
    if (rc != 0 || !n->found || strcmp(n->owner_id, n->caller) != 0) {
        n->found = false;
        return rc;
    }
    rc = tr_store_exec(db, NULL,
                       "UPDATE notes SET title = COALESCE($2, title), body = COALESCE($3, body), "
                       "updated_at = $4 WHERE id = $1",
                       "ttti", n->id, n->title, n->text, tr_now_ms());
    return rc != 0 ? rc : load_note(db, n);
}

static void handle_update(tr_req_t *req)
{
    note_t *n = note_for(req);
    if (!n) return;
    tr_fields_t f;
    tr_fields_init(&f);
    json_t *body = tr_body_object(req, &f);
    const char *title = tr_field_string(&f, body, "title", false, 1, NOTES_TITLE_MAX);
    const char *text = tr_field_string(&f, body, "body", false, 0, NOTES_TEXT_MAX);
    if (body && !tr_fields_failed(&f) && !title && !text)
        tr_fields_add(&f, "title", "give a title or a body to change");
    if (tr_fields_respond(&f, req)) {
        json_decref(body);
        return;
    }
    n->title = title ? tr_req_strdup(req, title) : NULL;
    n->text = text ? tr_req_strdup(req, text) : NULL;
    json_decref(body);
    tr_store_run(req, TR_STORE_TX, update_note, answer_note, n);
}

/* ---- DELETE /api/notes/{id} ----------------------------------------------- */

/* The owner or an admin deletes; for anyone else the note does not exist. */
static int delete_note(tr_store_t *db, void *arg)
{
    note_t *n = arg;
    int rc = load_note(db, n);
    if (rc != 0 || !n->found) return rc;
    if (strcmp(n->owner_id, n->caller) != 0 && !n->reads_all) {
        n->found = false;
        return 0;
    }
    return tr_store_exec(db, NULL, "DELETE FROM notes WHERE id = $1", "t", n->id);
}

static void deleted(tr_req_t *req, void *arg, int rc)
{
    note_t *n = arg;
    json_decref(n->json);
    if (rc != 0)
        tr_store_respond_error(req, rc, "delete note");
    else if (!n->found)
        tr_respond_error(req, TR_ERR_NOT_FOUND, "note not found", NULL);
    else
        tr_respond_json(req, 204, NULL);
}

static void handle_delete(tr_req_t *req)
{
    note_t *n = note_for(req);
    if (!n) return;
    n->reads_all = tr_role_allowed(NOTES_READERS, req->identity.role);
    tr_store_run(req, TR_STORE_TX, delete_note, deleted, n);
}

/* Name, port offset, workers and migrations: src/services/registry.c. */
const tr_service_def_t notes_service = {
    .routes = notes_routes,
    .nroutes = sizeof(notes_routes) / sizeof(notes_routes[0]),
};

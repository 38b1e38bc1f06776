/*
 * validate.h - parsing request bodies and collecting field errors.
 *
 * A handler parses its JSON body with tr_body_object(), reads fields with the
 * tr_field_* helpers, which record a {"field","issue"} entry in the
 * collector for every problem, and answers 400 with all of them at once:
 *
 *   tr_fields_t f; tr_fields_init(&f);
 *   json_t *body = tr_body_object(req, &f);
 *   const char *email = tr_field_string(&f, body, "email", true, 3, 254);
 *   if (tr_fields_respond(&f, req)) { json_decref(body); return; }
 */
#ifndef TR_VALIDATE_H
#define TR_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "kit/http.h"

typedef struct tr_fields {
    json_t *details;     /* array of {"field","issue"}; NULL while empty */
    const char *message; /* first top-level problem (e.g. body not JSON) */
    tr_err_t err;        /* TR_ERR_INVALID_ARGUMENT or TR_ERR_UNSUPPORTED_MEDIA_TYPE */
} tr_fields_t;

void tr_fields_init(tr_fields_t *f);
/* Records a problem with a field. */
void tr_fields_add(tr_fields_t *f, const char *field, const char *issue);
/* True when anything was recorded. */
bool tr_fields_failed(const tr_fields_t *f);
/* When anything was recorded: answers 400 (or 415) with the details, frees
 * the collector and returns true. Otherwise frees it and returns false. */
bool tr_fields_respond(tr_fields_t *f, tr_req_t *req);
/* Frees the collector without answering. */
void tr_fields_free(tr_fields_t *f);

/* Parses the body as a JSON object. A body with a Content-Type other than
 * application/json (parameters allowed) is unsupported_media_type; an empty
 * body is treated as {}. Returns a new reference, or NULL with the problem
 * recorded. Duplicate keys, invalid UTF-8 and nesting deeper than 32 are
 * rejected. */
json_t *tr_body_object(tr_req_t *req, tr_fields_t *f);
/* Parses a JSON object from text with the same rules (for fuzzing and tests). */
json_t *tr_json_parse_object(const char *text, size_t len, tr_fields_t *f);

/* Field helpers. A JSON null counts as absent. When obj is NULL (the body
 * failed to parse, already recorded) they record nothing more. */

/* A string field of min..max bytes (UTF-8 validated by jansson). Returns the
 * borrowed value, or NULL when absent (recorded if required) or invalid
 * (always recorded). */
const char *tr_field_string(tr_fields_t *f, json_t *obj, const char *name, bool required,
                            size_t min_len, size_t max_len);
/* A boolean field; returns 1/0, or -1 when absent or invalid. */
int tr_field_bool(tr_fields_t *f, json_t *obj, const char *name, bool required);
/* An email: trimmed, lowercased into out (size outlen); returns true when it
 * is plausible (local@domain.tld, <= 254 bytes). Records the problem. */
bool tr_field_email(tr_fields_t *f, json_t *obj, const char *name, bool required, char *out,
                    size_t outlen);

#endif

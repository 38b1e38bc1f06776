/*
 * validate.c - request body parsing and field error collection.
 *
 * DESIGN NOTES
 *
 * 1. Strict parsing. Bodies are parsed with JSON_REJECT_DUPLICATES (two
 *    values for one key let a proxy and a service disagree about what was
 *    sent) and without JSON_DISABLE_EOF_CHECK, so trailing bytes after the
 *    value are an error. jansson rejects invalid UTF-8 and NUL in strings by
 *    default.
 *
 * 2. Depth is checked before parsing by scanning the text, counting '[' and
 *    '{' outside strings. It is one linear pass with no allocation, so a
 *    body of a million '[' costs a scan, not a million-node tree.
 *
 * 3. A collector holds at most one top-level problem (the first) plus the
 *    field details. Once the body failed to parse, the field helpers see a
 *    NULL object and record nothing, so the client gets the one real
 *    problem instead of "is required" for every field.
 *
 * 4. JSON null counts as an absent field: clients commonly send null for
 *    "not given", and required fields still report "is required".
 */
#include "kit/validate.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kit/alloc.h"

#define MAX_DEPTH       32
#define EMAIL_MAX       254
#define EMAIL_LOCAL_MAX 64
#define DNS_LABEL_MAX   63

static const char *const msg_default = "invalid request body";

void tr_fields_init(tr_fields_t *f)
{
    f->details = NULL;
    f->message = NULL;
    f->err = TR_ERR_INVALID_ARGUMENT;
}

void tr_fields_add(tr_fields_t *f, const char *field, const char *issue)
{
    if (!f->details) f->details = json_array();
    json_t *entry = json_object();
    /* Field names and issues come from our code, but a name could still be
     * malformed UTF-8; never let that drop the entry silently. */
    json_t *name = json_string(field ? field : "");
    json_object_set_new(entry, "field", name ? name : json_string("?"));
    json_t *text = json_string(issue ? issue : "is invalid");
    json_object_set_new(entry, "issue", text ? text : json_string("is invalid"));
    json_array_append_new(f->details, entry);
}

bool tr_fields_failed(const tr_fields_t *f)
{
    return f->details != NULL || f->message != NULL;
}

void tr_fields_free(tr_fields_t *f)
{
    json_decref(f->details);
    tr_fields_init(f);
}

bool tr_fields_respond(tr_fields_t *f, tr_req_t *req)
{
    if (!tr_fields_failed(f)) {
        tr_fields_free(f);
        return false;
    }
    json_t *details = f->details;
    f->details = NULL;
    tr_respond_error(req, f->err, f->message ? f->message : msg_default, details);
    tr_fields_free(f);
    return true;
}

/* Records the top-level problem; the first one wins. */
static void set_problem(tr_fields_t *f, tr_err_t err, const char *message)
{
    if (f->message) return;
    f->message = message;
    f->err = err;
}

/* True when the media type is application/json, with or without
 * parameters (charset and the like are accepted as sent). */
static bool is_json_media_type(const char *ct)
{
    static const char want[] = "application/json";
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0) return false;
    ct += sizeof(want) - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* The deepest nesting of arrays and objects, or MAX_DEPTH + 1 once it is
 * exceeded (the scan stops there). Malformed text is left to the parser. */
static int nesting_depth(const char *text, size_t len)
{
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
        case '"':
            in_string = true;
            break;
        case '[':
        case '{':
            if (++depth > deepest) deepest = depth;
            if (deepest > MAX_DEPTH) return deepest;
            break;
        case ']':
        case '}':
            if (depth > 0) depth--;
            break;
        default:
            break;
        }
    }
    return deepest;
}

static const char *parse_issue(const json_error_t *jerr)
{
    switch (json_error_code(jerr)) {
    case json_error_invalid_utf8:
        return "is not valid UTF-8";
    case json_error_duplicate_key:
        return "has a duplicate object key";
    case json_error_end_of_input_expected:
        return "has data after the JSON value";
    case json_error_premature_end_of_input:
        return "ends before the JSON value is complete";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "contains a NUL character";
    case json_error_numeric_overflow:
        return "has a number out of range";
    default:
        return "is not valid JSON";
    }
}

json_t *tr_json_parse_object(const char *text, size_t len, tr_fields_t *f)
{
    json_error_t jerr;
    json_t *value = NULL;

    if (len == 0) return json_object();
    if (nesting_depth(text, len) > MAX_DEPTH) {
        set_problem(f, TR_ERR_INVALID_ARGUMENT, "body is nested too deeply");
        tr_fields_add(f, "body", "must not nest arrays and objects more than 32 levels deep");
        return NULL;
    }
    /* JSON_DECODE_ANY so that a scalar body gets the precise "must be an
     * object" answer below rather than a syntax error. */
    if (!(value = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr))) {
        char issue[128];
        snprintf(issue, sizeof(issue), "%s (at byte %d)", parse_issue(&jerr), jerr.position);
        set_problem(f, TR_ERR_INVALID_ARGUMENT, "body is not valid JSON");
        tr_fields_add(f, "body", issue);
        return NULL;
    }
    if (!json_is_object(value)) {
        json_decref(value);
        set_problem(f, TR_ERR_INVALID_ARGUMENT, "body must be a JSON object");
        return NULL;
    }
    return value;
}

json_t *tr_body_object(tr_req_t *req, tr_fields_t *f)
{
    /* An empty body has no media type to speak of: curl -d '' labels it
     * application/x-www-form-urlencoded, and it still means {}. */
    if (req->body_len == 0) return json_object();
    const char *ct = tr_req_header(req, "Content-Type");
    if (ct && !is_json_media_type(ct)) {
        set_problem(f, TR_ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
        return NULL;
    }
    return tr_json_parse_object(req->body, req->body_len, f);
}

/* The field's value, or NULL when it is absent or null (recorded when
 * required). */
static json_t *field_get(tr_fields_t *f, json_t *obj, const char *name, bool required)
{
    if (!obj) return NULL;
    json_t *v = json_object_get(obj, name);
    if (json_is_null(v)) v = NULL;
    if (!v && required) tr_fields_add(f, name, "is required");
    return v;
}

const char *tr_field_string(tr_fields_t *f, json_t *obj, const char *name, bool required,
                            size_t min_len, size_t max_len)
{
    json_t *v = field_get(f, obj, name, required);
    if (!v) return NULL;
    if (!json_is_string(v)) {
        tr_fields_add(f, name, "must be a string");
        return NULL;
    }
    size_t len = json_string_length(v);
    if (len < min_len || len > max_len) {
        char issue[96];
        if (min_len == max_len)
            snprintf(issue, sizeof(issue), "must be exactly %zu bytes", min_len);
        else if (min_len == 0)
            snprintf(issue, sizeof(issue), "must be at most %zu bytes", max_len);
        else
            snprintf(issue, sizeof(issue), "must be between %zu and %zu bytes", min_len, max_len);
        tr_fields_add(f, name, issue);
        return NULL;
    }
    return json_string_value(v);
}

int tr_field_bool(tr_fields_t *f, json_t *obj, const char *name, bool required)
{
    json_t *v = field_get(f, obj, name, required);
    if (!v) return -1;
    if (!json_is_boolean(v)) {
        tr_fields_add(f, name, "must be a boolean");
        return -1;
    }
    return json_is_true(v) ? 1 : 0;
}

/* ASCII classes spelled out: <ctype.h> follows the locale, and an address
 * must not change validity with it. */
static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* RFC 5322 atext: what an unquoted local part may contain besides dots.
 * Quoted local parts are legal but not plausible for a sign-up. */
static bool is_atext(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool local_part_ok(const char *s, size_t len)
{
    if (len == 0 || len > EMAIL_LOCAL_MAX || s[0] == '.' || s[len - 1] == '.') return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (s[i + 1] == '.') return false;
        } else if (!is_atext(c)) {
            return false;
        }
    }
    return true;
}

/* A DNS name of at least two labels of letters, digits and inner hyphens,
 * whose last label (the TLD) is not all digits. */
static bool domain_ok(const char *s, size_t len)
{
    size_t labels = 0, start = 0;
    bool tld_has_alpha = false;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') continue;
        size_t n = i - start;
        if (n == 0 || n > DNS_LABEL_MAX || s[start] == '-' || s[i - 1] == '-') return false;
        tld_has_alpha = false;
        for (size_t j = start; j < i; j++) {
            unsigned char c = (unsigned char)s[j];
            if (is_alpha(c))
                tld_has_alpha = true;
            else if (!is_digit(c) && c != '-')
                return false;
        }
        labels++;
        start = i + 1;
    }
    return labels >= 2 && tld_has_alpha;
}

bool tr_field_email(tr_fields_t *f, json_t *obj, const char *name, bool required, char *out,
                    size_t outlen)
{
    static const char *const bad = "must be a valid email address";
    if (outlen) out[0] = '\0';
    json_t *v = field_get(f, obj, name, required);
    if (!v) return false;
    if (!json_is_string(v)) {
        tr_fields_add(f, name, "must be a string");
        return false;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    while (len && is_space((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && is_space((unsigned char)s[len - 1]))
        len--;
    if (len == 0 || len > EMAIL_MAX || len >= outlen) {
        tr_fields_add(f, name, bad);
        return false;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    out[len] = '\0';

    const char *at = memchr(out, '@', len);
    if (!at || memchr(at + 1, '@', len - (size_t)(at + 1 - out)) ||
        !local_part_ok(out, (size_t)(at - out)) ||
        !domain_ok(at + 1, len - (size_t)(at + 1 - out))) {
        out[0] = '\0';
        tr_fields_add(f, name, bad);
        return false;
    }
    return true;
}

/*
 * test_validate.c - strict body parsing, field helpers and email
 * normalisation.
 *
 * Parsing goes through tr_json_parse_object, which tr_body_object uses after
 * its Content-Type check, so no server is needed. The Content-Type check
 * itself runs on a request built by hand: tr_body_object reads only the
 * headers and the body of it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kit/validate.h"

/* The issue recorded for field, or NULL. */
static const char *issue_of(const tr_fields_t *f, const char *field)
{
    size_t i;
    json_t *d;
    json_array_foreach(f->details, i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "field")), field) == 0)
            return json_string_value(json_object_get(d, "issue"));
    }
    return NULL;
}

/* ---- parsing ---- */

#define NOT_JSON   "body is not valid JSON"
#define NOT_OBJECT "body must be a JSON object"
#define TOO_DEEP   "body is nested too deeply"

static const struct parse_case {
    const char *name;
    const char *text;
    size_t len;          /* 0: strlen(text) */
    const char *message; /* NULL: accepted */
    const char *issue;   /* prefix of the "body" issue, NULL: none expected */
} parse_cases[] = {
    {"object", "{\"a\":1,\"b\":\"x\"}", 0, NULL, NULL},
    {"nested", "{\"a\":{\"b\":[1,2,{\"c\":null}]}}", 0, NULL, NULL},
    {"surrounding whitespace", " \r\n\t{\"a\":true}\n ", 0, NULL, NULL},
    {"empty object", "{}", 0, NULL, NULL},
    {"utf-8 text", "{\"name\":\"J\xc3\xbcrgen \xe2\x82\xac \xf0\x9f\x8c\xb1\"}", 0, NULL, NULL},
    {"brackets inside strings", "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{\"}", 0, NULL,
     NULL},
    {"escaped quote then brackets", "{\"a\":\"\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}", 0, NULL,
     NULL},
    {"duplicate key", "{\"a\":1,\"a\":2}", 0, NOT_JSON, "has a duplicate object key"},
    {"nested duplicate key", "{\"x\":{\"role\":\"user\",\"role\":\"admin\"}}", 0, NOT_JSON,
     "has a duplicate object key"},
    {"trailing garbage", "{\"a\":1} x", 0, NOT_JSON, "has data after the JSON value"},
    {"two objects", "{}{}", 0, NOT_JSON, "has data after the JSON value"},
    {"trailing NUL byte", "{\"a\":1}\0", 8, NOT_JSON, "has data after the JSON value"},
    {"truncated", "{\"a\":", 0, NOT_JSON, "ends before the JSON value is complete"},
    {"whitespace only", "   ", 0, NOT_JSON, "ends before the JSON value is complete"},
    {"invalid UTF-8 byte", "{\"a\":\"\xff\"}", 0, NOT_JSON, "is not valid UTF-8"},
    {"overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", 0, NOT_JSON, "is not valid UTF-8"},
    {"UTF-16 surrogate as UTF-8", "{\"a\":\"\xed\xa0\x80\"}", 0, NOT_JSON, "is not valid UTF-8"},
    {"escaped NUL", "{\"a\":\"\\u0000\"}", 0, NOT_JSON, "contains a NUL character"},
    {"number overflow", "{\"a\":1e999}", 0, NOT_JSON, "has a number out of range"},
    {"single quotes", "{'a':1}", 0, NOT_JSON, "is not valid JSON"},
    {"array", "[1,2]", 0, NOT_OBJECT, NULL},
    {"string", "\"x\"", 0, NOT_OBJECT, NULL},
    {"number", "42", 0, NOT_OBJECT, NULL},
    {"null", "null", 0, NOT_OBJECT, NULL},
    {"boolean", "true", 0, NOT_OBJECT, NULL},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        tr_fields_t f;
        tr_fields_init(&f);
        size_t len = c->len ? c->len : strlen(c->text);
        json_t *obj = tr_json_parse_object(c->text, len, &f);
        if (!c->message) {
            if (!obj) fail_msg("%s: rejected (%s)", c->name, f.message ? f.message : "?");
            assert_true(json_is_object(obj));
            assert_false(tr_fields_failed(&f));
        } else {
            if (obj) fail_msg("%s: accepted", c->name);
            assert_true(tr_fields_failed(&f));
            assert_int_equal(f.err, TR_ERR_INVALID_ARGUMENT);
            if (strcmp(f.message, c->message) != 0)
                fail_msg("%s: message \"%s\"", c->name, f.message);
            const char *issue = issue_of(&f, "body");
            if (c->issue) {
                if (!issue || strncmp(issue, c->issue, strlen(c->issue)) != 0)
                    fail_msg("%s: issue \"%s\"", c->name, issue ? issue : "(none)");
            } else {
                assert_null(f.details);
            }
        }
        json_decref(obj);
        tr_fields_free(&f);
    }
}

static void test_empty_body_is_empty_object(void **state)
{
    (void)state;
    tr_fields_t f;
    tr_fields_init(&f);
    json_t *obj = tr_json_parse_object("", 0, &f);
    assert_true(json_is_object(obj));
    assert_int_equal(json_object_size(obj), 0);
    assert_false(tr_fields_failed(&f));
    json_decref(obj);
    tr_fields_free(&f);
}

/* {"a":{"a":...{}...}} with depth levels of objects. */
static char *nested(int depth)
{
    char *s = malloc((size_t)depth * 6 + 8);
    assert_non_null(s);
    char *p = s;
    for (int i = 1; i < depth; i++)
        p += sprintf(p, "{\"a\":");
    p += sprintf(p, "{}");
    for (int i = 1; i < depth; i++)
        *p++ = '}';
    *p = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    static const struct {
        int depth;
        bool ok;
    } cases[] = {{1, true}, {31, true}, {32, true}, {33, false}, {1000, false}, {100000, false}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = nested(cases[i].depth);
        tr_fields_t f;
        tr_fields_init(&f);
        json_t *obj = tr_json_parse_object(text, strlen(text), &f);
        if (cases[i].ok != (obj != NULL)) fail_msg("depth %d: wrong verdict", cases[i].depth);
        if (!obj) assert_string_equal(f.message, TOO_DEEP);
        json_decref(obj);
        tr_fields_free(&f);
        free(text);
    }

    /* Arrays count too, and an unclosed deep prefix is refused before parsing. */
    char arrays[64];
    memset(arrays, '[', 33);
    arrays[0] = '{';
    snprintf(arrays + 33, sizeof(arrays) - 33, "]");
    tr_fields_t f;
    tr_fields_init(&f);
    assert_null(tr_json_parse_object(arrays, strlen(arrays), &f));
    assert_string_equal(f.message, TOO_DEEP);
    tr_fields_free(&f);
}

/* ---- Content-Type ---- */

static void test_content_type(void **state)
{
    (void)state;
    static const struct {
        const char *content_type; /* NULL: header absent */
        const char *body;
        bool ok;
    } cases[] = {
        {NULL, "{\"a\":1}", true},
        {"application/json", "{\"a\":1}", true},
        {"Application/JSON", "{\"a\":1}", true},
        {"application/json; charset=utf-8", "{\"a\":1}", true},
        {"application/json ;charset=UTF-8", "{\"a\":1}", true},
        {"text/plain", "{\"a\":1}", false},
        {"application/jsonx", "{\"a\":1}", false},
        {"application/x-www-form-urlencoded", "a=1", false},
        {"application/json-patch+json", "{\"a\":1}", false},
        {"text/plain", "", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tr_header_t hdr = {"content-type", cases[i].content_type};
        tr_req_t req = {
            .method = "POST",
            .headers = &hdr,
            .nheaders = cases[i].content_type ? 1 : 0,
            .body = cases[i].body,
            .body_len = strlen(cases[i].body),
        };
        tr_fields_t f;
        tr_fields_init(&f);
        json_t *obj = tr_body_object(&req, &f);
        if (cases[i].ok != (obj != NULL))
            fail_msg("case %zu (%s): wrong verdict", i, cases[i].content_type);
        if (!obj) {
            assert_int_equal(f.err, TR_ERR_UNSUPPORTED_MEDIA_TYPE);
            assert_non_null(f.message);
        }
        json_decref(obj);
        tr_fields_free(&f);
    }
}

/* ---- field helpers ---- */

static json_t *parse(const char *text)
{
    tr_fields_t f;
    tr_fields_init(&f);
    json_t *obj = tr_json_parse_object(text, strlen(text), &f);
    assert_non_null(obj);
    tr_fields_free(&f);
    return obj;
}

static const char body_text[] =
    "{\"name\":\"bob\",\"n\":5,\"empty\":\"\",\"nothing\":null,"
    "\"long\":\"0123456789\",\"yes\":true,\"no\":false,\"word\":\"yes\"}";

static const struct string_case {
    const char *field;
    bool required;
    size_t min, max;
    const char *value; /* expected result */
    const char *issue; /* expected issue, NULL: none */
} string_cases[] = {
    {"name", true, 1, 64, "bob", NULL},
    {"name", false, 3, 3, "bob", NULL},
    {"missing", true, 1, 64, NULL, "is required"},
    {"missing", false, 1, 64, NULL, NULL},
    {"nothing", true, 1, 64, NULL, "is required"},
    {"nothing", false, 1, 64, NULL, NULL},
    {"n", true, 1, 64, NULL, "must be a string"},
    {"yes", false, 1, 64, NULL, "must be a string"},
    {"empty", true, 0, 10, "", NULL},
    {"empty", true, 1, 10, NULL, "must be between 1 and 10 bytes"},
    {"name", true, 8, 1024, NULL, "must be between 8 and 1024 bytes"},
    {"long", true, 0, 5, NULL, "must be at most 5 bytes"},
    {"long", true, 4, 4, NULL, "must be exactly 4 bytes"},
    {"long", true, 10, 10, "0123456789", NULL},
};

static void test_field_string(void **state)
{
    (void)state;
    json_t *body = parse(body_text);
    for (size_t i = 0; i < sizeof(string_cases) / sizeof(string_cases[0]); i++) {
        const struct string_case *c = &string_cases[i];
        tr_fields_t f;
        tr_fields_init(&f);
        const char *v = tr_field_string(&f, body, c->field, c->required, c->min, c->max);
        if (c->value) {
            if (!v || strcmp(v, c->value) != 0) fail_msg("case %zu: value", i);
        } else if (v) {
            fail_msg("case %zu: got \"%s\"", i, v);
        }
        const char *issue = issue_of(&f, c->field);
        if (c->issue) {
            if (!issue || strcmp(issue, c->issue) != 0)
                fail_msg("case %zu: issue \"%s\"", i, issue ? issue : "(none)");
        } else if (tr_fields_failed(&f)) {
            fail_msg("case %zu: unexpected issue \"%s\"", i, issue ? issue : "?");
        }
        assert_null(f.message);
        tr_fields_free(&f);
    }
    json_decref(body);
}

static void test_field_bool(void **state)
{
    (void)state;
    json_t *body = parse(body_text);
    tr_fields_t f;
    tr_fields_init(&f);
    assert_int_equal(tr_field_bool(&f, body, "yes", true), 1);
    assert_int_equal(tr_field_bool(&f, body, "no", true), 0);
    assert_int_equal(tr_field_bool(&f, body, "missing", false), -1);
    assert_int_equal(tr_field_bool(&f, body, "nothing", false), -1);
    assert_false(tr_fields_failed(&f));
    assert_int_equal(tr_field_bool(&f, body, "word", true), -1);
    assert_int_equal(tr_field_bool(&f, body, "n", false), -1);
    assert_int_equal(tr_field_bool(&f, body, "missing", true), -1);
    assert_string_equal(issue_of(&f, "word"), "must be a boolean");
    assert_string_equal(issue_of(&f, "n"), "must be a boolean");
    assert_string_equal(issue_of(&f, "missing"), "is required");
    tr_fields_free(&f);
    json_decref(body);
}

static void test_collects_all_problems(void **state)
{
    (void)state;
    json_t *body = parse("{\"email\":\"nope\",\"password\":\"short\",\"terms\":\"yes\"}");
    tr_fields_t f;
    tr_fields_init(&f);
    char email[255];
    assert_false(tr_field_email(&f, body, "email", true, email, sizeof(email)));
    assert_null(tr_field_string(&f, body, "password", true, 8, 1024));
    assert_int_equal(tr_field_bool(&f, body, "terms", true), -1);
    assert_null(tr_field_string(&f, body, "display_name", true, 1, 64));
    assert_true(tr_fields_failed(&f));
    assert_null(f.message);
    assert_int_equal(f.err, TR_ERR_INVALID_ARGUMENT);

    /* In the order the handler asked, each as {"field","issue"}. */
    json_t *want = json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s}]", "field", "email", "issue",
                             "must be a valid email address", "field", "password", "issue",
                             "must be between 8 and 1024 bytes", "field", "terms", "issue",
                             "must be a boolean", "field", "display_name", "issue", "is required");
    assert_true(json_equal(f.details, want));
    json_decref(want);

    tr_fields_free(&f);
    assert_false(tr_fields_failed(&f));
    assert_null(f.details);
    json_decref(body);
}

static void test_helpers_quiet_after_bad_body(void **state)
{
    (void)state;
    tr_fields_t f;
    tr_fields_init(&f);
    json_t *body = tr_json_parse_object("{\"a\":", 5, &f);
    assert_null(body);
    char email[64];
    assert_null(tr_field_string(&f, body, "name", true, 1, 10));
    assert_int_equal(tr_field_bool(&f, body, "flag", true), -1);
    assert_false(tr_field_email(&f, body, "email", true, email, sizeof(email)));
    /* Only the parse problem is reported. */
    assert_string_equal(f.message, NOT_JSON);
    assert_int_equal(json_array_size(f.details), 1);
    assert_non_null(issue_of(&f, "body"));
    tr_fields_free(&f);
}

static void test_respond_without_problems(void **state)
{
    (void)state;
    /* Nothing recorded: no answer is sent, so the request is untouched. */
    tr_req_t req = {.method = "POST", .body = ""};
    tr_fields_t f;
    tr_fields_init(&f);
    assert_false(tr_fields_respond(&f, &req));
    assert_false(tr_fields_failed(&f));
}

/* ---- email ---- */

static const struct email_case {
    const char *json; /* the field's JSON value */
    const char *want; /* normalised form, NULL: invalid */
} email_cases[] = {
    {"\"alice@example.com\"", "alice@example.com"},
    {"\"  Alice.Smith+Tag@Example.COM \\n\"", "alice.smith+tag@example.com"},
    {"\"\\tBOB@MAIL.Example.co.UK\"", "bob@mail.example.co.uk"},
    {"\"o'brien_x-y@sub-domain.example.io\"", "o'brien_x-y@sub-domain.example.io"},
    {"\"a@b.c1\"", "a@b.c1"},
    {"\"a@xn--bcher-kva.example\"", "a@xn--bcher-kva.example"},
    {"\"\"", NULL},
    {"\"   \"", NULL},
    {"\"no-at-sign\"", NULL},
    {"\"a@b\"", NULL},
    {"\"a@1.23\"", NULL},
    {"\"a@@b.com\"", NULL},
    {"\"a@b@c.com\"", NULL},
    {"\"@b.com\"", NULL},
    {"\"a@\"", NULL},
    {"\".a@b.com\"", NULL},
    {"\"a.@b.com\"", NULL},
    {"\"a..b@c.com\"", NULL},
    {"\"a@-b.com\"", NULL},
    {"\"a@b-.com\"", NULL},
    {"\"a@b..com\"", NULL},
    {"\"a@.b.com\"", NULL},
    {"\"a@b.com.\"", NULL},
    {"\"a b@c.com\"", NULL},
    {"\"a@b_c.com\"", NULL},
    {"\"\\\"quoted\\\"@b.com\"", NULL},
    {"\"j\xc3\xbcrgen@example.com\"", NULL},
    {"\"a@ex\xc3\xa4mple.com\"", NULL},
    {"\"a@[127.0.0.1]\"", NULL},
};

static void test_email_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(email_cases) / sizeof(email_cases[0]); i++) {
        const struct email_case *c = &email_cases[i];
        char text[256];
        snprintf(text, sizeof(text), "{\"email\":%s}", c->json);
        json_t *body = parse(text);
        tr_fields_t f;
        tr_fields_init(&f);
        char out[255] = "junk";
        bool ok = tr_field_email(&f, body, "email", true, out, sizeof(out));
        if (c->want) {
            if (!ok) fail_msg("%s: rejected", c->json);
            assert_string_equal(out, c->want);
            assert_false(tr_fields_failed(&f));
        } else {
            if (ok) fail_msg("%s: accepted as \"%s\"", c->json, out);
            assert_string_equal(out, "");
            assert_string_equal(issue_of(&f, "email"), "must be a valid email address");
        }
        tr_fields_free(&f);
        json_decref(body);
    }
}

static void test_email_lengths(void **state)
{
    (void)state;
    char local[80], addr[300], text[400], out[300];
    struct {
        size_t local_len, domain_labels;
        const char *tld;
        bool ok;
    } cases[] = {
        {64, 1, "com", true},   /* longest local part */
        {65, 1, "com", false},  /* one too long */
        {64, 3, "com", true},   /* 64 + 1 + 3 * 62 + 3 = 254: the limit */
        {64, 3, "coms", false}, /* 255 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(local, 'l', cases[i].local_len);
        local[cases[i].local_len] = '\0';
        int n = snprintf(addr, sizeof(addr), "%s@", local);
        for (size_t l = 0; l < cases[i].domain_labels; l++) {
            char label[62];
            memset(label, 'd', 61);
            label[61] = '\0';
            n += snprintf(addr + n, sizeof(addr) - (size_t)n, "%s.", label);
        }
        snprintf(addr + n, sizeof(addr) - (size_t)n, "%s", cases[i].tld);
        snprintf(text, sizeof(text), "{\"email\":\"%s\"}", addr);
        json_t *body = parse(text);
        tr_fields_t f;
        tr_fields_init(&f);
        bool ok = tr_field_email(&f, body, "email", true, out, sizeof(out));
        if (ok != cases[i].ok) fail_msg("case %zu (%zu bytes): wrong verdict", i, strlen(addr));
        tr_fields_free(&f);
        json_decref(body);
    }

    /* An output buffer too small for the address is a rejection, not an
     * overflow. */
    json_t *body = parse("{\"email\":\"alice@example.com\",\"n\":1}");
    tr_fields_t f;
    tr_fields_init(&f);
    char small[8];
    assert_false(tr_field_email(&f, body, "email", true, small, sizeof(small)));
    assert_false(tr_field_email(&f, body, "n", true, out, sizeof(out)));
    assert_string_equal(issue_of(&f, "n"), "must be a string");
    assert_false(tr_field_email(&f, body, "other", false, out, sizeof(out)));
    assert_null(issue_of(&f, "other"));
    tr_fields_free(&f);
    json_decref(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_empty_body_is_empty_object),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_field_string),
        cmocka_unit_test(test_field_bool),
        cmocka_unit_test(test_collects_all_problems),
        cmocka_unit_test(test_helpers_quiet_after_bad_body),
        cmocka_unit_test(test_respond_without_problems),
        cmocka_unit_test(test_email_table),
        cmocka_unit_test(test_email_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

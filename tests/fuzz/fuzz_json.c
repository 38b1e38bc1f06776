/*
 * fuzz_json.c - libFuzzer target for request body parsing.
 *
 * Feeds arbitrary bytes to tr_json_parse_object, then reads a few fields the
 * way handlers do. Finds crashes, leaks (ASan's leak check runs at exit) and
 * the contract breaking: a parse either yields an object and records
 * nothing, or yields NULL and records a problem.
 *
 * Seed corpus: tests/fuzz/corpus/json/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kit/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tr_fields_t f;
    char email[255];
    tr_fields_init(&f);

    json_t *body = tr_json_parse_object((const char *)data, size, &f);
    if ((body != NULL) == tr_fields_failed(&f)) abort();
    if (body && !json_is_object(body)) abort();

    const char *name = tr_field_string(&f, body, "name", false, 1, 64);
    if (name && (strlen(name) < 1 || strlen(name) > 64)) abort();
    tr_field_string(&f, body, "password", true, 8, 1024);
    int flag = tr_field_bool(&f, body, "accept_terms", false);
    if (flag < -1 || flag > 1) abort();
    if (tr_field_email(&f, body, "email", true, email, sizeof(email))) {
        size_t n = strlen(email);
        if (n < 3 || n > 254 || !strchr(email, '@')) abort();
        for (size_t i = 0; i < n; i++)
            if (email[i] >= 'A' && email[i] <= 'Z') abort();
    }

    json_decref(body);
    tr_fields_free(&f);
    return 0;
}

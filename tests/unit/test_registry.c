/*
 * test_registry.c - the one list of services (services/registry.h): rows
 * unique by name and port, every built service registered and completed
 * from its row, and the gateway's built-in routes being deploy/routes.json
 * with every upstream it names a registered service.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "gateway/routes.h"
#include "services/registry.h"

static void test_rows_unique(void **state)
{
    (void)state;
    assert_true(trellis_registry_count >= 2);
    assert_string_equal(trellis_registry[0].name, "gateway"); /* started first */
    assert_int_equal(trellis_registry[0].port_offset, 0);
    for (size_t i = 0; i < trellis_registry_count; i++) {
        const trellis_service_info_t *a = &trellis_registry[i];
        assert_true(a->port_offset >= 0 && a->port_offset < 64); /* `trellis up` keeps 64 */
        assert_true(a->default_workers >= 0);
        assert_ptr_equal(trellis_registry_find(a->name), a);
        assert_int_equal(trellis_service_port_offset(a->name), a->port_offset);
        for (size_t j = i + 1; j < trellis_registry_count; j++) {
            assert_string_not_equal(a->name, trellis_registry[j].name);
            assert_int_not_equal(a->port_offset, trellis_registry[j].port_offset);
        }
    }
    assert_null(trellis_registry_find("nosuch"));
    assert_int_equal(trellis_service_port_offset("nosuch"), -1);
}

/* Every service folder the build found has a row, and the definition the
 * CLI runs carries the row's values and the generated migrations. */
static void test_builtins_completed(void **state)
{
    (void)state;
    size_t nbuiltin = 0;
    for (const trellis_builtin_service_t *b = trellis_builtin_services; b->name; b++) {
        nbuiltin++;
        const trellis_service_info_t *row = trellis_registry_find(b->name);
        if (!row) fail_msg("service folder %s has no row in src/services/registry.c", b->name);
        const tr_service_def_t *d = trellis_service_find(b->name);
        assert_non_null(d);
        assert_string_equal(d->name, row->name);
        assert_int_equal(d->port_offset, row->port_offset);
        assert_int_equal(d->default_workers, row->default_workers);
        assert_ptr_equal(d->migrations, b->migrations);
        assert_true(d->no_store || d->migrations != NULL);
    }
    assert_int_equal(trellis_service_count(), nbuiltin);
    assert_non_null(trellis_service_find("gateway"));
    assert_non_null(trellis_service_find("auth"));
    assert_null(trellis_service_find("users")); /* registered, not built yet */
    /* Registry order is start order. */
    assert_string_equal(trellis_service_at(0)->name, "gateway");
    assert_null(trellis_service_at(trellis_service_count()));
}

/* The embedded default is the shipped file byte for byte, and each upstream
 * it names is a registered service (so it needs no address). */
static void test_default_routes_embedded(void **state)
{
    (void)state;
    char path[4096];
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/");
    assert_non_null(tail);
    snprintf(path, sizeof(path), "%.*sdeploy/routes.json", (int)(tail - self), self);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char file[1 << 20];
    size_t n = fread(file, 1, sizeof(file) - 1, f);
    fclose(f);
    file[n] = '\0';
    assert_string_equal(gw_default_routes_json, file);

    json_error_t jerr;
    json_t *doc = json_loads(gw_default_routes_json, 0, &jerr);
    assert_non_null(doc);
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(doc, "routes"), i, r)
    {
        const char *up = json_string_value(json_object_get(r, "upstream"));
        assert_non_null(up);
        if (!trellis_registry_find(up))
            fail_msg("routes[%zu]: upstream %s is not registered", i, up);
    }
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_unique),
        cmocka_unit_test(test_builtins_completed),
        cmocka_unit_test(test_default_routes_embedded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

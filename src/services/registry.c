/*
 * registry.c - the registry rows (see registry.h for how to add a service)
 * and the completion of the built services' definitions from them.
 *
 * Offsets follow ARCHITECTURE.md section 6: 0..16 for the gateway and the
 * services of the reference systems, 20.. for voice, fleet and bot. The
 * admin listener of each is at its port + 1000 (kit/admin.h).
 */
#include "services/registry.h"

#include <pthread.h>
#include <string.h>

const trellis_service_info_t trellis_registry[] = {
    /* name, port offset, default workers (0 = one per core) */
    {"gateway", 0, 0},
    {"auth", 1, 2},
    {"users", 2, 1},
    {"posts", 3, 1},
    {"media", 4, 1},
    {"wallet", 5, 1},
    {"notify", 6, 1},
    {"realtime", 7, 1},
    {"tournaments", 8, 1},
    {"chat", 9, 1},
    {"groups", 10, 1},
    {"land", 11, 1},
    {"levels", 12, 1},
    {"dynasty", 13, 1},
    {"support", 14, 1},
    {"training", 15, 1},
    {"calendar", 16, 1},
    {"voice", 20, 1},
    {"fleet", 21, 1},
    {"bot", 22, 1},
    /* the example of docs/new-service.md */
    {"notes", 30, 1},
};
const size_t trellis_registry_count = sizeof(trellis_registry) / sizeof(trellis_registry[0]);

const trellis_service_info_t *trellis_registry_find(const char *name)
{
    for (size_t i = 0; i < trellis_registry_count; i++)
        if (strcmp(trellis_registry[i].name, name) == 0) return &trellis_registry[i];
    return NULL;
}

int trellis_service_port_offset(const char *name)
{
    const trellis_service_info_t *s = trellis_registry_find(name);
    return s ? s->port_offset : -1;
}

/* ---- completed definitions ------------------------------------------------ */

static tr_service_def_t completed[sizeof(trellis_registry) / sizeof(trellis_registry[0])];
static size_t ncompleted;
static pthread_once_t complete_once = PTHREAD_ONCE_INIT;

static const trellis_builtin_service_t *builtin(const char *name)
{
    for (const trellis_builtin_service_t *b = trellis_builtin_services; b->name; b++)
        if (strcmp(b->name, name) == 0) return b;
    return NULL;
}

/* A built service without a registry row is not run (test_registry.c
 * fails the build's tests for it). */
static void complete(void)
{
    for (size_t i = 0; i < trellis_registry_count; i++) {
        const trellis_service_info_t *info = &trellis_registry[i];
        const trellis_builtin_service_t *b = builtin(info->name);
        if (!b) continue;
        tr_service_def_t *d = &completed[ncompleted++];
        *d = *b->def;
        d->name = info->name;
        d->port_offset = info->port_offset;
        d->default_workers = info->default_workers;
        d->migrations = b->migrations;
    }
}

size_t trellis_service_count(void)
{
    pthread_once(&complete_once, complete);
    return ncompleted;
}

const tr_service_def_t *trellis_service_at(size_t i)
{
    pthread_once(&complete_once, complete);
    return i < ncompleted ? &completed[i] : NULL;
}

const tr_service_def_t *trellis_service_find(const char *name)
{
    pthread_once(&complete_once, complete);
    for (size_t i = 0; i < ncompleted; i++)
        if (strcmp(completed[i].name, name) == 0) return &completed[i];
    return NULL;
}

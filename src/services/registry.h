/*
 * registry.h - the one list of Trellis services: which exist, where they
 * listen, how many workers they run, and which of them this binary runs.
 *
 * ADDING A SERVICE is:
 *   1. a folder src/services/<name>/ whose definition is
 *      `const tr_service_def_t <name>_service` (routes, hooks, options) and,
 *      if it has a database, migrations/NNNN_name.sql; the build finds the
 *      folder, embeds the migrations as <name>_migrations and lists the
 *      definition (cmake/EmbedText.cmake, trellis_builtin_services);
 *   2. one row in registry.c: name, port offset, default workers (a planned
 *      service of ARCHITECTURE.md section 6 already has its row);
 *   3. its routes in deploy/routes.json (compiled into the gateway as its
 *      default table);
 *   4. its paths in docs/api/openapi.yaml.
 * Nothing else enumerates services: `trellis serve`, `trellis up` (start
 * order, ports, the printed table), `trellis --help` and the gateway (ports
 * of upstreams named after a service) all read this registry.
 *
 * THE DEFINITION IS COMPLETED HERE. A service's tr_service_def_t leaves out
 * name, port_offset, default_workers and migrations; trellis_service_at()
 * and trellis_service_find() return a copy with those filled in from the
 * registry row and the generated migrations, so they cannot disagree.
 */
#ifndef TRELLIS_SERVICES_REGISTRY_H
#define TRELLIS_SERVICES_REGISTRY_H

#include <stddef.h>

#include "kit/service.h"

typedef struct trellis_service_info {
    const char *name;
    int port_offset;     /* port = port-base (default 8000) + offset */
    int default_workers; /* without --workers; 0 = one per core */
} trellis_service_info_t;

/* One built service as the build found it (generated builtin_services.c). */
typedef struct trellis_builtin_service {
    const char *name;                  /* its folder (the gateway: "gateway") */
    const tr_service_def_t *def;       /* <name>_service */
    const tr_migrations_t *migrations; /* <name>_migrations, NULL without a migrations folder */
} trellis_builtin_service_t;

/* Every service of ARCHITECTURE.md section 6, built or planned, in start
 * order (the gateway first). */
extern const trellis_service_info_t trellis_registry[];
extern const size_t trellis_registry_count;
/* Generated; terminated by an entry with a NULL name. */
extern const trellis_builtin_service_t trellis_builtin_services[];

/* The registry row of name, or NULL. Pure. */
const trellis_service_info_t *trellis_registry_find(const char *name);
/* The port offset of a service of the registry, or -1 for an unknown name.
 * Pure. */
int trellis_service_port_offset(const char *name);

/* The services this binary runs (built and registered), in registry order:
 * their number, and the completed definition of the i-th (i < count). The
 * definitions live as long as the process. Thread-safe. */
size_t trellis_service_count(void);
const tr_service_def_t *trellis_service_at(size_t i);
/* The completed definition of a service this binary runs, or NULL. */
const tr_service_def_t *trellis_service_find(const char *name);

#endif

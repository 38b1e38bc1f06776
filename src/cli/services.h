/*
 * services.h - the services this binary can run, with their default ports.
 *
 * The table is the one place that knows every service; `trellis serve`,
 * `trellis up` and `trellis routes` read it.
 */
#ifndef TRELLIS_CLI_SERVICES_H
#define TRELLIS_CLI_SERVICES_H

#include "kit/service.h"

/* NULL-terminated, in start order. */
extern const tr_service_def_t *const trellis_services[];

/* The service with this name, or NULL. */
const tr_service_def_t *trellis_service_find(const char *name);

#endif

/* services.c - the registry of services built into this binary.
 *
 * The gateway comes first: `trellis up` starts services in this order, and
 * the public entry point should be listening while the others come up (its
 * /readyz does not wait for them, so the order never deadlocks). */
#include "cli/services.h"
#include "gateway/gateway.h"
#include "services/auth/auth.h"
#include "services/notes/notes.h"

#include <string.h>

const tr_service_def_t *const trellis_services[] = {
    &gateway_service,
    &auth_service,
    &notes_service,
    NULL,
};

const tr_service_def_t *trellis_service_find(const char *name)
{
    for (size_t i = 0; trellis_services[i]; i++)
        if (strcmp(trellis_services[i]->name, name) == 0) return trellis_services[i];
    return NULL;
}

/*
 * notes.h - the notes service (port 8030): private notes of a user. The
 * smallest complete service, the example docs/new-service.md walks through.
 */
#ifndef TR_SERVICES_NOTES_H
#define TR_SERVICES_NOTES_H

#include "kit/service.h"

extern const tr_service_def_t notes_service;

#endif

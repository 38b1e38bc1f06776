/*
 * auth.h - the auth service (port 8001): accounts, sessions, access and
 * refresh tokens, password resets, API keys and roles.
 *
 * The HTTP API is described in docs/api/openapi.yaml. Besides the service
 * definition this header exports the few operations `trellis admin` performs
 * directly on the service's database, so the CLI and the service share one
 * implementation of "create a user" and "list the outbox".
 */
#ifndef TR_SERVICES_AUTH_H
#define TR_SERVICES_AUTH_H

#include <jansson.h>
#include <stddef.h>

#include "kit/config.h"
#include "kit/crypto.h"
#include "kit/service.h"
#include "kit/store.h"

extern const tr_service_def_t auth_service;

/* The embedded schema (generated from migrations/ at build time). */
extern const tr_migrations_t auth_migrations;

/* Reads the argon2id parameters (argon2-memory, argon2-iterations) from a
 * configuration loaded with auth_service.options, refusing values below
 * OWASP's minimum (19 MiB, 2 iterations). Returns 0, or -EINVAL with a
 * message in err. */
int auth_pwhash_params_from_config(const tr_config_t *cfg, tr_pwhash_params_t *out, char *err,
                                   size_t errlen);

/* Creates a user directly in the database, hashing the password on the
 * calling thread. email is normalised as the API does; role NULL means
 * "user"; name may be NULL. On success *user is a new reference to the
 * user's public JSON. Returns 0, -EINVAL for an invalid field, -EEXIST when
 * the email is taken, or a store error; err then holds a one-line reason. */
int auth_create_user(tr_store_t *db, const tr_pwhash_params_t *params, const char *email,
                     const char *password, const char *name, const char *role, json_t **user,
                     char *err, size_t errlen);

/* Lists undelivered outbox messages, newest first, optionally only those
 * for one recipient (normalised like an email). limit is 1..1000; cursor is
 * NULL or the id of the last message of the previous page. *items is a new
 * JSON array of {id, kind, recipient, payload, created_at}; *next_cursor
 * (may be NULL) receives a malloc'ed cursor for the next page or NULL.
 * Returns 0 or a store error. */
int auth_outbox_pending(tr_store_t *db, const char *recipient, int limit, const char *cursor,
                        json_t **items, char **next_cursor);

#endif

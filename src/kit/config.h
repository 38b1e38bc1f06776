/*
 * config.h - layered configuration: defaults < environment < command line.
 *
 * An option named "jwt-alg" is set by the flag --jwt-alg VALUE (or
 * --jwt-alg=VALUE) and by the environment variable TRELLIS_JWT_ALG. Each
 * service declares the options it understands; the kit declares the common
 * ones (tr_config_common_options). An unknown flag is an error.
 */
#ifndef TR_CONFIG_H
#define TR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tr_option {
    const char *name;          /* "jwt-alg" */
    const char *default_value; /* NULL = unset */
    const char *help;          /* one line for --help */
} tr_option_t;

typedef struct tr_config tr_config_t;

/* Options every service understands: host, port, port-base, data, workers,
 * log-level, db, max-connections, max-header-bytes, max-body-bytes,
 * max-header-fields, header-timeout, idle-timeout, request-timeout,
 * drain-timeout. Terminated by a {NULL} entry. */
extern const tr_option_t tr_config_common_options[];

/* Loads options from defaults, environment and argv (argv[0] is not skipped:
 * pass the flags only). option_sets is a NULL-terminated array of
 * {NULL}-terminated option tables; when a name is declared twice, the later
 * declaration's default wins. Every flag takes a value ("--name" followed by
 * "--other" is a missing value). On error returns -EINVAL and writes a
 * message to err (may be NULL); *out is then NULL. */
int tr_config_load(tr_config_t **out, const tr_option_t *const *option_sets, int argc, char **argv,
                   char *err, size_t errlen);
void tr_config_free(tr_config_t *cfg);

/* The option's value, or NULL when unset. name must be a declared option. */
const char *tr_config_get(const tr_config_t *cfg, const char *name);
/* Overrides a value (used by the supervisor and tests). */
void tr_config_set(tr_config_t *cfg, const char *name, const char *value);
/* Parses the value as an integer. Returns 0, -ENOENT when unset, -EINVAL when
 * not an integer. */
int tr_config_int(const tr_config_t *cfg, const char *name, int64_t *out);
/* Parses a duration: a number with unit ms, s, m, h or d ("15m", "30d");
 * a bare number means seconds. Result in milliseconds. Errors as above. */
int tr_config_duration_ms(const tr_config_t *cfg, const char *name, int64_t *out);
/* Parses a size: a number with optional unit k, m, g (KiB, MiB, GiB). */
int tr_config_size(const tr_config_t *cfg, const char *name, int64_t *out);
/* Prints "  --name VALUE   help (default: x)" lines for all options. */
void tr_config_print_help(const tr_option_t *const *option_sets);

/* Loads a secret: the option's value when set; else the file
 * <data_dir>/secrets/<name>; else generates nbytes random bytes, stores them
 * hex-encoded in that file with mode 0600 (directory 0700) and uses them.
 * *out is malloc'ed. Returns 0 or a negative errno. */
int tr_config_secret(const tr_config_t *cfg, const char *option, const char *data_dir,
                     const char *name, size_t nbytes, char **out);

#endif

/*
 * admin.c - `trellis admin`: operator tasks on a data directory, done on the
 * auth database directly so they work before anyone can log in (the first
 * admin) and whether or not the platform is running (SQLite in WAL mode
 * with a busy timeout lets this process and the service write in turn).
 *
 *   trellis admin create-user --email E --password P [--role R] [--name N]
 *   trellis admin outbox [--recipient EMAIL]
 *   common: [--data DIR] [--db URL]
 *
 * "--password -" reads the password from the first line of stdin, so it
 * need not appear in the process list. Output is JSON on stdout (one object
 * per line for outbox); errors go to stderr. Exit codes: 0 success, 1
 * failure, 2 usage error.
 *
 * Defaults come from the same configuration as the service (TRELLIS_DATA,
 * TRELLIS_ARGON2_MEMORY, ...), so a user created here has a password hashed
 * exactly as the service would hash it.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kit/alloc.h"
#include "kit/config.h"
#include "kit/fs.h"
#include "kit/log.h"
#include "kit/store.h"
#include "services/auth/auth.h"

#define OUTBOX_PAGE 500

typedef struct admin_args {
    const char *email;
    const char *password;
    const char *role;
    const char *name;
    const char *recipient;
    const char *data;
    const char *db;
} admin_args_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: trellis admin <command> [options]\n\n"
            "commands:\n"
            "  create-user --email E --password P|- [--role R] [--name N]\n"
            "                 create an account (roles: admin, moderator, verified_user, user)\n"
            "  outbox [--recipient EMAIL]\n"
            "                 print undelivered messages (e.g. password reset tokens), one JSON\n"
            "                 object per line, newest first\n\n"
            "options for every command:\n"
            "  --data DIR     data directory (default: TRELLIS_DATA or ./data)\n"
            "  --db URL       auth database URL (default: sqlite://<data>/auth.db)\n");
}

/* Parses --name VALUE / --name=VALUE flags. allowed lists the flags the
 * command takes. Returns 0 or -EINVAL after printing why. */
static int parse_flags(int argc, char **argv, const char *const *allowed, admin_args_t *a)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "trellis admin: unexpected argument '%s'\n", arg);
            return -EINVAL;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "trellis admin: %s needs a value\n", arg);
            return -EINVAL;
        }
        const char **slot = NULL;
        for (const char *const *p = allowed; *p; p++) {
            if (strlen(*p) != len || strncmp(*p, arg, len) != 0) continue;
            if (strcmp(*p, "--email") == 0)
                slot = &a->email;
            else if (strcmp(*p, "--password") == 0)
                slot = &a->password;
            else if (strcmp(*p, "--role") == 0)
                slot = &a->role;
            else if (strcmp(*p, "--name") == 0)
                slot = &a->name;
            else if (strcmp(*p, "--recipient") == 0)
                slot = &a->recipient;
            else if (strcmp(*p, "--data") == 0)
                slot = &a->data;
            else if (strcmp(*p, "--db") == 0)
                slot = &a->db;
        }
        if (!slot) {
            fprintf(stderr, "trellis admin: unknown option '%.*s'\n", (int)len, arg);
            return -EINVAL;
        }
        *slot = value;
    }
    return 0;
}

/* Loads the service configuration (defaults and TRELLIS_* environment) and
 * opens and migrates the auth database. */
static int open_auth_db(const admin_args_t *a, tr_config_t **cfg, tr_store_t **db)
{
    const tr_option_t *sets[] = {tr_config_common_options, auth_service.options, NULL};
    char *no_args[] = {NULL};
    char err[256];
    char *url = NULL;
    int rc;

    *db = NULL;
    if ((rc = tr_config_load(cfg, sets, 0, no_args, err, sizeof(err))) != 0) {
        fprintf(stderr, "trellis admin: %s\n", err);
        return rc;
    }
    if (a->db) {
        url = tr_xstrdup(a->db);
    } else {
        const char *data = a->data ? a->data : tr_config_get(*cfg, "data");
        if ((rc = tr_mkdir_p(data, 0700)) != 0) {
            fprintf(stderr, "trellis admin: cannot create %s: %s\n", data, strerror(-rc));
            return rc;
        }
        url = tr_xasprintf("sqlite://%s/auth.db", data);
    }
    /* The URL is not printed: a PostgreSQL URL may hold a password. */
    if ((rc = tr_store_open(url, db)) != 0) {
        fprintf(stderr, "trellis admin: cannot open the database: %s\n", tr_store_errmsg(NULL));
    } else if ((rc = tr_store_migrate(*db, &auth_migrations)) != 0) {
        fprintf(stderr, "trellis admin: migrating the database failed: %s\n", tr_store_errmsg(*db));
    }
    free(url);
    return rc;
}

/* Reads one line from stdin into a malloc'ed string without its newline. */
static char *read_password_line(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static void print_json_line(json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
}

static int cmd_create_user(int argc, char **argv)
{
    static const char *const flags[] = {"--email", "--password", "--role", "--name",
                                        "--data",  "--db",       NULL};
    admin_args_t a = {0};
    tr_config_t *cfg = NULL;
    tr_store_t *db = NULL;
    tr_pwhash_params_t params;
    char *stdin_password = NULL;
    json_t *user = NULL;
    char err[256];
    int exit_code = 1;

    if (parse_flags(argc, argv, flags, &a) != 0) return 2;
    if (!a.email || !a.password) {
        fprintf(stderr, "trellis admin create-user: --email and --password are required\n");
        return 2;
    }
    if (strcmp(a.password, "-") == 0) {
        if (!(stdin_password = read_password_line())) {
            fprintf(stderr, "trellis admin create-user: no password on stdin\n");
            return 2;
        }
        a.password = stdin_password;
    }
    if (open_auth_db(&a, &cfg, &db) != 0) goto out;
    if (auth_pwhash_params_from_config(cfg, &params, err, sizeof(err)) != 0 ||
        auth_create_user(db, &params, a.email, a.password, a.name, a.role, &user, err,
                         sizeof(err)) != 0) {
        fprintf(stderr, "trellis admin create-user: %s\n", err);
        goto out;
    }
    print_json_line(user);
    exit_code = 0;
out:
    if (stdin_password) {
        sodium_memzero(stdin_password, strlen(stdin_password));
        free(stdin_password);
    }
    json_decref(user);
    tr_store_close(db);
    tr_config_free(cfg);
    return exit_code;
}

static int cmd_outbox(int argc, char **argv)
{
    static const char *const flags[] = {"--recipient", "--data", "--db", NULL};
    admin_args_t a = {0};
    tr_config_t *cfg = NULL;
    tr_store_t *db = NULL;
    char *cursor = NULL;
    int exit_code = 1;

    if (parse_flags(argc, argv, flags, &a) != 0) return 2;
    if (open_auth_db(&a, &cfg, &db) != 0) goto out;
    do {
        json_t *items = NULL, *m;
        char *next = NULL;
        size_t i;
        int rc = auth_outbox_pending(db, a.recipient, OUTBOX_PAGE, cursor, &items, &next);
        free(cursor);
        cursor = next;
        if (rc != 0) {
            fprintf(stderr, "trellis admin outbox: database error: %s\n", tr_store_errmsg(db));
            goto out;
        }
        json_array_foreach(items, i, m) print_json_line(m);
        json_decref(items);
    } while (cursor);
    exit_code = 0;
out:
    free(cursor);
    tr_store_close(db);
    tr_config_free(cfg);
    return exit_code;
}

int trellis_admin_main(int argc, char **argv)
{
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[0];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    /* Store errors are logged by the kit; keep them on stderr, terse. */
    tr_log_init("admin", TR_LOG_WARN);
    if (strcmp(cmd, "create-user") == 0) return cmd_create_user(argc - 1, argv + 1);
    if (strcmp(cmd, "outbox") == 0) return cmd_outbox(argc - 1, argv + 1);
    fprintf(stderr, "trellis admin: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

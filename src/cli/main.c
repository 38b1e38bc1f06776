/*
 * main.c - the multi-call `trellis` executable.
 *
 *   trellis serve <service> [options]   run one service in the foreground
 *   trellis up [options]                run the whole platform (supervisor)
 *   trellis admin <command> [options]   operator tasks on a data directory
 *   trellis version | --help
 *
 * Usage errors exit 2 with a message on stderr, as sysexits' EX_USAGE-style
 * tools do; runtime failures exit 1.
 */
#include "cli/cli.h"
#include "services/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <signal.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: trellis <command> [options]\n\n"
                 "commands:\n"
                 "  serve <service>   run one service (--help for its options)\n"
                 "  up                run every service under a supervisor\n"
                 "                    [--only a,b] [--data DIR] [--port-base N]\n"
                 "  admin             operator tasks (create-user, outbox)\n"
                 "  version           print the version\n\n"
                 "services:");
    for (size_t i = 0; i < trellis_service_count(); i++)
        fprintf(out, " %s", trellis_service_at(i)->name);
    fprintf(out, "\n");
}

/* A service started by `trellis up` must not outlive it, even when the
 * supervisor is killed with SIGKILL and cannot clean up. */
static int bind_to_supervisor(void)
{
    const char *pid = getenv("TRELLIS_SUPERVISOR_PID");
    if (!pid) return 0;
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) return -1;
    /* The supervisor may have died between fork and prctl. */
    return getppid() == (pid_t)atol(pid) ? 0 : -1;
}

static int cmd_serve(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        fprintf(stderr, "trellis serve: which service? (trellis --help lists them)\n");
        return 2;
    }
    const tr_service_def_t *def = trellis_service_find(argv[0]);
    if (!def) {
        fprintf(stderr, "trellis serve: unknown service '%s'\n", argv[0]);
        return 2;
    }
    if (bind_to_supervisor() != 0) return 1;
    return tr_service_run(def, argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("trellis %s\n", TRELLIS_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "up") == 0) return trellis_up_main(argc - 2, argv + 2);
    if (strcmp(cmd, "admin") == 0) return trellis_admin_main(argc - 2, argv + 2);
    fprintf(stderr, "trellis: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

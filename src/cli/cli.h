/*
 * cli.h - the `trellis` sub-commands implemented outside main.c.
 * Each takes the arguments after its own name and returns the exit code.
 */
#ifndef TRELLIS_CLI_H
#define TRELLIS_CLI_H

/* `trellis up`: the single-machine supervisor (up.c). */
int trellis_up_main(int argc, char **argv);
/* `trellis admin ...`: operator tasks on a data directory (admin.c). */
int trellis_admin_main(int argc, char **argv);

#endif

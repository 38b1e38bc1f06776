/*
 * test_fs.c - tr_mkdir_p (kit/fs.h): creating missing parents, accepting
 * what exists, refusing what is in the way, and racing creators. Everything
 * happens below one mkdtemp directory removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kit/fs.h"
#include "testutil.h"

static char tmpdir[256];

static int group_setup(void **state)
{
    (void)state;
    /* Fixed, so the modes the tests assert do not depend on the caller's. */
    umask(022);
    return testutil_tmpdir(tmpdir, sizeof(tmpdir), "fs");
}

static int group_teardown(void **state)
{
    (void)state;
    return testutil_remove_tree(tmpdir);
}

/* <tmpdir>/<rel> into out. */
static const char *under(char out[PATH_MAX], const char *rel)
{
    snprintf(out, PATH_MAX, "%s/%s", tmpdir, rel);
    return out;
}

static void assert_dir_mode(const char *path, mode_t mode)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, mode);
}

static void write_file(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("x\n", f);
    fclose(f);
}

static void test_creates_missing_parents(void **state)
{
    (void)state;
    char path[PATH_MAX];
    assert_int_equal(tr_mkdir_p(under(path, "a/b/c"), 0700), 0);
    assert_dir_mode(under(path, "a"), 0700);
    assert_dir_mode(under(path, "a/b"), 0700);
    assert_dir_mode(under(path, "a/b/c"), 0700);

    /* The mode is passed to mkdir, so the umask still applies. */
    assert_int_equal(tr_mkdir_p(under(path, "open/sub"), 0777), 0);
    assert_dir_mode(under(path, "open/sub"), 0755);
}

static void test_existing_is_fine(void **state)
{
    (void)state;
    char path[PATH_MAX], link_path[PATH_MAX];
    assert_int_equal(tr_mkdir_p(under(path, "again/x"), 0700), 0);
    /* Again, with other spellings of the same directory, and with a mode
     * that must not be applied to what already exists. */
    static const char *const spellings[] = {"again/x", "again/x/", "again//x", "again/./x",
                                            "again"};
    for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        if (tr_mkdir_p(under(path, spellings[i]), 0755) != 0) fail_msg("%s", spellings[i]);
    }
    assert_dir_mode(under(path, "again/x"), 0700);
    assert_int_equal(tr_mkdir_p("/", 0700), 0);

    /* A symbolic link to a directory is a directory to go through. */
    assert_int_equal(symlink(under(path, "again"), under(link_path, "link")), 0);
    assert_int_equal(tr_mkdir_p(under(path, "link/x/deeper"), 0700), 0);
    assert_dir_mode(under(path, "again/x/deeper"), 0700);
}

static void test_relative_path(void **state)
{
    (void)state;
    char old[PATH_MAX], path[PATH_MAX];
    assert_non_null(getcwd(old, sizeof(old)));
    assert_int_equal(chdir(tmpdir), 0);
    int rc = tr_mkdir_p("rel/one", 0700);
    assert_int_equal(chdir(old), 0);
    assert_int_equal(rc, 0);
    assert_dir_mode(under(path, "rel/one"), 0700);
}

static void test_refuses_what_is_in_the_way(void **state)
{
    (void)state;
    char path[PATH_MAX], target[PATH_MAX];
    write_file(under(target, "plain"));
    assert_int_equal(symlink(target, under(path, "to-plain")), 0);
    static const struct {
        const char *rel;
        int rc;
    } cases[] = {
        {"plain", -ENOTDIR},            /* the path itself is a file */
        {"plain/sub", -ENOTDIR},        /* a parent is a file */
        {"plain/sub/deeper", -ENOTDIR}, /* and further down */
        {"to-plain", -ENOTDIR},         /* a link to a file */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = tr_mkdir_p(under(path, cases[i].rel), 0700);
        if (rc != cases[i].rc) fail_msg("%s: %d, expected %d", cases[i].rel, rc, cases[i].rc);
    }
    /* Nothing in the way was replaced. */
    struct stat st;
    assert_int_equal(lstat(under(path, "to-plain"), &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(tr_mkdir_p("", 0700), -ENOENT);
}

static void test_concurrent_creators(void **state)
{
    (void)state;
    enum { PROCS = 8 };
    char path[PATH_MAX];
    pid_t pids[PROCS];
    int barrier[2];
    under(path, "race/a/b/c/d/e");

    /* The children start together when the pipe closes, so their mkdir
     * calls interleave: each must take another's EEXIST as success. */
    assert_int_equal(pipe(barrier), 0);
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            close(barrier[1]);
            if (read(barrier[0], &c, 1) != 0) _exit(3);
            _exit(tr_mkdir_p(path, 0700) == 0 ? 0 : 4);
        }
    }
    close(barrier[0]);
    close(barrier[1]);
    for (int i = 0; i < PROCS; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_dir_mode(path, 0700);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creates_missing_parents),
        cmocka_unit_test(test_existing_is_fine),
        cmocka_unit_test(test_relative_path),
        cmocka_unit_test(test_refuses_what_is_in_the_way),
        cmocka_unit_test(test_concurrent_creators),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

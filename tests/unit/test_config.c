/*
 * test_config.c - layered configuration (defaults < TRELLIS_* environment <
 * flags), number/duration/size parsing, help output and secrets
 * (kit/config.h). Secret files live in one mkdtemp directory removed at the
 * end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kit/config.h"
#include "testutil.h"

static char tmpdir[256];

static const tr_option_t service_options[] = {
    {"jwt-alg", "HS256", "JWT algorithm"},
    {"jwt-secret", NULL, "JWT signing secret"},
    {"port-base", "9100", "redeclared: the later default wins"},
    {NULL, NULL, NULL},
};

static const tr_option_t *const all_sets[] = {tr_config_common_options, service_options, NULL};

/* Every variable a case may set, cleared before each case. */
static const char *const env_vars[] = {"TRELLIS_HOST", "TRELLIS_PORT", "TRELLIS_PORT_BASE",
                                       "TRELLIS_JWT_ALG", "TRELLIS_DATA"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
        unsetenv(env_vars[i]);
}

static int group_setup(void **state)
{
    (void)state;
    return testutil_tmpdir(tmpdir, sizeof(tmpdir), "config");
}

static int group_teardown(void **state)
{
    (void)state;
    clear_env();
    return testutil_remove_tree(tmpdir);
}

static tr_config_t *load(int argc, char **argv)
{
    tr_config_t *cfg = NULL;
    char err[256];
    int rc = tr_config_load(&cfg, all_sets, argc, argv, err, sizeof(err));
    if (rc != 0) fail_msg("load failed: %s", err);
    return cfg;
}

static void test_layers(void **state)
{
    (void)state;
    static const struct {
        const char *env_name, *env_value;
        const char *argv[4];
        const char *option;
        const char *want; /* NULL: unset */
    } cases[] = {
        {NULL, NULL, {NULL}, "host", "127.0.0.1"},
        {NULL, NULL, {NULL}, "port", NULL},
        {NULL, NULL, {NULL}, "jwt-alg", "HS256"},
        {NULL, NULL, {NULL}, "port-base", "9100"},
        {"TRELLIS_HOST", "0.0.0.0", {NULL}, "host", "0.0.0.0"},
        {"TRELLIS_JWT_ALG", "RS256", {NULL}, "jwt-alg", "RS256"},
        {"TRELLIS_PORT_BASE", "7000", {NULL}, "port-base", "7000"},
        {"TRELLIS_PORT", "", {NULL}, "port", ""}, /* set, though empty */
        {"TRELLIS_HOST", "0.0.0.0", {"--host", "10.0.0.1"}, "host", "10.0.0.1"},
        {"TRELLIS_HOST", "0.0.0.0", {"--host=10.0.0.2"}, "host", "10.0.0.2"},
        {NULL, NULL, {"--port", "1", "--port", "2"}, "port", "2"}, /* last flag wins */
        {NULL, NULL, {"--jwt-alg=ES256"}, "jwt-alg", "ES256"},
        {NULL, NULL, {"--data=a=b"}, "data", "a=b"}, /* only the first '=' splits */
        {NULL, NULL, {"--data="}, "data", ""},
        {NULL, NULL, {"--data", "-"}, "data", "-"},
        {"TRELLIS_DATA", "/env", {"--host", "h"}, "data", "/env"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        clear_env();
        if (cases[i].env_name) setenv(cases[i].env_name, cases[i].env_value, 1);
        int argc = 0;
        while (argc < 4 && cases[i].argv[argc])
            argc++;
        tr_config_t *cfg = load(argc, (char **)cases[i].argv);
        const char *got = tr_config_get(cfg, cases[i].option);
        if (cases[i].want == NULL ? got != NULL : (!got || strcmp(got, cases[i].want) != 0))
            fail_msg("case %zu: %s = \"%s\", want \"%s\"", i, cases[i].option, got ? got : "NULL",
                     cases[i].want ? cases[i].want : "NULL");
        tr_config_free(cfg);
    }
    clear_env();
}

static void test_flag_errors(void **state)
{
    (void)state;
    static const struct {
        const char *argv[3];
        const char *want_err;
    } cases[] = {
        {{"--foo"}, "unknown option --foo"},
        {{"--foo=hunter2"}, "unknown option --foo"},
        {{"--host"}, "option --host needs a value"},
        {{"--data", "--port"}, "option --data needs a value"},
        {{"serve"}, "unexpected argument \"serve\""},
        {{"-p", "80"}, "unexpected argument \"-p\""},
        {{"--"}, "unexpected argument \"--\""},
        {{"--=x"}, "unknown option --"},
    };
    clear_env();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tr_config_t *cfg = (tr_config_t *)&cfg; /* must be reset to NULL */
        char err[256] = "";
        int argc = 0;
        while (argc < 3 && cases[i].argv[argc])
            argc++;
        int rc = tr_config_load(&cfg, all_sets, argc, (char **)cases[i].argv, err, sizeof(err));
        assert_int_equal(rc, -EINVAL);
        assert_null(cfg);
        if (strcmp(err, cases[i].want_err) != 0)
            fail_msg("case %zu: err \"%s\", want \"%s\"", i, err, cases[i].want_err);
        assert_null(strstr(err, "hunter2")); /* values are never echoed */
    }
    /* A NULL error buffer is allowed. */
    tr_config_t *cfg = NULL;
    char *argv[] = {"--nope"};
    assert_int_equal(tr_config_load(&cfg, all_sets, 1, argv, NULL, 0), -EINVAL);
    assert_null(cfg);
}

static void test_common_options(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } defaults[] = {
        {"host", "127.0.0.1"},
        {"port", NULL},
        {"port-base", "8000"},
        {"data", "./data"},
        {"workers", NULL},
        {"log-level", "info"},
        {"db", NULL},
        {"max-connections", "10000"},
        {"max-header-bytes", "16k"},
        {"max-header-fields", "100"},
        {"max-body-bytes", "1m"},
        {"header-timeout", "10s"},
        {"idle-timeout", "60s"},
        {"request-timeout", "60s"},
        {"drain-timeout", "10s"},
        {"tls-cert", NULL},
        {"tls-key", NULL},
    };
    size_t n = 0;
    while (tr_config_common_options[n].name)
        n++;
    assert_int_equal(n, sizeof(defaults) / sizeof(defaults[0]));
    for (size_t i = 0; i < n; i++) {
        const tr_option_t *o = &tr_config_common_options[i];
        assert_string_equal(o->name, defaults[i].name);
        if (defaults[i].value)
            assert_string_equal(o->default_value, defaults[i].value);
        else
            assert_null(o->default_value);
        assert_non_null(o->help);
    }

    const tr_option_t *const common_only[] = {tr_config_common_options, NULL};
    tr_config_t *cfg = NULL;
    int64_t v;
    clear_env();
    assert_int_equal(tr_config_load(&cfg, common_only, 0, NULL, NULL, 0), 0);
    assert_int_equal(tr_config_size(cfg, "max-header-bytes", &v), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(tr_config_size(cfg, "max-body-bytes", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(tr_config_duration_ms(cfg, "idle-timeout", &v), 0);
    assert_int_equal(v, 60000);
    assert_int_equal(tr_config_int(cfg, "port-base", &v), 0);
    assert_int_equal(v, 8000);
    assert_int_equal(tr_config_int(cfg, "port", &v), -ENOENT);
    assert_int_equal(tr_config_duration_ms(cfg, "workers", &v), -ENOENT);
    assert_int_equal(tr_config_size(cfg, "db", &v), -ENOENT);
    assert_null(tr_config_get(cfg, "jwt-alg")); /* not declared here */

    tr_config_set(cfg, "port", "8123");
    assert_int_equal(tr_config_int(cfg, "port", &v), 0);
    assert_int_equal(v, 8123);
    tr_config_set(cfg, "port", NULL);
    assert_null(tr_config_get(cfg, "port"));
    tr_config_set(cfg, "extra", "x"); /* set may add a name */
    assert_string_equal(tr_config_get(cfg, "extra"), "x");
    tr_config_free(cfg);
    tr_config_free(NULL);
}

typedef int (*parse_fn)(const tr_config_t *, const char *, int64_t *);

static void check_parse(parse_fn parse, const char *what, const char *text, int want_rc,
                        int64_t want)
{
    static const tr_option_t opts[] = {{"v", NULL, "value"}, {NULL, NULL, NULL}};
    const tr_option_t *const sets[] = {opts, NULL};
    tr_config_t *cfg = NULL;
    int64_t got = -12345;
    assert_int_equal(tr_config_load(&cfg, sets, 0, NULL, NULL, 0), 0);
    tr_config_set(cfg, "v", text);
    int rc = parse(cfg, "v", &got);
    if (rc != want_rc || (rc == 0 && got != want))
        fail_msg("%s(\"%s\"): rc %d value %lld, want rc %d value %lld", what, text, rc,
                 (long long)got, want_rc, (long long)want);
    tr_config_free(cfg);
}

static void test_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        int64_t ms;
    } durations[] = {
        {"15m", 0, 900000},
        {"30d", 0, INT64_C(2592000000)},
        {"250ms", 0, 250},
        {"10", 0, 10000},
        {"10s", 0, 10000},
        {"2h", 0, 7200000},
        {"0", 0, 0},
        {"9223372036854775807ms", 0, INT64_MAX},
        {"9223372036854775", 0, INT64_C(9223372036854775000)},
        {"9223372036854776", -EINVAL, 0},     /* seconds overflow in ms */
        {"106751991167301d", -EINVAL, 0},     /* days overflow in ms */
        {"99999999999999999999", -EINVAL, 0}, /* digits overflow */
        {"", -EINVAL, 0},
        {"-1s", -EINVAL, 0},
        {"+1s", -EINVAL, 0},
        {"1.5s", -EINVAL, 0},
        {"10x", -EINVAL, 0},
        {"10M", -EINVAL, 0},
        {"ms", -EINVAL, 0},
        {" 5", -EINVAL, 0},
        {"5 s", -EINVAL, 0},
        {"5sec", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++)
        check_parse(tr_config_duration_ms, "duration", durations[i].text, durations[i].rc,
                    durations[i].ms);

    static const struct {
        const char *text;
        int rc;
        int64_t bytes;
    } sizes[] = {
        {"19m", 0, INT64_C(19) << 20},
        {"16k", 0, 16384},
        {"16K", 0, 16384},
        {"1g", 0, INT64_C(1) << 30},
        {"1G", 0, INT64_C(1) << 30},
        {"100", 0, 100},
        {"0", 0, 0},
        {"8589934591g", 0, INT64_C(8589934591) << 30},
        {"8589934592g", -EINVAL, 0}, /* 2^63 overflows */
        {"9223372036854775807", 0, INT64_MAX},
        {"9223372036854775808", -EINVAL, 0},
        {"1kb", -EINVAL, 0},
        {"1t", -EINVAL, 0},
        {"k", -EINVAL, 0},
        {"-1", -EINVAL, 0},
        {"1.5m", -EINVAL, 0},
        {"", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        check_parse(tr_config_size, "size", sizes[i].text, sizes[i].rc, sizes[i].bytes);

    static const struct {
        const char *text;
        int rc;
        int64_t v;
    } ints[] = {
        {"42", 0, 42},
        {"-7", 0, -7},
        {"+3", 0, 3},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", -EINVAL, 0},
        {"-9223372036854775809", -EINVAL, 0},
        {"12a", -EINVAL, 0},
        {"abc", -EINVAL, 0},
        {"", -EINVAL, 0},
        {"-", -EINVAL, 0},
        {" 1", -EINVAL, 0},
        {"1 ", -EINVAL, 0},
        {"0x10", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        check_parse(tr_config_int, "int", ints[i].text, ints[i].rc, ints[i].v);
}

static void test_print_help(void **state)
{
    (void)state;
    char path[PATH_MAX + 16], text[8192];
    snprintf(path, sizeof(path), "%s/help.txt", tmpdir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    tr_config_print_help(all_sets);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    /* Redeclared options print once, with the later declaration. */
    const char *line = strstr(text, "  --port-base         VALUE   redeclared");
    assert_non_null(line);
    assert_null(strstr(line + 4, "--port-base"));
    assert_null(strstr(text, "(default: 8000)"));
    assert_non_null(strstr(line, "(default: 9100)\n"));
    assert_non_null(strstr(text, "  --host              VALUE   address to listen on (default: "
                                 "127.0.0.1)\n"));
    assert_non_null(strstr(text, "  --jwt-alg "));
    assert_non_null(strstr(text, "JWT algorithm (default: HS256)\n"));
    assert_non_null(strstr(text, "JWT signing secret\n")); /* no default shown */
}

static void read_file(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, outlen - 1, f);
    fclose(f);
    out[n] = '\0';
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static bool is_hex(const char *s, size_t len)
{
    if (strlen(s) != len) return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}

static void test_secret_generated(void **state)
{
    (void)state;
    char data[PATH_MAX], path[PATH_MAX + 64], text[256];
    char *s1 = NULL, *s2 = NULL;
    struct stat st;
    tr_config_t *cfg = NULL;

    clear_env();
    cfg = load(0, NULL);
    /* The data directory itself does not exist yet. */
    snprintf(data, sizeof(data), "%s/gen", tmpdir);
    assert_int_equal(tr_config_secret(cfg, "jwt-secret", data, "jwt", 32, &s1), 0);
    assert_true(is_hex(s1, 64));

    snprintf(path, sizeof(path), "%s/secrets", data);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/secrets/jwt", data);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    read_file(path, text, sizeof(text));
    assert_int_equal(strlen(text), 65);
    assert_int_equal(text[64], '\n');
    assert_memory_equal(text, s1, 64);

    /* Stable across loads. */
    assert_int_equal(tr_config_secret(cfg, "jwt-secret", data, "jwt", 32, &s2), 0);
    assert_string_equal(s1, s2);
    free(s2);
    /* A second name gets its own, different secret. */
    assert_int_equal(tr_config_secret(cfg, NULL, data, "internal", 16, &s2), 0);
    assert_true(is_hex(s2, 32));
    assert_memory_not_equal(s1, s2, 32);
    free(s2);

    /* Only the two secrets remain: no temporary files left behind. */
    snprintf(path, sizeof(path), "%s/secrets", data);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))) entries++;
    closedir(dir);
    assert_int_equal(entries, 2);
    free(s1);
    tr_config_free(cfg);
}

static void test_secret_sources(void **state)
{
    (void)state;
    char data[PATH_MAX], path[PATH_MAX + 64];
    char *s = NULL;
    struct stat st;

    clear_env();
    snprintf(data, sizeof(data), "%s/src", tmpdir);

    /* The option wins and nothing is written. */
    char *argv[] = {"--jwt-secret", "from-flag"};
    tr_config_t *cfg = load(2, argv);
    assert_int_equal(tr_config_secret(cfg, "jwt-secret", data, "jwt", 32, &s), 0);
    assert_string_equal(s, "from-flag");
    free(s);
    snprintf(path, sizeof(path), "%s/secrets/jwt", data);
    assert_int_equal(stat(path, &st), -1);
    tr_config_free(cfg);

    /* An empty option falls through to the file. */
    char *empty_argv[] = {"--jwt-secret="};
    cfg = load(1, empty_argv);
    assert_int_equal(mkdir(data, 0700), 0);
    snprintf(path, sizeof(path), "%s/secrets", data);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/secrets/jwt", data);
    write_file(path, "handwritten\r\n");
    chmod(path, 0600);
    assert_int_equal(tr_config_secret(cfg, "jwt-secret", data, "jwt", 32, &s), 0);
    assert_string_equal(s, "handwritten"); /* trailing newline trimmed */
    free(s);

    /* An empty file is refused, not silently replaced. */
    write_file(path, "\n");
    s = (char *)&s;
    assert_int_equal(tr_config_secret(cfg, "jwt-secret", data, "jwt", 32, &s), -EINVAL);
    assert_null(s);

    /* Names that would escape the secrets directory, and bad sizes. */
    static const char *const bad_names[] = {"../jwt", "a/b", "..", ".", "", NULL};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
        assert_int_equal(tr_config_secret(cfg, NULL, data, bad_names[i], 32, &s), -EINVAL);
    assert_int_equal(tr_config_secret(cfg, NULL, data, "zero", 0, &s), -EINVAL);
    assert_int_equal(tr_config_secret(cfg, NULL, "", "x", 32, &s), -EINVAL);

    /* A data path that is a file cannot hold secrets. */
    snprintf(path, sizeof(path), "%s/not-a-dir", tmpdir);
    write_file(path, "x");
    assert_int_equal(tr_config_secret(cfg, NULL, path, "jwt", 32, &s), -ENOTDIR);
    assert_null(s);
    tr_config_free(cfg);
}

static void test_secret_race(void **state)
{
    (void)state;
    enum { PROCS = 8 };
    char data[PATH_MAX], path[PATH_MAX + 64], text[256];
    pid_t pids[PROCS];
    int barrier[2];

    clear_env();
    snprintf(data, sizeof(data), "%s/race", tmpdir);
    snprintf(path, sizeof(path), "%s/secrets/jwt", data);
    assert_int_equal(pipe(barrier), 0);
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char byte, file[256], *secret = NULL;
            close(barrier[1]);
            if (read(barrier[0], &byte, 1) != 0) _exit(2);
            tr_config_t *cfg = NULL;
            if (tr_config_load(&cfg, all_sets, 0, NULL, NULL, 0) != 0) _exit(3);
            if (tr_config_secret(cfg, NULL, data, "jwt", 32, &secret) != 0) _exit(4);
            /* Every process must end up with the one secret on disk. */
            FILE *f = fopen(path, "r");
            if (!f || !fgets(file, sizeof(file), f)) _exit(5);
            fclose(f);
            file[strcspn(file, "\n")] = '\0';
            _exit(strcmp(file, secret) == 0 ? 0 : 6);
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
    read_file(path, text, sizeof(text));
    assert_int_equal(strlen(text), 65);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers),         cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_common_options), cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_print_help),     cmocka_unit_test(test_secret_generated),
        cmocka_unit_test(test_secret_sources), cmocka_unit_test(test_secret_race),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

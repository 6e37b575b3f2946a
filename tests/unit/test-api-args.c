/* SPDX-License-Identifier: MIT */
/* Every public entry point against the arguments it does not take (systemd's assert_return):
 * NULL context, name, result pointers, unknown flags. Each call returns -EINVAL with
 * vm_manager::invalid_argument (or, for functions without an error object, its documented
 * neutral value) and does not crash. The table must name every function the public headers
 * declare: a new vmctl_* function without a row fails test_table_covers_headers. */
#include <dirent.h>
#include <errno.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <vmctl/vmctl.h>

#ifndef SOURCE_ROOT
#error "SOURCE_ROOT must be defined by the build"
#endif

static vmctl_ctx *ctx;
/* A non-NULL object the checks must reject an other argument before touching (it is zeroes). */
static _Alignas(max_align_t) unsigned char bogus_mem[4096];
#define BOGUS(type) ((type *)(void *)bogus_mem)

static char *argv_true[] = {"true", NULL};
static const vmctl_exec_opts opts = {.argv = argv_true};

enum expect {
    EINVAL_ERR,   /* -EINVAL and vm_manager::invalid_argument in *reterr */
    EINVAL_NOERR, /* -EINVAL, the function has no error object */
    VALUE,        /* returns .value (void functions: 0) */
};

typedef struct api_case {
    const char *fn;   /* the entry point */
    const char *what; /* which argument is wrong */
    enum expect expect;
    intptr_t value;
} api_case;

/* vmctl_error_new called through a pointer: a NULL format is what is tested */
static int (*error_new_p)(vmctl_error **, vmctl_error_kind, int, const char *, ...);
static int (*error_newv_p)(vmctl_error **, vmctl_error_kind, int, const char *, va_list);
static int error_newv(vmctl_error **e, vmctl_error_kind kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = error_newv_p(e, kind, EIO, fmt, ap);
    va_end(ap);
    return r;
}

static vmctl_vm_info *vm_info;
static vmctl_vm_info **vm_infos;
static vmctl_image_info image_info, *image_infos;
static vmctl_host_check *checks;
static vmctl_exec_session *session;
static vmctl_exec_proc *proc;
static vmctl_exec_result exec_result;
static vmctl_exec_status exec_status;
static vmctl_guest_info guest_info;
static vmctl_ssh_info ssh_info;
static vmctl_env_result *env_results;
static vmctl_port_forward port_forward;
static vmctl_mount mount;
static char mount_buf[] = "/a:/b";
static vmctl_ctx *new_ctx;
static vmctl_vm_stats *vm_stats;
static vmctl_network_info *net_info;
static vmctl_snapshot_info **snap_infos;
static vmctl_pool_info **pool_infos;
static char *text;
static const vmctl_vm_config vm_config = {.name = "x"};
static char *str, **strv;
static size_t count;
static int fd;
static char *secret_names[] = {"s", NULL};

static const api_case table[] = {
#define X(fn, what, expect, value, expr) {#fn, what, expect, (intptr_t)(value)},
#include "test-api-args-cases.h"
#undef X
};
#define N_CASES (sizeof(table) / sizeof(table[0]))

static intptr_t call(size_t i, vmctl_error **e)
{
    size_t k = 0;
#define X(fn, what, expect, value, expr)                                                           \
    if (i == k++)                                                                                  \
        return (intptr_t)(expr);
#include "test-api-args-cases.h"
#undef X
    fail_msg("no case %zu", i);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/test-api-args-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    vmctl_error *e = NULL;
    assert_int_equal(vmctl_ctx_open(tmpl, 0, &ctx, &e), 0);
    error_new_p = vmctl_error_new;
    error_newv_p = vmctl_error_newv;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char *home = strdup(vmctl_ctx_get_home(ctx));
    vmctl_ctx_free(ctx);
    if (home) {
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        assert_int_equal(system(cmd), 0);
        free(home);
    }
    return 0;
}

static void test_every_case(void **state)
{
    (void)state;
    const api_case *t = table;
    int bad = 0;
    for (size_t i = 0; i < N_CASES; i++) {
        vmctl_error *e = NULL;
        intptr_t r = call(i, &e);
        const char *code = e ? vmctl_error_get_code(e) : NULL;
        bool ok;
        switch (t[i].expect) {
        case EINVAL_ERR:
            ok = r == -EINVAL && code && strcmp(code, "vm_manager::invalid_argument") == 0 &&
                 vmctl_error_find_detail(e, "function") &&
                 strcmp(vmctl_error_find_detail(e, "function"), t[i].fn) == 0;
            break;
        case EINVAL_NOERR:
            ok = r == -EINVAL && !e;
            break;
        default:
            ok = r == t[i].value && !e;
            break;
        }
        if (!ok) {
            fprintf(stderr, "%s with a bad %s: returned %ld, error %s (%s)\n", t[i].fn, t[i].what,
                    (long)r, code ? code : "none", e ? vmctl_error_get_message(e) : "");
            bad++;
        }
        vmctl_error_free(e);
    }
    assert_int_equal(bad, 0);
}

/* The same calls with reterr NULL: still -EINVAL, nothing written anywhere. */
static void test_no_reterr(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++)
        if (table[i].expect == EINVAL_ERR)
            assert_int_equal(call(i, NULL), -EINVAL);
}

static void test_error_getters(void **state)
{
    (void)state;
    assert_string_equal(vmctl_error_get_code(NULL), "vm_manager::internal");
    assert_string_equal(vmctl_version(), VMCTL_VERSION);
    vmctl_error *e = NULL;
    assert_int_equal(vmctl_vm_start(NULL, "x", false, 0, &e), -EINVAL);
    assert_string_equal(vmctl_error_get_message(e),
                        "invalid argument to vmctl_vm_start(): check 'ctx' failed");
    assert_string_equal(vmctl_error_find_detail(e, "check"), "ctx");
    assert_int_equal(vmctl_error_get_errno(e), EINVAL);
    /* find_detail on an object that has details, with a NULL key */
    assert_null(vmctl_error_find_detail(e, NULL));
    vmctl_error_free(e);
}

/* Every function the public headers declare has a row. */
static void test_table_covers_headers(void **state)
{
    (void)state;
    regex_t re;
    assert_int_equal(regcomp(&re, "^[a-z][^(]*[ *](vmctl_[a-z0-9_]+)\\(", REG_EXTENDED), 0);
    DIR *d = opendir(SOURCE_ROOT "/include/vmctl");
    assert_non_null(d);
    struct dirent *de;
    int missing = 0, seen = 0;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 3 || strcmp(de->d_name + l - 2, ".h") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/include/vmctl/%s", SOURCE_ROOT, de->d_name);
        FILE *f = fopen(path, "re");
        assert_non_null(f);
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
            regmatch_t m[2];
            if (strncmp(line, "typedef", 7) == 0 || regexec(&re, line, 2, m, 0) != 0)
                continue;
            line[m[1].rm_eo] = '\0';
            const char *fn = line + m[1].rm_so;
            seen++;
            bool found = false;
            for (size_t i = 0; i < N_CASES && !found; i++)
                found = strcmp(table[i].fn, fn) == 0;
            if (!found) {
                fprintf(stderr, "%s (include/vmctl/%s) has no row in test-api-args.c\n", fn,
                        de->d_name);
                missing++;
            }
        }
        fclose(f);
    }
    closedir(d);
    regfree(&re);
    assert_true(seen > 90);
    assert_int_equal(missing, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_covers_headers),
        cmocka_unit_test(test_every_case),
        cmocka_unit_test(test_no_reterr),
        cmocka_unit_test(test_error_getters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* SPDX-License-Identifier: MIT */
/* The lazy library loader (dl.c): a real library is loaded and its functions called, a library or
 * a symbol that does not exist is host::missing_dependency naming the library and its package,
 * concurrent first calls agree, and linking libvmctl maps none of the lazily loaded libraries. */
#include <dlfcn.h>
#include <errno.h>
#include <lzma.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include <cmocka.h>

#include "dl.h"
#include "error.h"
#include "util/util.h"

static bool mapped(const char *soname)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

/* Nothing in this process has called dl_open yet: the libraries libvmctl loads lazily must not be
 * mapped (no DT_NEEDED on them through libvmctl_internal's dependencies). Runs first. */
static void test_not_linked(void **state)
{
    static const char *const lazy[] = {"libcurl.so.4",   "libssh.so.4",  "libcrypto.so.3",
                                       "libzstd.so.1",   "liblzma.so.5", "libnftables.so.1",
                                       "libsystemd.so.0"};
    for (size_t i = 0; i < ELEMENTSOF(lazy); i++)
        if (mapped(lazy[i]))
            fail_msg("%s is mapped before any dl_open", lazy[i]);
}

static DLSYM_PROTOTYPE(lzma_version_number);
static DLSYM_PROTOTYPE(lzma_version_string);
static const dl_symbol lzma_symbols[] = {DL_SYMBOL(lzma_version_number),
                                         DL_SYMBOL(lzma_version_string)};

static void test_load(void **state)
{
    dl_library lib = DL_LIBRARY("liblzma.so.5", "liblzma5", "testing", lzma_symbols);
    assert_false(mapped("liblzma.so.5"));
    vmctl_error *e = NULL;
    assert_int_equal(dl_open(&lib, &e), 0);
    assert_null(e);
    assert_true(lib.loaded);
    assert_true(mapped("liblzma.so.5"));
    /* the pointers are the library's own functions (it is loaded RTLD_LOCAL: look it up by
     * handle), and they work */
    void *h = dlopen("liblzma.so.5", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    assert_ptr_equal((void *)sym_lzma_version_number, dlsym(h, "lzma_version_number"));
    dlclose(h);
    assert_int_equal(sym_lzma_version_number() / 10000000u, LZMA_VERSION_MAJOR);
    assert_string_equal(sym_lzma_version_string(), LZMA_VERSION_STRING);
    /* a second call is a no-op that succeeds */
    assert_int_equal(dl_open(&lib, &e), 0);
    assert_null(e);
}

/* Stand-ins for functions of libraries that do not exist: only their names and pointers matter. */
static void (*sym_doesnotexist_init)(void);
static const dl_symbol missing_symbols[] = {DL_SYMBOL(doesnotexist_init)};

static void test_missing_library(void **state)
{
    dl_library lib = DL_LIBRARY("libdoesnotexist.so.0", "libdoesnotexist0", "testing the loader",
                                missing_symbols);
    for (int attempt = 0; attempt < 2; attempt++) { /* a failure is not remembered as success */
        cleanup_error vmctl_error *e = NULL;
        assert_int_equal(dl_open(&lib, &e), -ENOENT);
        assert_non_null(e);
        assert_string_equal(vmctl_error_get_code(e), "vm_manager::host::missing_dependency");
        const char *msg = vmctl_error_get_message(e);
        assert_non_null(strstr(msg, "cannot load libdoesnotexist.so.0"));
        assert_non_null(strstr(msg, "testing the loader"));
        assert_string_equal(vmctl_error_find_detail(e, "library"), "libdoesnotexist.so.0");
        assert_string_equal(vmctl_error_find_detail(e, "package"), "libdoesnotexist0");
        assert_non_null(strstr(vmctl_error_get_help(e), "apt-get install libdoesnotexist0"));
        assert_false(lib.loaded);
        assert_null(sym_doesnotexist_init);
    }
    assert_int_equal(dl_open(&lib, NULL), -ENOENT); /* reterr may be NULL */
}

static DLSYM_PROTOTYPE(ZSTD_versionNumber);
static void (*sym_ZSTD_noSuchFunction)(void);
static const dl_symbol zstd_bad_symbols[] = {DL_SYMBOL(ZSTD_versionNumber),
                                             DL_SYMBOL(ZSTD_noSuchFunction)};

static void test_missing_symbol(void **state)
{
    dl_library lib = DL_LIBRARY("libzstd.so.1", "libzstd1", "testing", zstd_bad_symbols);
    cleanup_error vmctl_error *e = NULL;
    assert_int_equal(dl_open(&lib, &e), -ENOENT);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::host::missing_dependency");
    assert_non_null(strstr(vmctl_error_get_message(e), "'ZSTD_noSuchFunction'"));
    assert_string_equal(vmctl_error_find_detail(e, "package"), "libzstd1");
    assert_false(lib.loaded);
    /* no half-filled table: the symbol that did resolve is cleared again */
    assert_null(sym_ZSTD_versionNumber);
    assert_null(sym_ZSTD_noSuchFunction);
}

/* Several threads make the first call at once (`vmctl up` starts machines in threads). */
static const dl_symbol zstd_symbols[] = {DL_SYMBOL(ZSTD_versionNumber)};
static dl_library zstd_lib = DL_LIBRARY("libzstd.so.1", "libzstd1", "testing", zstd_symbols);
static pthread_barrier_t barrier;

static void *racer(void *arg)
{
    pthread_barrier_wait(&barrier);
    int r = dl_open(&zstd_lib, NULL);
    /* once dl_open returned 0 the pointer must be usable in this thread */
    *(unsigned *)arg = r == 0 ? sym_ZSTD_versionNumber() : 0;
    return (void *)(intptr_t)r;
}

static void test_concurrent_first_use(void **state)
{
    enum { N = 8 };
    pthread_t th[N];
    unsigned version[N] = {};
    assert_int_equal(pthread_barrier_init(&barrier, NULL, N), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&th[i], NULL, racer, &version[i]), 0);
    for (int i = 0; i < N; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_int_equal((intptr_t)ret, 0);
        assert_int_equal(version[i] / 10000, ZSTD_VERSION_MAJOR);
    }
    pthread_barrier_destroy(&barrier);
    assert_true(zstd_lib.loaded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_linked),           cmocka_unit_test(test_load),
        cmocka_unit_test(test_missing_library),      cmocka_unit_test(test_missing_symbol),
        cmocka_unit_test(test_concurrent_first_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

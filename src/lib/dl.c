/* SPDX-License-Identifier: MIT */
/* Libraries loaded on first use. See dl.h. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "dl.h"
#include "error.h"
#include "util/util.h"

/* One lock for every library: loading happens a handful of times per process. */
static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;

static int dl_missing(vmctl_error **reterr, const dl_library *lib, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int dl_missing(vmctl_error **reterr, const dl_library *lib, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *why = str_vprintf(fmt, ap);
    va_end(ap);
    int r = err_make(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,
                     "cannot load %s, which vmctl needs for %s: %s", lib->soname, lib->purpose,
                     why ? why : "out of memory");
    err_detail(reterr, "library", "%s", lib->soname);
    err_detail(reterr, "package", "%s", lib->package);
    err_help(reterr, "Install the Debian package '%s' (`apt-get install %s`).", lib->package,
             lib->package);
    return r;
}

static int dl_open_locked(dl_library *lib, vmctl_error **reterr)
{
    (void)dlerror();
    void *h = dlopen(lib->soname, RTLD_NOW | RTLD_NODELETE);
    if (!h) {
        const char *e = dlerror();
        return dl_missing(reterr, lib, "%s", e ? e : "not found");
    }
    for (size_t i = 0; i < lib->n_symbols; i++) {
        (void)dlerror();
        void *p = dlsym(h, lib->symbols[i].name);
        const char *e = dlerror();
        if (!p || e) {
            for (size_t j = 0; j < lib->n_symbols; j++)
                *lib->symbols[j].fn = NULL;
            int r = dl_missing(reterr, lib, "it has no symbol '%s' (an older version?)",
                               lib->symbols[i].name);
            (void)dlclose(h); /* drops our reference; RTLD_NODELETE keeps the mapping */
            return r;
        }
        *lib->symbols[i].fn = p;
    }
    /* The handle is not kept: the library stays mapped (RTLD_NODELETE) and is reached through the
     * sym_ pointers only. */
    (void)dlclose(h);
    __atomic_store_n(&lib->loaded, true, __ATOMIC_RELEASE);
    return 0;
}

int dl_open(dl_library *lib, vmctl_error **reterr)
{
    if (__atomic_load_n(&lib->loaded, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&dl_lock);
    int r = __atomic_load_n(&lib->loaded, __ATOMIC_ACQUIRE) ? 0 : dl_open_locked(lib, reterr);
    pthread_mutex_unlock(&dl_lock);
    return r;
}

/* SPDX-License-Identifier: MIT */
/* Heavy libraries loaded on first use (dlopen), not at start-up: libcurl (with its 30 dependencies)
 * and the decompressors only for `image pull`, libssh for the SSH channel and keys, libcrypto for
 * SHA-256. A command that does not need them never maps them.
 *
 * A module that uses such a library declares the functions it calls and a table naming the library
 * and those functions, and calls dl_open() before the first call (the systemd pattern):
 *
 *     static DLSYM_PROTOTYPE(ZSTD_createDCtx);
 *     static const dl_symbol zstd_symbols[] = {DL_SYMBOL(ZSTD_createDCtx)};
 *     static dl_library zstd_lib = DL_LIBRARY("libzstd.so.1", "libzstd1", "decompressing images",
 *                                             zstd_symbols);
 *     ...
 *     if ((r = dl_open(&zstd_lib, reterr)) < 0)
 *         return r;
 *     ZSTD_DCtx *z = sym_ZSTD_createDCtx();
 *
 * The library's headers are used for types and constants only: nothing links against it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <vmctl/error.h>

#include "macros.h"

/* The pointer through which a module calls symbol once its library is loaded. */
#define DLSYM_PROTOTYPE(symbol) __typeof__(symbol) *sym_##symbol

typedef struct dl_symbol {
    const char *name;
    void **fn; /* &sym_<name> */
} dl_symbol;

#define DL_SYMBOL(symbol)                                                                          \
    {                                                                                              \
#symbol, (void **)&sym_##symbol                                                            \
    }

typedef struct dl_library {
    const char *soname;  /* "libcurl.so.4": the ABI the headers we compiled against describe */
    const char *package; /* Debian package that installs it: "libcurl4" */
    const char *purpose; /* for the error message: "downloading images" */
    const dl_symbol *symbols;
    size_t n_symbols;
    /* owned by dl.c: set once every symbol is resolved (an acquire/release flag) */
    bool loaded;
} dl_library;

#define DL_LIBRARY(soname_, package_, purpose_, symbols_)                                          \
    {                                                                                              \
        .soname = (soname_), .package = (package_), .purpose = (purpose_), .symbols = (symbols_),  \
        .n_symbols = ELEMENTSOF(symbols_),                                                         \
    }

/* Load lib (RTLD_NOW | RTLD_NODELETE: never unloaded) and fill every sym_ pointer of its table.
 * Thread-safe; after the first success it is one atomic load. A library or symbol that cannot be
 * loaded is host::missing_dependency (details library, package; help names the package); the
 * pointers are left NULL and a later call tries again. */
int dl_open(dl_library *lib, vmctl_error **reterr);

/* The libraries loaded on first use (defined by the modules that use them), for `vmctl doctor`. */
extern dl_library dl_lib_curl, dl_lib_zstd, dl_lib_lzma, dl_lib_crypto, dl_lib_ssh, dl_lib_nftables,
    dl_lib_systemd;

/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmctl_exec_opts {
    char *const *argv;  /* NULL-terminated, argv[0] looked up in the guest's PATH */
    char *const *env;   /* "K=V" added to the guest environment, may be NULL */
    const char *cwd;    /* NULL: / */
    double timeout_sec; /* 0: none */
    const void *stdin_data;
    size_t stdin_len;
} vmctl_exec_opts;

typedef struct vmctl_exec_result {
    int exit_code; /* valid when signal == 0 */
    int signal;    /* terminating signal, or 0 */
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
} vmctl_exec_result;

/* Run a command through the guest agent and capture its output. The VM must be running. */
int vmctl_exec(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
               vmctl_exec_result *result, vmctl_error **reterr);
void vmctl_exec_result_clear(vmctl_exec_result *result);

#ifdef __cplusplus
}
#endif

/* SPDX-License-Identifier: MIT */
/* VMFile.kdl environments (docs/vmfile.md): load a file, bring its machines up (created,
 * started, provisioned), put them down, reload them, run their provisioners again. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmctl_vmfile vmctl_vmfile;

/* path NULL: VMFile.kdl in the current directory. Errors: vmfile::not_found, vmfile::parse_failed,
 * vmfile::validation (positioned "FILE:LINE:COLUMN: ...", details path, line, column, node,
 * field), io. */
int vmctl_vmfile_load(const char *path, vmctl_vmfile **ret, vmctl_error **reterr);
void vmctl_vmfile_free(vmctl_vmfile *f);
size_t vmctl_vmfile_n_machines(const vmctl_vmfile *f);
const char *vmctl_vmfile_machine_name(const vmctl_vmfile *f, size_t i);
/* What create gets for machine i (valid while f lives; image is NULL for image-url until up
 * pulled it). */
const vmctl_vm_config *vmctl_vmfile_machine_config(const vmctl_vmfile *f, size_t i);
size_t vmctl_vmfile_machine_n_steps(const vmctl_vmfile *f, size_t i);

typedef enum vmctl_env_action {
    VMCTL_ENV_UNCHANGED,
    VMCTL_ENV_CREATED,     /* created, started, provisioned */
    VMCTL_ENV_STARTED,     /* started (from created/stopped/crashed), provisioned */
    VMCTL_ENV_RESUMED,     /* was paused */
    VMCTL_ENV_PROVISIONED, /* provision: the steps ran again */
    VMCTL_ENV_STOPPED,
    VMCTL_ENV_DESTROYED,
    VMCTL_ENV_FAILED, /* see the result's error */
} vmctl_env_action;

const char *vmctl_env_action_to_string(vmctl_env_action a);

/* Where provisioner output comes from. */
typedef enum vmctl_provision_stream {
    VMCTL_PROVISION_INFO = 0, /* vmctl's own lines: "==> step 1/2: shell (inline)" */
    VMCTL_PROVISION_STDOUT = 1,
    VMCTL_PROVISION_STDERR = 2,
} vmctl_provision_stream;

/* Provisioner output, one whole line at a time (with its '\n'), from several threads: calls
 * are serialised. The same lines are appended to the VM's provision.log. */
typedef void (*vmctl_provision_output_fn)(void *userdata, const char *vm,
                                          vmctl_provision_stream stream, const char *data,
                                          size_t len);

typedef struct vmctl_env_opts {
    const char *name;        /* only this machine (NULL: all; not in the file: vm::not_found) */
    bool destroy;            /* down: destroy instead of stopping */
    double boot_timeout_sec; /* wait for readiness (0: the library's default) */
    double stop_timeout_sec; /* down/reload: per stop step (0: the library's default) */
    vmctl_provision_output_fn output;
    void *userdata;
    bool adopt; /* up: take over machines of these names made by hand (never another VMFile's) */
} vmctl_env_opts;

typedef struct vmctl_env_result {
    char *name;
    vmctl_env_action action;
    bool provisioned;   /* the steps ran (and all succeeded) */
    size_t steps_run;   /* steps that ran to success */
    double seconds;     /* wall time of this machine's work */
    vmctl_error *error; /* when action == VMCTL_ENV_FAILED */
} vmctl_env_result;

void vmctl_env_results_free(vmctl_env_result *r, size_t n);

/* Each works on the selected machines in parallel (up to 16 at once, a thread and vmctl_ctx
 * each) and fills one result per machine in file order. Only the machines this VMFile made are
 * touched (vmctl_vm_info.project): one of the same name made by another VMFile or by hand is
 * vm::already_exists (details vm, owner, project, this_project) and left alone. up provisions
 * a running machine again while its last provisioning is not ok (failed, interrupted). Returns 0
 * when all succeeded; otherwise the first failure's code, with *reterr a copy of it (the other
 * failures as notes). *ret is filled in both cases. */
int vmctl_up(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
             vmctl_env_result **ret, size_t *n, vmctl_error **reterr);
int vmctl_down(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
               vmctl_env_result **ret, size_t *n, vmctl_error **reterr);
int vmctl_reload(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
                 vmctl_env_result **ret, size_t *n, vmctl_error **reterr);
int vmctl_provision(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
                    vmctl_env_result **ret, size_t *n, vmctl_error **reterr);

/* $VMCTL_HOME/vms/NAME/provision.log (it may not exist yet); vm::not_found for an unknown VM. */
int vmctl_provision_log_path(vmctl_ctx *ctx, const char *name, char **ret, vmctl_error **reterr);

#ifdef __cplusplus
}
#endif

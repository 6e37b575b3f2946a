/* SPDX-License-Identifier: MIT */
/* VMFile.kdl: load a file and validate it into a list of machine specs (docs/vmfile.md).
 * Errors: vmfile::not_found, vmfile::parse_failed (the KDL parser's), vmfile::validation
 * (positioned with kdl_error_at, details node and field). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>
#include <vmctl/vmfile.h>

/* What one VMFile may hold (docs/vmfile.md "Limits"): past a cap, vmfile::parse_failed (bytes)
 * or vmfile::validation (the others), naming the cap and the count, at the line of the first
 * node over it. Validation is linear in the size of the file. */
#define VMFILE_MAX_BYTES    (16u << 20) /* of the file */
#define VMFILE_MAX_MACHINES 1024u       /* vm nodes per file */
#define VMFILE_MAX_STEPS    4096u       /* provision steps per vm */
#define VMFILE_MAX_PORTS    256u        /* port forwards per vm */
#define VMFILE_MAX_ENV      1024u       /* env variables per vm */

typedef enum vmfile_step_kind {
    VMFILE_STEP_SHELL,
    VMFILE_STEP_FILE,
} vmfile_step_kind;

typedef struct vmfile_step {
    vmfile_step_kind kind;
    char *inline_cmd;   /* shell: sh -c this, or NULL */
    char *script;       /* shell: absolute path of a local script (sent to sh -s), or NULL */
    char *user;         /* shell: guest user to run as (NAME, UID or UID:GID), or NULL: root */
    char *source;       /* file: absolute local path */
    char *destination;  /* file: guest path */
    double timeout_sec; /* 0: none */
    unsigned line;      /* of the provision node, for messages */
} vmfile_step;

typedef struct vmfile_machine {
    /* What create gets; its strings point into the owned fields below. */
    vmctl_vm_config config;
    char *name;
    char *image, *kernel, *initrd, *cmdline, *machine, *accel, *net;
    char *image_url, *image_sha256, *image_name; /* image-url: pulled at up */
    char *cloud_init, *ssh_key, *ssh_user;
    /* from "VM/SNAP": up clones the machine from that snapshot instead of creating and booting
     * it (docs/vmfile.md); both NULL otherwise */
    char *from_vm, *from_snap;
    /* from "VM/SNAP" pool=N: up keeps the snapshot's warm pool at N (docs/vmfile.md "A warm
     * pool"); pool_offset: where the property is in the document */
    bool has_pool;
    unsigned pool;
    size_t pool_offset;
    vmctl_port_forward *ports;
    char **env; /* K=V, NULL-terminated, may be NULL */
    size_t n_env;
    char **allow; /* network "tap" { allow ... }, NULL-terminated, may be NULL */
    vmfile_step *steps;
    size_t n_steps;
    vmctl_mount *mounts; /* source and target malloc'd */
    size_t n_mounts;
} vmfile_machine;

typedef struct vmfile {
    char *path; /* as the user named it (diagnostics) */
    /* The canonical absolute path of the file (symlinks resolved): the project that owns the
     * machines up makes (docs/vmfile.md "Projects"). NULL for a document parsed from memory. */
    char *project;
    char *dir; /* the directory relative paths resolve against */
    vmfile_machine *machines;
    size_t n_machines;
} vmfile;

/* The public handle (include/vmctl/vmfile.h). */
struct vmctl_vmfile {
    vmfile *f;
};

void vmfile_free(vmfile *f);
static inline void vmfile_freep(vmfile **f)
{
    vmfile_free(*f);
}
#define cleanup_vmfile __attribute__((cleanup(vmfile_freep)))

/* path NULL: VMFile.kdl in the current directory (vmfile::not_found when absent). */
int vmfile_load(const char *path, vmfile **ret, vmctl_error **reterr);
/* A document in memory; name stands for it in diagnostics, dir is where paths resolve. */
int vmfile_parse(const char *name, const char *dir, const char *buf, size_t len, vmfile **ret,
                 vmctl_error **reterr);
/* The machine called name, or NULL. */
const vmfile_machine *vmfile_find(const vmfile *f, const char *name);
const char *vmfile_step_kind_to_string(vmfile_step_kind k);

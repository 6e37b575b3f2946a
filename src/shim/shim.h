/* SPDX-License-Identifier: MIT */
/* containerd-shim-vmctl-v2 (issue 13, docs/containerd.md): the shared state of the serving shim.
 * One shim per task: one VM (owner-bound to the shim), its init process and its execs, each run
 * in the VM through the guest agent, chrooted into the bundle's rootfs (mounted by virtio-fs). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <vmctl/vmctl.h>

/* Where the bundle's rootfs is mounted in the guest. */
#define SHIM_GUEST_ROOT "/run/vmctl-rootfs"

/* What `start`/`delete` and the serving shim were called with. */
typedef struct shim_args {
    const char *namespace;
    const char *address; /* containerd's gRPC socket */
    const char *publish_binary;
    const char *id;
    const char *bundle; /* -bundle, else the working directory */
    bool debug;
} shim_args;

extern shim_args shim_opts;

/* containerd.v1.types.Status */
enum { ST_UNKNOWN = 0, ST_CREATED = 1, ST_RUNNING = 2, ST_STOPPED = 3, ST_PAUSED = 4 };

/* An OCI process (config.json's `process`, or an Exec's spec). */
typedef struct shim_spec {
    char **argv;
    char **env;
    char *cwd;
    char *user; /* "UID:GID" */
    bool terminal;
} shim_spec;

/* A bind mount of the OCI spec (a volume: `ctr run --mount`, a Kubernetes volume): a host
 * directory shared with the VM (virtio-fs, at SHIM_GUEST_VOLUMES/N) and bound at dest in the
 * container's root. */
#define SHIM_GUEST_VOLUMES "/run/vmctl-vol"
typedef struct shim_volume {
    char *source, *dest;
    bool read_only;
} shim_volume;

typedef struct shim_proc {
    struct shim_proc *next;
    char *exec_id; /* "" for the init process */
    char *stdin_path, *stdout_path, *stderr_path;
    bool terminal;
    shim_spec spec;
    int status; /* ST_* */
    uint32_t exit_status;
    struct timespec exited_at;
    int ctl[2]; /* commands to its I/O thread: 'k' SIG, 'c' close stdin, 'r' ROWS COLS */
    bool io_started, io_done;
    bool start_published; /* TaskStart/TaskExecStarted out: the exit may follow */
    pthread_t thread;
} shim_proc;

typedef struct shim_task {
    char *id;
    char *bundle;
    char *vm;     /* the VM's name */
    char *rootfs; /* host directory mounted into the VM */
    shim_volume *vols;
    size_t n_vols;
    char *net;    /* "netns:PATH" of the spec's network namespace (a pod's), or NULL: no network */
    bool mounted; /* rootfs mounted by us (CreateTaskRequest.rootfs) */
    pid_t vm_pid;
    shim_proc *procs; /* the init process first */
    bool paused;
    bool vm_made; /* the VM exists (task_teardown destroys it) */
    bool deleted; /* Delete of the init process done: the task answers no more */
} shim_task;

/* The one lock of the serving shim, and its condition (a process exited). */
extern pthread_mutex_t shim_lock;
extern pthread_cond_t shim_cond;
extern shim_task *shim_the_task; /* NULL until Create */

/* Logging to the shim's log FIFO (containerd copies it to its own log). */
void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* util.c: the VM name and the socket path of (namespace, id). */
char *shim_vm_name(const char *ns, const char *id);
char *shim_socket_path(const char *ns, const char *id);
const char *shim_socket_dir(void); /* /run/vmctl-shim (root), else /tmp/vmctl-shim */
/* A context on the VM store ($VMCTL_HOME, as containerd's environment sets it). */
int shim_ctx(vmctl_ctx **ret, vmctl_error **reterr);

/* server.c: serve ttRPC on listen_fd until Shutdown; returns the exit code. */
int shim_serve(int listen_fd);
void shim_request_exit(void);

/* A ttRPC error: grpc code and message, for server.c to send. */
typedef struct shim_status {
    int code; /* 0 ok */
    char msg[512];
} shim_status;
enum {
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
};
int shim_fail(shim_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* task.c: one method of containerd.task.v2.Task: decode req, fill *resp (malloc'd, packed). */
typedef int (*shim_method_fn)(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len,
                              shim_status *st);
shim_method_fn shim_task_method(const char *name);

/* spec.c */
int shim_spec_from_json(const char *json, size_t len, shim_spec *ret, char **err);
int shim_bundle_load(const char *bundle, shim_spec *ret, char **root_path, bool *root_ro,
                     char **err);
void shim_spec_clear(shim_spec *s);
/* The spec's bind mounts of host directories (others, and /proc, /sys, /dev, are left out; a
 * file's bind mount cannot be shared through virtio-fs and is logged). */
int shim_bundle_volumes(const char *bundle, shim_volume **ret, size_t *n);
/* config.json's linux.namespaces entry of type "network" with a path (the pod's, made by its
 * CNI plugin; `ctr run --with-ns network:PATH`): *ret "netns:PATH", else NULL (a new network
 * namespace, or none: the VM gets no network; CRI's sandbox container gets none either, its
 * pod's first container takes the namespace over). 0 or -ENOMEM/-EINVAL. */
int shim_bundle_netns(const char *bundle, char **ret);
void shim_volumes_free(shim_volume *v, size_t n);

/* io.c: start the process's I/O thread (it runs the process to its end); 0 or -errno. */
int shim_proc_run(shim_task *t, shim_proc *p, shim_status *st);
/* Send a command to a running process's thread. */
int shim_proc_ctl(shim_proc *p, char op, uint32_t a, uint32_t b);
void shim_proc_free(shim_proc *p);

/* events.c: a protobuf writer for events and metrics, and publishing through -publish-binary. */
typedef struct pbw {
    uint8_t *buf;
    size_t len, cap;
    bool oom;
} pbw;
void pbw_varint_field(pbw *w, unsigned field, uint64_t v);
void pbw_bytes_field(pbw *w, unsigned field, const void *data, size_t len);
void pbw_str_field(pbw *w, unsigned field, const char *s);
void pbw_msg_field(pbw *w, unsigned field, const pbw *sub); /* sub may be empty */
void pbw_timestamp_field(pbw *w, unsigned field, const struct timespec *ts);
void pbw_free(pbw *w);
/* Queue containerd.events.NAME (type_url "containerd.events.NAME") for topic: published in
 * order by a thread of its own. Never fails the caller: a failure is logged. */
void shim_publish(const char *topic, const char *name, const pbw *event);
/* Wait until every event published so far is out (before the shim exits). */
void shim_publish_flush(void);

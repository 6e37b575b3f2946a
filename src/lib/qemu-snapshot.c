/* SPDX-License-Identifier: MIT */
/* The QEMU side of snapshots (backend_ops.version, snapshot_save, snapshot_load;
 * docs/snapshots.md): a migration into, or out of, a file passed with QMP getfd. A template
 * leaves the RAM out of the stream (x-ignore-shared: the RAM is a share=on memory-backend-file on
 * save; a restore maps the same file share=off, and the destination keeps what the mapping has
 * for every page the stream does not carry). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "qemu.h"
#include "qmp.h"
#include "util/util.h"

/* How often query-migrate is asked while a migration runs. */
#define MIGRATE_POLL_USEC 1000

static int oom(vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

int qemu_ram_file_prepare(const char *path, uid_t owner, vmctl_error **reterr)
{
    cleanup_free char *parent = strdup(path);
    if (!parent)
        return oom(reterr);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if (mkdir(parent, 0700) < 0 && errno != EEXIST) {
            int r = err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s': %s", parent,
                             strerror(errno));
            err_detail(reterr, "path", "%s", parent);
            return r;
        }
    }
    /* a fresh file for a cold boot: what an earlier run left (a guest that powered itself off
     * keeps its file until now) goes; 0600: the guest's memory, which QEMU opens read-write even
     * to map it privately */
    (void)unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot create the RAM file '%s': %s", path,
                         strerror(errno));
        err_detail(reterr, "path", "%s", path);
        return r;
    }
    /* a jailed hypervisor's: its uid opens it */
    if (owner && fchown(fd, owner, owner) < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot give the RAM file '%s' to the jail: %s",
                         path, strerror(errno));
        err_detail(reterr, "path", "%s", path);
        close(fd);
        return r;
    }
    close(fd);
    return 0;
}

/* "M.m.u" with digits only: what note_version wrote whole. */
static bool version_ok(const char *s)
{
    int dots = 0;
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p == '.')
            dots++;
        else if (*p < '0' || *p > '9')
            return false;
    }
    return dots == 2;
}

int qemu_version(const char *dir, uint64_t deadline, char **ret, vmctl_error **reterr)
{
    /* the greeting's, kept by the launch (VM_FILE_BACKEND_VERSION): no QMP connection */
    cleanup_free char *path = str_printf("%s/" VM_FILE_BACKEND_VERSION, dir);
    char *kept = NULL;
    if (path && read_file(path, &kept, NULL) >= 0 && version_ok(kept)) {
        *ret = kept;
        return 0;
    }
    free(kept);
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    json_t *v = NULL;
    if ((r = qmp_execute(q, "query-version", NULL, &v, deadline, reterr)) < 0)
        return r;
    *ret = qmp_version_string(v);
    json_decref(v);
    return *ret ? 0
                : err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, EPROTO,
                           "QEMU's query-version reply names no version");
}

/* snapshot::failed with what QEMU said (a QMP error's note, or query-migrate's error-desc). */
static int failed(vmctl_error **reterr, int errnum, const char *what, const char *qemu_words)
{
    int r = err_make(reterr, VMCTL_E_SNAPSHOT_FAILED, errnum, "QEMU could not %s", what);
    if (qemu_words && *qemu_words)
        err_note(reterr, "QEMU: %s", qemu_words);
    return r;
}

/* QEMU's words in a QMP error: its note ("QEMU: desc"), else the message. */
static const char *qemu_words(const vmctl_error *e)
{
    if (!e)
        return NULL;
    if (vmctl_error_get_n_notes(e) > 0) {
        const char *n = vmctl_error_get_note(e, 0);
        return str_startswith(n, "QEMU: ") ? n + 6 : n;
    }
    return vmctl_error_get_message(e);
}

/* A QMP command whose failure is the snapshot's: snapshot::failed with QEMU's words. */
static int step(qmp *q, const char *command, json_t *args, const char *what, uint64_t deadline,
                vmctl_error **reterr)
{
    cleanup_error vmctl_error *e = NULL;
    int r = qmp_execute(q, command, args, NULL, deadline, &e);
    json_decref(args);
    if (r >= 0)
        return 0;
    return failed(reterr, -r, what, qemu_words(e));
}

static int set_capabilities(qmp *q, bool ram_in_file, const char *what, uint64_t deadline,
                            vmctl_error **reterr)
{
    json_t *caps = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "x-ignore-shared",
                             "state", ram_in_file);
    if (!caps)
        return oom(reterr);
    return step(q, "migrate-set-capabilities", caps, what, deadline, reterr);
}

/* QEMU's own last words in its log (its lines name the binary: "qemu-system-x86_64: ..."), for
 * a QEMU that exited over a bad stream. malloc'd, NULL when there are none. */
static char *log_words(const char *dir)
{
    cleanup_free char *path = str_printf("%s/" VM_FILE_BACKEND_LOG, dir);
    cleanup_free char *tail = NULL;
    if (!path || read_file_tail(path, 2048, &tail) < 0 || !tail)
        return NULL;
    /* from the last launch marker on */
    char *from = tail, *m;
    while ((m = strstr(from, "vmctl: starting ")))
        from = m + 1;
    char *out = NULL;
    for (char *line = strtok(from, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strstr(line, "qemu-system"))
            continue;
        const char *w = strstr(line, ": ");
        w = w ? w + 2 : line;
        char *joined = str_printf("%s%s%s", out ? out : "", out ? "; " : "", w);
        free(out);
        out = joined;
    }
    return out;
}

/* Until query-migrate says completed (0) or failed (snapshot::failed, its error-desc; or what
 * QEMU logged when it exited over it). */
static int wait_migration(qmp *q, const char *dir, const char *what, uint64_t deadline,
                          vmctl_error **reterr)
{
    uint64_t start = now_usec();
    for (;;) {
        json_t *st = NULL;
        cleanup_error vmctl_error *e = NULL;
        int r = qmp_execute(q, "query-migrate", NULL, &st, deadline, &e);
        if (r == -ECONNRESET) {
            sleep_usec(100000); /* its last words reach the log as it exits */
            cleanup_free char *words = log_words(dir);
            return failed(reterr, ECONNRESET, what, words ? words : "exited during the migration");
        }
        if (r < 0) {
            if (reterr) {
                vmctl_error_free(*reterr);
                *reterr = TAKE_PTR(e);
            }
            return r;
        }
        const char *status = json_string_value(json_object_get(st, "status"));
        if (status && streq(status, "completed")) {
            json_decref(st);
            return 0;
        }
        if (status && (streq(status, "failed") || streq(status, "cancelled"))) {
            const char *desc = json_string_value(json_object_get(st, "error-desc"));
            r = failed(reterr, EIO, what, desc ? desc : status);
            json_decref(st);
            return r;
        }
        json_decref(st);
        if (now_usec() >= deadline)
            return err_timeout(reterr, "snapshot", (double)(deadline - start) / 1e6,
                               "QEMU did not finish the migration to %s before the deadline", what);
        sleep_usec(MIGRATE_POLL_USEC);
    }
}

int qemu_snapshot_save(const char *dir, int state_fd, bool ram_in_file, uint64_t deadline,
                       vmctl_error **reterr)
{
    if (!dir || state_fd < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu snapshot save: invalid arguments");
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    const char *what = "save the snapshot";
    if ((r = step(q, "stop", NULL, what, deadline, reterr)) < 0 ||
        (r = set_capabilities(q, ram_in_file, what, deadline, reterr)) < 0)
        return r;
    /* no throttling: the stream goes to a local file */
    json_t *params = json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40);
    if (!params)
        return oom(reterr);
    if ((r = step(q, "migrate-set-parameters", params, what, deadline, reterr)) < 0)
        return r;
    {
        cleanup_error vmctl_error *e = NULL;
        if ((r = qmp_getfd(q, state_fd, "vmctl-snapshot", deadline, &e)) < 0)
            return failed(reterr, -r, what, qemu_words(e));
    }
    json_t *args = json_pack("{s:s}", "uri", "fd:vmctl-snapshot");
    if (!args)
        return oom(reterr);
    if ((r = step(q, "migrate", args, what, deadline, reterr)) < 0)
        return r;
    return wait_migration(q, dir, what, deadline, reterr);
}

int qemu_snapshot_load(const char *dir, int state_fd, bool ram_in_file, uint64_t deadline,
                       vmctl_error **reterr)
{
    if (!dir || state_fd < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu snapshot load: invalid arguments");
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    const char *what = "load the snapshot";
    if ((r = set_capabilities(q, ram_in_file, what, deadline, reterr)) < 0)
        return r;
    {
        cleanup_error vmctl_error *e = NULL;
        if ((r = qmp_getfd(q, state_fd, "vmctl-snapshot", deadline, &e)) < 0)
            return failed(reterr, -r, what, qemu_words(e));
    }
    json_t *args = json_pack("{s:s}", "uri", "fd:vmctl-snapshot");
    if (!args)
        return oom(reterr);
    if ((r = step(q, "migrate-incoming", args, what, deadline, reterr)) < 0 ||
        (r = wait_migration(q, dir, what, deadline, reterr)) < 0)
        return r;
    /* a failed load makes QEMU exit (the stream was bad): the cont then fails and says so */
    return step(q, "cont", NULL, what, deadline, reterr);
}

/* The node on top of the VM's disk device: "disk0" in a fresh process, the last overlay's name
 * after a disk snapshot in this one (query-block: the device that is not the seed). */
static int disk_top_node(qmp *q, uint64_t deadline, char **ret, vmctl_error **reterr)
{
    json_t *list = NULL;
    cleanup_error vmctl_error *e = NULL;
    int r = qmp_execute(q, "query-block", NULL, &list, deadline, &e);
    if (r < 0)
        return failed(reterr, -r, "find the disk", qemu_words(e));
    size_t i;
    json_t *dev;
    char *name = NULL;
    json_array_foreach(list, i, dev)
    {
        const char *n =
            json_string_value(json_object_get(json_object_get(dev, "inserted"), "node-name"));
        if (n && !streq(n, "seed") && !name)
            name = strdup(n);
    }
    json_decref(list);
    if (!name)
        return failed(reterr, ENODEV, "find the disk", "QEMU has no disk node");
    *ret = name;
    return 0;
}

int qemu_disk_snapshot(const char *dir, const char *overlay, const char *node_name,
                       uint64_t deadline, vmctl_error **reterr)
{
    if (!dir || !overlay || !node_name)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu disk snapshot: invalid arguments");
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    const char *what = "switch the disk to a new overlay";
    cleanup_free char *top = NULL;
    if ((r = step(q, "stop", NULL, what, deadline, reterr)) < 0 ||
        (r = disk_top_node(q, deadline, &top, reterr)) < 0)
        return r;
    /* the overlay (made by the caller, its header naming the layer) opened without its
     * backing: blockdev-snapshot puts the current top under it */
    json_t *add = json_pack("{s:s, s:s, s:{s:s, s:s}, s:n}", "driver", "qcow2", "node-name",
                            node_name, "file", "driver", "file", "filename", overlay, "backing");
    if (!add)
        return oom(reterr);
    if ((r = step(q, "blockdev-add", add, what, deadline, reterr)) < 0)
        return r;
    json_t *snap = json_pack("{s:s, s:s}", "node", top, "overlay", node_name);
    if (!snap)
        return oom(reterr);
    return step(q, "blockdev-snapshot", snap, what, deadline, reterr);
}

int qemu_disk_top(const char *dir, uint64_t deadline, char **ret, vmctl_error **reterr)
{
    if (!dir || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu disk top: invalid arguments");
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    if ((r = step(q, "stop", NULL, "switch the disk to a new overlay", deadline, reterr)) < 0)
        return r;
    return disk_top_node(q, deadline, ret, reterr);
}

/* The undo job's entry in query-block-jobs: 1 and *ready, 0 when it is gone. */
static int undo_job(qmp *q, bool *ready, uint64_t deadline, vmctl_error **reterr)
{
    json_t *list = NULL;
    cleanup_error vmctl_error *e = NULL;
    int r = qmp_execute(q, "query-block-jobs", NULL, &list, deadline, &e);
    if (r < 0)
        return failed(reterr, -r, "undo the disk switch", qemu_words(e));
    size_t i;
    json_t *job;
    int found = 0;
    json_array_foreach(list, i, job)
    {
        const char *id = json_string_value(json_object_get(job, "device"));
        if (id && streq(id, "vmctl-undo")) {
            found = 1;
            *ready = json_is_true(json_object_get(job, "ready"));
        }
    }
    json_decref(list);
    return found;
}

/* Until the undo job is ready (want_ready) or gone. */
static int undo_wait(qmp *q, bool want_ready, uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    for (;;) {
        bool ready = false;
        int r = undo_job(q, &ready, deadline, reterr);
        if (r < 0)
            return r;
        if (r == 0)
            return want_ready ? failed(reterr, EIO, "undo the disk switch",
                                       "the commit job ended before it was ready")
                              : 0;
        if (want_ready && ready)
            return 0;
        if (now_usec() >= deadline)
            return err_timeout(reterr, "snapshot", (double)(deadline - start) / 1e6,
                               "QEMU did not finish undoing the disk switch before the deadline");
        sleep_usec(MIGRATE_POLL_USEC * 10);
    }
}

int qemu_disk_unsnapshot(const char *dir, const char *node_name, const char *old_node,
                         uint64_t deadline, vmctl_error **reterr)
{
    if (!dir || !node_name || !old_node)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL,
                        "qemu disk unsnapshot: invalid arguments");
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    const char *what = "undo the disk switch";
    cleanup_free char *top = NULL;
    if ((r = step(q, "stop", NULL, what, deadline, reterr)) < 0 ||
        (r = disk_top_node(q, deadline, &top, reterr)) < 0)
        return r;
    if (streq(top, old_node))
        return 0; /* never switched, or undone already */
    if (!streq(top, node_name))
        return failed(reterr, EIO, what, "the disk's top node is neither the old nor the new one");
    /* an active commit of the new top (empty: the guest was stopped since the switch) into the
     * old one, then the pivot: the device writes through the old node again */
    json_t *commit = json_pack("{s:s, s:s, s:s}", "job-id", "vmctl-undo", "device", node_name,
                               "base-node", old_node);
    if (!commit)
        return oom(reterr);
    if ((r = step(q, "block-commit", commit, what, deadline, reterr)) < 0 ||
        (r = undo_wait(q, true, deadline, reterr)) < 0)
        return r;
    json_t *done = json_pack("{s:s}", "device", "vmctl-undo");
    if (!done)
        return oom(reterr);
    if ((r = step(q, "block-job-complete", done, what, deadline, reterr)) < 0 ||
        (r = undo_wait(q, false, deadline, reterr)) < 0)
        return r;
    free(top);
    top = NULL;
    if ((r = disk_top_node(q, deadline, &top, reterr)) < 0)
        return r;
    if (!streq(top, old_node))
        return failed(reterr, EIO, what, "the commit did not pivot to the old overlay");
    /* the new overlay's node, out of the graph now: closed */
    json_t *del = json_pack("{s:s}", "node-name", node_name);
    if (del)
        (void)step(q, "blockdev-del", del, what, deadline, NULL);
    return 0;
}

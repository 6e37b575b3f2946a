/* SPDX-License-Identifier: MIT */
/* virtio-fs and 9p shares for QEMU (qemu-fs.h).
 *
 * virtio-fs: virtiofsd (C version of Debian 12: no read-only option) runs per mount with
 * --socket-path=DIR/fs-N.sock, -o source=SRC, its namespace sandbox (pivot_root into SRC: a
 * symlink in SRC cannot reach the host outside it); a read-only mount is a read-only bind mount
 * of SRC in the helper's own mount namespace (supervise_helper.ro_dir), so the host enforces it,
 * not the guest. QEMU connects with vhost-user-fs-device (microvm) / -pci (q35) and shares the
 * guest's RAM with it: memory-backend-memfd,share=on.
 * 9p: -fsdev local,security_model=none[,readonly=on] + virtio-9p-device/-pci. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "qemu-fs.h"
#include "util/util.h"
#include "vm-dir.h"

void qemu_fs_clear(qemu_fs *fs)
{
    if (!fs)
        return;
    for (size_t i = 0; i < fs->n_helpers; i++) {
        strv_free(fs->helpers[i].argv);
        free((char *)fs->helpers[i].socket);
    }
    strv_free(fs->args);
    *fs = (qemu_fs){};
}

/* QEMU's option syntax: a comma inside a value is written twice. */
static char *esc(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == ',' ? 2 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s; *p; p++) {
        *o++ = *p;
        if (*p == ',')
            *o++ = ',';
    }
    *o = 0;
    return out;
}

int qemu_fs_prepare(const vm_spec *spec, const char *dir, bool microvm, qemu_fs *ret,
                    vmctl_error **reterr)
{
    *ret = (qemu_fs){};
    if (!spec->n_mounts)
        return 0;
    bool virtiofs = spec->mount_type && streq(spec->mount_type, "virtiofs");
    size_t n = 0;
    qemu_fs fs = {};
    int r = -ENOMEM;
#define PUSHF(...)                                                                                 \
    do {                                                                                           \
        if (strv_pushf(&fs.args, &n, __VA_ARGS__) < 0)                                             \
            goto oom;                                                                              \
    } while (0)
    if (virtiofs) {
        /* vhost-user needs the guest's RAM shared with virtiofsd */
        PUSHF("-object");
        PUSHF("memory-backend-memfd,id=mem,size=%uM,share=on",
              spec->memory_mib ? spec->memory_mib : 256);
        PUSHF("-machine");
        PUSHF("memory-backend=mem");
        /* libvhost-user (virtiofsd) refuses legacy virtio: microvm's virtio-mmio must be v2 */
        if (microvm) {
            PUSHF("-global");
            PUSHF("virtio-mmio.force-legacy=false");
        }
    }
    for (size_t i = 0; i < spec->n_mounts; i++) {
        const vm_spec_mount *m = &spec->mounts[i];
        cleanup_free char *src = esc(m->source);
        if (!src)
            goto oom;
        if (virtiofs) {
            char name[32];
            vm_fs_sock_file(i, name, sizeof(name));
            cleanup_free char *sock = str_printf("%s/%s", dir, name);
            cleanup_free char *esock = sock ? esc(sock) : NULL;
            if (!esock)
                goto oom;
            if (strlen(sock) >= 108) {
                r = err_make(reterr, VMCTL_E_CONFIG_INVALID, ENAMETOOLONG,
                             "socket path '%s' is longer than a unix socket path may be", sock);
                err_detail(reterr, "field", "home");
                err_help(reterr, "Use a shorter $VMCTL_HOME (or `--home DIR`) or a shorter VM "
                                 "name.");
                qemu_fs_clear(&fs);
                return r;
            }
            supervise_helper *h = &fs.helpers[fs.n_helpers];
            size_t an = 0;
            if (strv_push(&h->argv, &an, VIRTIOFSD_PATH) < 0 ||
                strv_pushf(&h->argv, &an, "--socket-path=%s", sock) < 0 ||
                strv_push(&h->argv, &an, "-o") < 0 ||
                strv_pushf(&h->argv, &an, "source=%s", m->source) < 0 ||
                strv_push(&h->argv, &an, "-o") < 0 || strv_push(&h->argv, &an, "cache=auto") < 0 ||
                strv_push(&h->argv, &an, "-o") < 0 ||
                strv_push(&h->argv, &an, "sandbox=namespace") < 0 ||
                strv_push(&h->argv, &an, "-o") < 0 ||
                strv_push(&h->argv, &an, "log_level=warn") < 0 || !(h->socket = strdup(name))) {
                fs.n_helpers++;
                goto oom;
            }
            h->binary = VIRTIOFSD_PATH;
            h->ro_dir = m->read_only ? m->source : NULL; /* spec outlives the launch */
            h->no_privileged_files = true; /* it runs as root and writes what the guest says */
            fs.n_helpers++;
            PUSHF("-chardev");
            PUSHF("socket,id=fs%zu,path=%s", i, esock);
            PUSHF("-device");
            PUSHF("%s,chardev=fs%zu,tag=m%zu",
                  microvm ? "vhost-user-fs-device" : "vhost-user-fs-pci", i, i);
        } else {
            PUSHF("-fsdev");
            PUSHF("local,id=fs%zu,path=%s,security_model=none%s", i, src,
                  m->read_only ? ",readonly=on" : "");
            PUSHF("-device");
            PUSHF("%s,fsdev=fs%zu,mount_tag=m%zu", microvm ? "virtio-9p-device" : "virtio-9p-pci",
                  i, i);
        }
    }
#undef PUSHF
    *ret = fs;
    return 0;
oom:
    qemu_fs_clear(&fs);
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

void qemu_fs_cleanup(const char *dir)
{
    for (size_t i = 0; i < VM_MAX_MOUNTS; i++) {
        char name[32];
        vm_fs_sock_file(i, name, sizeof(name));
        cleanup_free char *p = str_printf("%s/%s", dir, name);
        if (p)
            (void)unlink(p);
    }
}

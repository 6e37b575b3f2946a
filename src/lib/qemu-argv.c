/* SPDX-License-Identifier: MIT */
/* The QEMU backend's command line: every -blockdev, -netdev, -chardev and -device of a VM from its
 * spec (qemu_build_argv; qemu.c launches it). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "backend.h"
#include "error.h"
#include "image-format.h"
#include "qemu-fs.h"
#include "podnet.h"
#include "qemu.h"
#include "qmp.h"
#include "supervise.h"
#include "util/util.h"
#include "agent-client.h" /* agent_vhost_vsock_present */
#include "jail.h"

/* How long QEMU may take to initialise (machine, kernel load) and answer on QMP. */
#define QEMU_STARTUP_USEC (30ULL * 1000000ULL)
/* How long to wait for a process we killed after a failed launch, and for the launcher. */
#define QEMU_REAP_USEC (5ULL * 1000000ULL)
/* How much of qemu.log goes into an error note. */
#define QEMU_LOG_NOTE_BYTES 2048
#define QEMU_LOG_NOTE_LINES 12

/* ---------- the binary ---------- */

/* QEMU's option syntax: a comma inside a value is written twice. */
static char *opt_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == ',' ? 2 : 1;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = s; *p; p++) {
        *o++ = *p;
        if (*p == ',')
            *o++ = ',';
    }
    *o = 0;
    return out;
}

static int oom(vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

/* dir/name, escaped for a QEMU option value; checks the unix socket length when is_socket. */
static int dir_file(const char *dir, const char *name, bool is_socket, char **ret,
                    vmctl_error **reterr)
{
    cleanup_free char *p = str_printf("%s/%s", dir, name);
    if (!p)
        return oom(reterr);
    if (is_socket && strlen(p) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, ENAMETOOLONG,
                         "socket path '%s' is longer than a unix socket path may be (%zu bytes)", p,
                         sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        err_detail(reterr, "field", "home");
        err_detail(reterr, "path", "%s", p);
        err_help(reterr, "Use a shorter $VMCTL_HOME (or `--home DIR`) or a shorter VM name.");
        return r;
    }
    *ret = opt_escape(p);
    return *ret ? 0 : oom(reterr);
}

static void socks_free(char *(*socks)[AGENT_SERIAL_PORTS])
{
    for (size_t i = 0; i < AGENT_SERIAL_PORTS; i++)
        free((*socks)[i]);
}

/* A protocol node for a file: {"driver":"file","filename":path} (read-only when asked). */
static json_t *file_node(const char *path, bool read_only, bool discard)
{
    json_t *f = json_pack("{s:s, s:s}", "driver", "file", "filename", path);
    if (f && read_only)
        json_object_set_new(f, "read-only", json_true());
    if (f && discard)
        json_object_set_new(f, "discard", json_string("unmap"));
    return f;
}

/* Formats whose images can name a backing file: their nodes get "backing": null or ours. */
static bool format_has_backing(const char *format)
{
    return streq(format, "qcow2") || streq(format, "vmdk") || streq(format, "qed") ||
           streq(format, "qcow");
}

/* The -blockdev JSON of the VM's disk: every node's driver named (QEMU never probes), and every
 * backing file given (the base, as a node of its own format, read-only, itself without one) or
 * none ("backing": null), so what an image's header names is never opened. */
static char *disk_blockdev(const vm_spec *spec, const char *base_format, const char *base_path,
                           bool layer_fdsets)
{
    bool raw = spec->disk_format && streq(spec->disk_format, "raw");
    json_t *d = json_pack("{s:s, s:s, s:s, s:o}", "driver", raw ? "raw" : "qcow2", "node-name",
                          "disk0", "discard", "unmap", "file", file_node(spec->disk, false, true));
    if (!d)
        return NULL;
    if (!raw) {
        json_t *backing = json_null();
        if (spec->base && base_format) {
            const char *bf = image_format_qemu_name(base_format);
            backing =
                json_pack("{s:s, s:s, s:b, s:o}", "driver", bf, "node-name", "base0", "read-only",
                          1, "file", file_node(base_path ? base_path : spec->base, true, false));
            if (backing && format_has_backing(bf))
                json_object_set_new(backing, "backing", json_null());
        }
        /* snapshots' layers between the overlay and the base: layer0 the top one, on layer1,
         * ..., built from the bottom up; jailed, layer i is /dev/fdset/(2 + i) */
        size_t n = spec->disk_layer ? 1 + strv_length(spec->disk_chain) : 0;
        for (size_t i = n; i-- > 0;) {
            const char *layer = i ? spec->disk_chain[i - 1] : spec->disk_layer;
            char node[32], fdset[40];
            snprintf(node, sizeof(node), "layer%zu", i);
            snprintf(fdset, sizeof(fdset), "/dev/fdset/%zu", 2 + i);
            backing = json_pack(
                "{s:s, s:s, s:b, s:o, s:o}", "driver", "qcow2", "node-name", node, "read-only", 1,
                "file", file_node(layer_fdsets ? fdset : layer, true, false), "backing", backing);
        }
        json_object_set_new(d, "backing", backing);
    }
    if (spec->disk_iops) {
        /* the device's node (disk0) a throttle filter in group tg0 over the format node */
        json_object_set_new(d, "node-name", json_string("disk0-fmt"));
        d = json_pack("{s:s, s:s, s:s, s:o}", "driver", "throttle", "node-name", "disk0",
                      "throttle-group", "tg0", "file", d);
        if (!d)
            return NULL;
    }
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    return text;
}

static char *seed_blockdev(const char *seed)
{
    json_t *d = json_pack("{s:s, s:s, s:b, s:o}", "driver", "raw", "node-name", "seed", "read-only",
                          1, "file", file_node(seed, true, false));
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    return text;
}

int qemu_build_argv(const vm_spec *spec, const char *binary, const char *dir, char ***ret,
                    vmctl_error **reterr)
{
    return qemu_build_argv_fd(spec, binary, dir, spec ? spec->base_format : NULL, -1, NULL, -1, ret,
                              reterr);
}

/* base_fd >= 0: the base image as a descriptor QEMU inherits (a jailed QEMU's uid may not be
 * able to open the image cache's 0600 files): fdset 1, the base node's file /dev/fdset/1.
 * vhost_fd >= 0: /dev/vhost-vsock opened by vmctl (the device is root's 0600: a jailed QEMU
 * cannot open it), the vsock device's vhostfd=. */
int qemu_build_argv_fd(const vm_spec *spec, const char *binary, const char *dir,
                       const char *base_format, int base_fd, const int *layer_fds, int vhost_fd,
                       char ***ret, vmctl_error **reterr)
{
    if (!spec || !binary || !dir || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu_build_argv: invalid arguments");
    if (dir[0] != '/')
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL,
                        "VM directory '%s' is not an absolute path", dir);

    const char *machine = spec->machine ? spec->machine : (spec->kernel ? "microvm" : "q35");
    bool microvm = streq(machine, "microvm");
    if (!microvm && !streq(machine, "q35"))
        return err_invalid_field(reterr, "machine", NULL, NULL,
                                 "unknown machine '%s': use microvm or q35", machine);
    const char *accel = spec->accel ? spec->accel : "tcg";
    if (!streq(accel, "tcg") && !streq(accel, "kvm"))
        return err_invalid_field(
            reterr, "accel", NULL, NULL,
            "unknown accelerator '%s' for QEMU: resolve it to kvm or tcg first", accel);
    if (microvm && !spec->kernel)
        return err_invalid_field(reterr, "kernel", NULL, NULL,
                                 "machine microvm boots a kernel directly, and no kernel is given");
    if (!spec->kernel && !spec->disk)
        return err_invalid_field(reterr, "image", NULL, NULL,
                                 "nothing to boot: no kernel and no disk");
    if (spec->initrd && !spec->kernel)
        return err_invalid_field(reterr, "initrd", NULL, NULL, "an initrd ('%s') needs a kernel",
                                 spec->initrd);
    const char *net = spec->net ? spec->net : "none";
    if (podnet_path(net)) /* a TAP in another namespace, passed the same way (podnet.c) */
        net = "tap";
    if (streq(net, "tap") && (!spec->mac || spec->tap_fd < 3))
        return err_invalid_field(reterr, "net", NULL, NULL,
                                 "tap networking needs the TAP's descriptor and a MAC");
    if (!streq(net, "user") && !streq(net, "none") && !streq(net, "tap"))
        return err_invalid_field(reterr, "net", NULL, NULL,
                                 "unknown network mode '%s': use user, tap or none", net);
    if (spec->n_ports && streq(net, "none"))
        return err_invalid_field(reterr, "port", NULL, NULL,
                                 "port forwards need user or tap networking, not '%s'", net);

    if (spec->guest_cid && (spec->guest_cid < 3 || spec->guest_cid == UINT32_MAX))
        return err_invalid_field(reterr, "cid", NULL, NULL,
                                 "guest CID %u is reserved: use 3 to 4294967294", spec->guest_cid);

    cleanup_free char *qmp_sock = NULL, *con_sock = NULL, *con_log = NULL;
    __attribute__((cleanup(socks_free))) char *agent_sock[AGENT_SERIAL_PORTS] = {NULL};
    int r;
    if ((r = dir_file(dir, QEMU_FILE_QMP_SOCK, true, &qmp_sock, reterr)) < 0 ||
        (r = dir_file(dir, VM_FILE_CONSOLE_SOCK, true, &con_sock, reterr)) < 0 ||
        (r = dir_file(dir, VM_FILE_CONSOLE_LOG, false, &con_log, reterr)) < 0)
        return r;
    for (unsigned i = 0; i < AGENT_SERIAL_PORTS; i++) {
        char name[32];
        vm_agent_port_file(i, "sock", name, sizeof(name));
        if ((r = dir_file(dir, name, true, &agent_sock[i], reterr)) < 0)
            return r;
    }

    cleanup_strv char **argv = NULL;
    size_t n = 0;
#define PUSH(s)                                                                                    \
    do {                                                                                           \
        if (strv_push(&argv, &n, (s)) < 0)                                                         \
            return oom(reterr);                                                                    \
    } while (0)
#define PUSHF(...)                                                                                 \
    do {                                                                                           \
        if (strv_pushf(&argv, &n, __VA_ARGS__) < 0)                                                \
            return oom(reterr);                                                                    \
    } while (0)

    PUSH(binary);
    if (spec->name) {
        cleanup_free char *name = opt_escape(spec->name);
        if (!name)
            return oom(reterr);
        PUSH("-name");
        PUSH(name);
    }
    /* snapshots (docs/snapshots.md): RAM in a file, shared (a snapshottable VM) or mapped
     * privately (a restore from a template) */
    const char *ram = spec->restore_ram ? spec->restore_ram : spec->ram_file;
    PUSH("-M");
    PUSHF("%s%s", machine, ram ? ",memory-backend=vmctl.ram" : "");
    if (ram) {
        cleanup_free char *path = opt_escape(ram);
        if (!path)
            return oom(reterr);
        PUSH("-object");
        PUSHF("memory-backend-file,id=vmctl.ram,size=%uM,mem-path=%s,share=%s",
              spec->memory_mib ? spec->memory_mib : 256, path, spec->restore_ram ? "off" : "on");
    }
    if (spec->incoming) {
        PUSH("-incoming");
        PUSH("defer");
    }
    PUSH("-accel");
    PUSH(accel);
    PUSH("-cpu");
    /* TCG's default qemu64 lacks ARAT (the local APIC timer keeps running in idle), so the guest
     * kernel cannot stop its tick without a broadcast timer microvm does not have: an idle guest
     * then takes 250 timer interrupts a second, 4.2 % of a host core per idle VM against 1.0 %
     * with ARAT (docs/benchmarks.md). */
    PUSH(streq(accel, "kvm") ? "host" : "qemu64,+arat");
    PUSH("-smp");
    PUSHF("%u", spec->vcpus ? spec->vcpus : 1);
    PUSH("-m");
    PUSHF("%u", spec->memory_mib ? spec->memory_mib : 256);
    PUSH("-nodefaults");
    PUSH("-no-user-config");
    if (spec->jail_uid) {
        /* QEMU's seccomp filter: the jail dropped the uid before exec, so privileges can be
         * denied too (docs/isolation.md) */
        PUSH("-sandbox");
        PUSH("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
    }
    PUSH("-display");
    PUSH("none");
    /* A direct-boot guest that reboots (or panics with panic=-1) ends its VM. */
    if (microvm)
        PUSH("-no-reboot");

    if (spec->kernel) {
        PUSH("-kernel");
        PUSH(spec->kernel);
        if (spec->initrd) {
            PUSH("-initrd");
            PUSH(spec->initrd);
        }
        if (spec->cmdline) {
            PUSH("-append");
            PUSH(spec->cmdline);
        }
    }
    if (spec->disk) {
        if (spec->base && !base_format && !(spec->disk_format && streq(spec->disk_format, "raw")))
            return err_invalid_field(reterr, "image", NULL, NULL,
                                     "the format of base image '%s' is not known", spec->base);
        if (base_fd >= 0 && spec->base) {
            PUSH("-add-fd");
            PUSHF("fd=%d,set=1,opaque=base", base_fd);
        }
        size_t n_layers = spec->disk_layer ? 1 + strv_length(spec->disk_chain) : 0;
        for (size_t i = 0; layer_fds && i < n_layers; i++) {
            PUSH("-add-fd");
            PUSHF("fd=%d,set=%zu,opaque=layer%zu", layer_fds[i], 2 + i, i);
        }
        cleanup_free char *disk = disk_blockdev(
            spec, base_format, base_fd >= 0 ? "/dev/fdset/1" : NULL, layer_fds && n_layers);
        if (!disk)
            return oom(reterr);
        if (spec->disk_iops) { /* --disk-iops: the throttle node disk_blockdev() put on top */
            PUSH("-object");
            PUSHF("throttle-group,id=tg0,x-iops-total=%u", spec->disk_iops);
        }
        PUSH("-blockdev");
        PUSH(disk);
        PUSH("-device");
        PUSHF("%s,drive=disk0%s", microvm ? "virtio-blk-device" : "virtio-blk-pci",
              spec->kernel ? "" : ",bootindex=0");
    }
    if (spec->seed) { /* cloud-init NoCloud seed (volume "cidata"), read-only */
        cleanup_free char *seed = seed_blockdev(spec->seed);
        if (!seed)
            return oom(reterr);
        PUSH("-blockdev");
        PUSH(seed);
        PUSH("-device");
        PUSHF("%s,drive=seed", microvm ? "virtio-blk-device" : "virtio-blk-pci");
    }

    /* QMP */
    PUSH("-chardev");
    PUSHF("socket,id=qmp,path=%s,server=on,wait=off", qmp_sock);
    PUSH("-mon");
    PUSH("chardev=qmp,mode=control");

    /* serial console: attachable socket, everything also appended to console.log */
    PUSH("-chardev");
    PUSHF("socket,id=console,path=%s,server=on,wait=off,logfile=%s,logappend=on", con_sock,
          con_log);
    PUSH("-serial");
    PUSH("chardev:console");

    if (spec->agent) {
        /* one port per concurrent host client (each is a session of its own in the agent);
         * port 0 keeps the name and socket of the single port older VMs had */
        PUSH("-device");
        PUSH(microvm ? "virtio-serial-device" : "virtio-serial-pci");
        for (unsigned i = 0; i < AGENT_SERIAL_PORTS; i++) {
            char id[16], name[32];
            snprintf(id, sizeof(id), i ? "agent%u" : "agent", i);
            if (i)
                snprintf(name, sizeof(name), "org.vmctl.agent.%u", i);
            else
                snprintf(name, sizeof(name), "org.vmctl.agent");
            PUSH("-chardev");
            PUSHF("socket,id=%s,path=%s,server=on,wait=off", id, agent_sock[i]);
            PUSH("-device");
            PUSHF("virtserialport,chardev=%s,name=%s", id, name);
        }
    }
    if (spec->guest_cid) {
        /* AF_VSOCK to the guest (the agent listens on port 1024 there) */
        PUSH("-device");
        if (vhost_fd >= 0)
            PUSHF("%s,guest-cid=%u,vhostfd=%d", microvm ? "vhost-vsock-device" : "vhost-vsock-pci",
                  spec->guest_cid, vhost_fd);
        else
            PUSHF("%s,guest-cid=%u", microvm ? "vhost-vsock-device" : "vhost-vsock-pci",
                  spec->guest_cid);
    }

    if (streq(net, "user")) {
        cleanup_free char *netdev = strdup("user,id=n0");
        if (!netdev)
            return oom(reterr);
        for (size_t i = 0; i < spec->n_ports; i++) {
            const vmctl_port_forward *p = &spec->ports[i];
            if (p->host_port == 0 || p->guest_port == 0) {
                r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                             "port forward %u:%u: ports must be resolved (non-zero) before "
                             "launch",
                             p->host_port, p->guest_port);
                err_detail(reterr, "field", "port");
                return r;
            }
            /* forwards listen on the loopback interface only */
            char *nd = str_printf("%s,hostfwd=%s:127.0.0.1:%u-:%u", netdev, p->udp ? "udp" : "tcp",
                                  p->host_port, p->guest_port);
            if (!nd)
                return oom(reterr);
            free(netdev);
            netdev = nd;
        }
        PUSH("-netdev");
        PUSH(netdev);
        PUSH("-device");
        PUSHF("%s,netdev=n0%s%s", microvm ? "virtio-net-device" : "virtio-net-pci",
              spec->nic_mac ? ",mac=" : "", spec->nic_mac ? spec->nic_mac : "");
    } else if (streq(net, "tap")) {
        /* the TAP vmctl made (vm-net.c), inherited as this descriptor; forwards are DNAT rules */
        PUSH("-netdev");
        PUSHF("tap,id=n0,fd=%d", spec->tap_fd);
        PUSH("-device");
        PUSHF("%s,netdev=n0,mac=%s", microvm ? "virtio-net-device" : "virtio-net-pci", spec->mac);
    }

    if (spec->n_mounts) { /* host directories: qemu-fs.c */
        qemu_fs fs = {};
        if ((r = qemu_fs_prepare(spec, dir, microvm, &fs, reterr)) < 0)
            return r;
        for (char **a = fs.args; a && *a; a++)
            if (strv_push(&argv, &n, *a) < 0) {
                qemu_fs_clear(&fs);
                return oom(reterr);
            }
        qemu_fs_clear(&fs);
    }

    cleanup_free char *pidfile = str_printf("%s/" VM_FILE_PID, dir);
    if (!pidfile)
        return oom(reterr);
    PUSH("-pidfile");
    PUSH(pidfile);
#undef PUSH
#undef PUSHF

    *ret = TAKE_PTR(argv);
    return 0;
}

/* ---------- launch ---------- */

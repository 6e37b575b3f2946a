/* SPDX-License-Identifier: MIT */
/* The QEMU backend and the host: argv building, backend and accelerator choice and the doctor
 * checks (no guest needed), then real launches under TCG with a real kernel: the default guest's
 * ($VMCTL_TEST_IMAGES/default, which scripts/test.sh builds and passes), its initrd with a second
 * archive appended whose /init prints READY-MARK on the serial console and powers off; or
 * $VMCTL_TEST_KERNEL/$VMCTL_TEST_INITRD, an initrd that does the same. Without a kernel or QEMU
 * the launch tests are skipped, saying so (exit 77 once the quick tests have passed; under
 * CI=true that is a failure, see skip.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <vmctl/host.h>
#include <vmctl/vm.h>

#include "agent-proto.h"
#include "backend.h"
#include "error.h"
#include "qemu.h"
#include "qmp.h"
#include "skip.h"
#include "supervise.h"
#include "util/util.h"

static char tmpdir[] = "/tmp/test-qemu-XXXXXX";

/* ---------- helpers ---------- */

/* Index of the element equal to s (after from), or -1. */
static int argv_find(char **argv, const char *s)
{
    for (int i = 0; argv[i]; i++)
        if (streq(argv[i], s))
            return i;
    return -1;
}

/* Is "opt value" a consecutive pair in argv? */
static bool argv_has_pair(char **argv, const char *opt, const char *value)
{
    for (int i = 0; argv[i] && argv[i + 1]; i++)
        if (streq(argv[i], opt) && streq(argv[i + 1], value))
            return true;
    return false;
}

static bool argv_has_pair_prefix(char **argv, const char *opt, const char *prefix)
{
    for (int i = 0; argv[i] && argv[i + 1]; i++)
        if (streq(argv[i], opt) && str_startswith(argv[i + 1], prefix))
            return true;
    return false;
}

static void dump_argv(char **argv)
{
    for (int i = 0; argv[i]; i++)
        print_message("%s ", argv[i]);
    print_message("\n");
}

static vm_spec *spec_microvm(void)
{
    vm_spec *s = calloc(1, sizeof(*s));
    s->name = strdup("t1");
    s->backend = strdup("qemu");
    s->machine = strdup("microvm");
    s->accel = strdup("tcg");
    s->vcpus = 2;
    s->memory_mib = 384;
    s->image = strdup("default");
    s->kernel = strdup("/boot/vmlinux");
    s->initrd = strdup("/boot/initrd.gz");
    s->cmdline = strdup("console=ttyS0 quiet panic=-1");
    s->net = strdup("none");
    s->agent = true;
    return s;
}

static bool has_note_containing(const vmctl_error *e, const char *needle)
{
    for (size_t i = 0; i < vmctl_error_get_n_notes(e); i++)
        if (strstr(vmctl_error_get_note(e, i), needle))
            return true;
    return false;
}

/* ---------- argv ---------- */

/* Snapshots: a snapshottable VM's RAM is a shared file; a restore maps a snapshot's privately and
 * waits for the stream (-incoming defer); a clone's NIC has its own MAC. */
static void test_argv_snapshot(void **state)
{
    cleanup_vm_spec vm_spec *s = spec_microvm();
    s->ram_file = strdup("/dev/shm/vmctl-0/t1.ab.ram");
    cleanup_strv char **argv = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(qemu_build_argv(s, "/usr/bin/qemu-system-x86_64", "/v/t1", &argv, &err), 0);
    assert_true(argv_has_pair(argv, "-M", "microvm,memory-backend=vmctl.ram"));
    assert_true(argv_has_pair(argv, "-object",
                              "memory-backend-file,id=vmctl.ram,size=384M,mem-path=/dev/shm/"
                              "vmctl-0/t1.ab.ram,share=on"));
    assert_false(argv_has_pair_prefix(argv, "-incoming", ""));
    strv_free(TAKE_PTR(argv));

    s->restore_ram = strdup("/dev/shm/vmctl-0/t1.base.cd.ram");
    s->incoming = true;
    s->net = (free(s->net), strdup("user"));
    s->nic_mac = strdup("52:54:00:01:02:03");
    assert_int_equal(qemu_build_argv(s, "/usr/bin/qemu-system-x86_64", "/v/t1", &argv, &err), 0);
    assert_true(argv_has_pair(argv, "-object",
                              "memory-backend-file,id=vmctl.ram,size=384M,mem-path=/dev/shm/"
                              "vmctl-0/t1.base.cd.ram,share=off"));
    assert_true(argv_has_pair(argv, "-incoming", "defer"));
    assert_true(
        argv_has_pair(argv, "-device", "virtio-net-device,netdev=n0,mac=52:54:00:01:02:03"));
}

static void test_argv_microvm(void **state)
{
    cleanup_vm_spec vm_spec *s = spec_microvm();
    s->net = (free(s->net), strdup("user"));
    vmctl_port_forward ports[] = {{.host_port = 2222, .guest_port = 22},
                                  {.host_port = 5353, .guest_port = 53, .udp = true}};
    s->ports = malloc(sizeof(ports));
    memcpy(s->ports, ports, sizeof(ports));
    s->n_ports = 2;
    cleanup_strv char **argv = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(qemu_build_argv(s, "/usr/bin/qemu-system-x86_64", "/v/t1", &argv, &err), 0);
    dump_argv(argv);
    assert_string_equal(argv[0], "/usr/bin/qemu-system-x86_64");
    assert_true(argv_has_pair(argv, "-M", "microvm"));
    assert_true(argv_has_pair(argv, "-accel", "tcg"));
    /* -cpu host is for KVM only; under TCG qemu64 with ARAT, so an idle guest can stop its tick */
    assert_true(argv_has_pair(argv, "-cpu", "qemu64,+arat"));
    assert_true(argv_has_pair(argv, "-smp", "2"));
    assert_true(argv_has_pair(argv, "-m", "384"));
    assert_true(argv_find(argv, "-nodefaults") > 0);
    assert_true(argv_find(argv, "-no-user-config") > 0);
    assert_true(argv_has_pair(argv, "-display", "none"));
    assert_true(argv_find(argv, "-no-reboot") > 0);
    assert_true(argv_has_pair(argv, "-kernel", "/boot/vmlinux"));
    assert_true(argv_has_pair(argv, "-initrd", "/boot/initrd.gz"));
    /* the command line is passed whole, as one argument */
    assert_true(argv_has_pair(argv, "-append", "console=ttyS0 quiet panic=-1"));
    assert_int_equal(argv_find(argv, "-drive"), -1);
    assert_true(argv_has_pair(argv, "-chardev",
                              "socket,id=qmp,path=/v/t1/qmp.sock,server=on,"
                              "wait=off"));
    assert_true(argv_has_pair(argv, "-mon", "chardev=qmp,mode=control"));
    assert_true(argv_has_pair(argv, "-chardev",
                              "socket,id=console,path=/v/t1/console.sock,server=on,wait=off,"
                              "logfile=/v/t1/console.log,logappend=on"));
    assert_true(argv_has_pair(argv, "-serial", "chardev:console"));
    assert_true(argv_has_pair(argv, "-device", "virtio-serial-device"));
    assert_true(argv_has_pair(argv, "-chardev",
                              "socket,id=agent,path=/v/t1/agent.sock,server=on,wait=off"));
    assert_true(
        argv_has_pair(argv, "-device", "virtserialport,chardev=agent,name=org.vmctl.agent"));
    assert_true(argv_has_pair(argv, "-netdev",
                              "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,"
                              "hostfwd=udp:127.0.0.1:5353-:53"));
    assert_true(argv_has_pair(argv, "-device", "virtio-net-device,netdev=n0"));
    /* detached by vmctl itself: QEMU's -daemonize would lose or truncate qemu.log */
    assert_int_equal(argv_find(argv, "-daemonize"), -1);
    assert_int_equal(argv_find(argv, "-D"), -1);
    assert_true(argv_has_pair(argv, "-pidfile", "/v/t1/qemu.pid"));
    assert_true(argv_has_pair(argv, "-name", "t1"));
}

/* --net tap: the TAP as an inherited descriptor and the MAC vmctl chose; --disk-iops: a
 * throttle group and a throttle node on top of the disk's format node. */
static void test_argv_tap_throttle(void **state)
{
    cleanup_vm_spec vm_spec *s = spec_microvm();
    s->net = (free(s->net), strdup("tap"));
    s->tap_fd = 7;
    s->mac = strdup("52:54:0a:58:00:02");
    s->disk = strdup("/v/t1/disk.qcow2");
    s->disk_iops = 150;
    cleanup_strv char **argv = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
    dump_argv(argv);
    assert_true(argv_has_pair(argv, "-netdev", "tap,id=n0,fd=7"));
    assert_true(
        argv_has_pair(argv, "-device", "virtio-net-device,netdev=n0,mac=52:54:0a:58:00:02"));
    assert_true(argv_has_pair(argv, "-object", "throttle-group,id=tg0,x-iops-total=150"));
    assert_true(argv_has_pair(
        argv, "-blockdev",
        "{\"driver\":\"throttle\",\"node-name\":\"disk0\",\"throttle-group\":\"tg0\","
        "\"file\":{\"driver\":\"qcow2\",\"node-name\":\"disk0-fmt\",\"discard\":\"unmap\","
        "\"file\":{\"driver\":\"file\",\"filename\":\"/v/t1/disk.qcow2\",\"discard\":"
        "\"unmap\"},\"backing\":null}}"));
    assert_true(argv_has_pair(argv, "-device", "virtio-blk-device,drive=disk0"));
}

static void test_argv_q35_disk_kvm(void **state)
{
    cleanup_vm_spec vm_spec *s = spec_microvm();
    s->machine = (free(s->machine), strdup("q35"));
    s->accel = (free(s->accel), strdup("kvm"));
    free(s->kernel), free(s->initrd), free(s->cmdline);
    s->kernel = s->initrd = s->cmdline = NULL;
    s->disk = strdup("/v/t1/disk.qcow2");
    s->net = (free(s->net), strdup("user"));
    cleanup_strv char **argv = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
    dump_argv(argv);
    assert_true(argv_has_pair(argv, "-M", "q35"));
    assert_true(argv_has_pair(argv, "-accel", "kvm"));
    assert_true(argv_has_pair(argv, "-cpu", "host"));
    assert_int_equal(argv_find(argv, "-kernel"), -1);
    assert_int_equal(argv_find(argv, "-no-reboot"), -1);
    assert_true(argv_has_pair(
        argv, "-blockdev",
        "{\"driver\":\"qcow2\",\"node-name\":\"disk0\",\"discard\":\"unmap\",\"file\":{"
        "\"driver\":\"file\",\"filename\":\"/v/t1/disk.qcow2\",\"discard\":\"unmap\"},"
        "\"backing\":null}"));
    assert_true(argv_has_pair(argv, "-device", "virtio-blk-pci,drive=disk0,bootindex=0"));
    assert_true(argv_has_pair(argv, "-device", "virtio-serial-pci"));
    assert_true(argv_has_pair(argv, "-netdev", "user,id=n0"));
    assert_true(argv_has_pair(argv, "-device", "virtio-net-pci,netdev=n0"));
}

/* A block node (and its children) names its driver; a node of a format that can name a backing
 * file has "backing" (null, or a node given here): QEMU never probes a format and never opens a
 * file an image's header names. *n_files counts the file nodes. */
static void check_node(json_t *node, int *n_files)
{
    assert_true(json_is_object(node));
    const char *driver = json_string_value(json_object_get(node, "driver"));
    assert_non_null(driver);
    if (streq(driver, "file")) {
        assert_true(json_is_string(json_object_get(node, "filename")));
        ++*n_files;
        return;
    }
    assert_true(streq(driver, "qcow2") || streq(driver, "raw") || streq(driver, "vmdk") ||
                streq(driver, "vdi") || streq(driver, "vhdx") || streq(driver, "vpc"));
    check_node(json_object_get(node, "file"), n_files);
    if (streq(driver, "qcow2") || streq(driver, "vmdk")) {
        json_t *b = json_object_get(node, "backing");
        assert_non_null(b);
        if (!json_is_null(b))
            check_node(b, n_files);
    } else {
        assert_null(json_object_get(node, "backing"));
    }
}

/* Every disk in argv: -blockdev JSON checked by check_node; no -drive (its format could be left
 * to probing, and its backing file to the image header). Returns the number of files opened. */
static int check_disks_argv(char **argv)
{
    int files = 0;
    for (int i = 0; argv[i]; i++) {
        assert_false(streq(argv[i], "-drive") || streq(argv[i], "-hda") ||
                     streq(argv[i], "-cdrom") || streq(argv[i], "-snapshot"));
        if (!streq(argv[i], "-blockdev"))
            continue;
        assert_non_null(argv[i + 1]);
        json_t *j = json_loads(argv[i + 1], 0, NULL);
        assert_non_null(j);
        check_node(j, &files);
        json_decref(j);
    }
    return files;
}

/* The formats of every disk are named: overlay, base of each format, raw root filesystem, seed. */
static void test_argv_disk_formats(void **state)
{
    static const char *const bases[] = {"qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc", "iso"};
    for (size_t k = 0; k < ELEMENTSOF(bases); k++) {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->machine = (free(s->machine), strdup("q35"));
        free(s->kernel), free(s->initrd), free(s->cmdline);
        s->kernel = s->initrd = s->cmdline = NULL;
        s->disk = strdup("/v/t1/disk.qcow2");
        s->disk_format = strdup("qcow2");
        s->base = strdup("/images/x,y/disk"); /* a comma: JSON needs no QEMU escaping */
        s->base_format = strdup(bases[k]);
        s->seed = strdup("/v/t1/seed.iso");
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
        assert_int_equal(check_disks_argv(argv), 3); /* overlay, base, seed */
        int i = argv_find(argv, "-blockdev");
        assert_true(i > 0);
        json_t *j = json_loads(argv[i + 1], 0, NULL);
        json_t *b = json_object_get(j, "backing");
        assert_string_equal(json_string_value(json_object_get(b, "driver")),
                            streq(bases[k], "iso") ? "raw" : bases[k]);
        assert_true(json_is_true(json_object_get(b, "read-only")));
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(b, "file"), "filename")),
            "/images/x,y/disk");
        json_decref(j);
        assert_true(argv_has_pair(argv, "-device", "virtio-blk-pci,drive=seed"));
    }
    /* a raw root filesystem: raw, whatever its first bytes look like */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->disk = strdup("/v/t1/rootfs.raw");
        s->disk_format = strdup("raw");
        s->base = strdup("/images/r/disk");
        s->base_format = strdup("raw");
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
        assert_int_equal(check_disks_argv(argv), 1); /* the clone only, never the template */
        assert_true(argv_has_pair_prefix(argv, "-blockdev", "{\"driver\":\"raw\""));
    }
    /* an overlay whose base format is unknown is not launched on a guess */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->disk = strdup("/v/t1/disk.qcow2");
        s->base = strdup("/images/x/disk");
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_true(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err) < 0);
        assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
    }
}

/* A disk on a chain of snapshot layers: overlay -> layer0 (disk_layer) -> layer1, layer2
 * (disk_chain, top down) -> base, every node named and read-only below the overlay; given
 * descriptors (a jailed QEMU), layer i is /dev/fdset/(2 + i), each passed with -add-fd. */
static void test_argv_disk_chain(void **state)
{
    for (int jailed = 0; jailed < 2; jailed++) {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->machine = (free(s->machine), strdup("q35"));
        free(s->kernel), free(s->initrd), free(s->cmdline);
        s->kernel = s->initrd = s->cmdline = NULL;
        s->disk = strdup("/v/t1/disk.qcow2");
        s->base = strdup("/images/b/disk");
        s->base_format = strdup("qcow2");
        s->disk_layer = strdup("/s/c/s3/disk.qcow2");
        size_t n = 0;
        assert_int_equal(strv_push(&s->disk_chain, &n, "/s/b/s2/disk.qcow2"), 0);
        assert_int_equal(strv_push(&s->disk_chain, &n, "/s/a/s1/disk.qcow2"), 0);
        static const char *const paths[] = {"/s/c/s3/disk.qcow2", "/s/b/s2/disk.qcow2",
                                            "/s/a/s1/disk.qcow2"};
        int fds[3] = {20, 21, 22};
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv_fd(s, "qemu", "/v/t1", "qcow2", -1, jailed ? fds : NULL,
                                            -1, &argv, &err),
                         0);
        assert_int_equal(check_disks_argv(argv), 5); /* overlay, three layers, base */
        int i = argv_find(argv, "-blockdev");
        assert_true(i > 0);
        json_t *j = json_loads(argv[i + 1], 0, NULL);
        json_t *node = json_object_get(j, "backing");
        for (size_t k = 0; k < 3; k++) {
            char name[16], fdset[32], add[64];
            snprintf(name, sizeof(name), "layer%zu", k);
            snprintf(fdset, sizeof(fdset), "/dev/fdset/%zu", 2 + k);
            snprintf(add, sizeof(add), "fd=%d,set=%zu,opaque=layer%zu", fds[k], 2 + k, k);
            assert_string_equal(json_string_value(json_object_get(node, "node-name")), name);
            assert_string_equal(json_string_value(json_object_get(node, "driver")), "qcow2");
            assert_true(json_is_true(json_object_get(node, "read-only")));
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(node, "file"), "filename")),
                jailed ? fdset : paths[k]);
            assert_int_equal(argv_has_pair(argv, "-add-fd", add), jailed);
            node = json_object_get(node, "backing");
        }
        assert_string_equal(json_string_value(json_object_get(node, "node-name")), "base0");
        json_decref(j);
    }
}

/* Index of the pair "opt value" in argv, or -1. */
static int argv_pair_index(char **argv, const char *opt, const char *value)
{
    for (int i = 0; argv[i] && argv[i + 1]; i++)
        if (streq(argv[i], opt) && streq(argv[i + 1], value))
            return i;
    return -1;
}

/* AGENT_SERIAL_PORTS agent ports (port 0 keeps its old name and socket), and the vsock device when
 * the VM has a guest CID. */
static void test_argv_agent_ports_vsock(void **state)
{
    assert_int_equal(AGENT_SERIAL_PORTS, 4);
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
        int bus = argv_pair_index(argv, "-device", "virtio-serial-device");
        assert_true(bus > 0);
        static const char *const ids[] = {"agent", "agent1", "agent2", "agent3"};
        static const char *const socks[] = {"agent.sock", "agent.1.sock", "agent.2.sock",
                                            "agent.3.sock"};
        static const char *const names[] = {"org.vmctl.agent", "org.vmctl.agent.1",
                                            "org.vmctl.agent.2", "org.vmctl.agent.3"};
        int last = bus;
        for (int i = 0; i < 4; i++) {
            char chardev[128], port[128], file[32];
            vm_agent_port_file((unsigned)i, "sock", file, sizeof(file));
            assert_string_equal(file, socks[i]);
            snprintf(chardev, sizeof(chardev), "socket,id=%s,path=/v/t1/%s,server=on,wait=off",
                     ids[i], socks[i]);
            snprintf(port, sizeof(port), "virtserialport,chardev=%s,name=%s", ids[i], names[i]);
            int c = argv_pair_index(argv, "-chardev", chardev);
            int p = argv_pair_index(argv, "-device", port);
            if (c < 0 || p < 0) {
                dump_argv(argv);
                fail_msg("port %d: '%s' or '%s' missing", i, chardev, port);
            }
            /* after the bus, each chardev before its port, ports in order */
            assert_true(c > last && p > c);
            last = p;
        }
        assert_int_equal(argv_find(argv, "virtserialport,chardev=agent4,name=org.vmctl.agent.4"),
                         -1);
        /* no CID: no vsock device */
        for (int i = 0; argv[i]; i++)
            assert_null(strstr(argv[i], "vsock"));
    }
    /* a guest CID: vhost-vsock on the machine's bus */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->guest_cid = 42;
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
        assert_true(argv_has_pair(argv, "-device", "vhost-vsock-device,guest-cid=42"));
        assert_int_equal(argv_find(argv, "vhost-vsock-pci,guest-cid=42"), -1);
    }
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->machine = (free(s->machine), strdup("q35"));
        s->guest_cid = 4294967294u;
        s->agent = false; /* the device does not depend on the agent ports */
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
        assert_true(argv_has_pair(argv, "-device", "vhost-vsock-pci,guest-cid=4294967294"));
        assert_int_equal(argv_find(argv, "virtio-serial-pci"), -1);
    }
    /* jailed: /dev/vhost-vsock opened by vmctl and inherited (vhostfd=), on either bus; the
     * descriptor without a CID adds nothing */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->guest_cid = 42;
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv_fd(s, "qemu", "/v/t1", NULL, -1, NULL, 7, &argv, &err), 0);
        assert_true(argv_has_pair(argv, "-device", "vhost-vsock-device,guest-cid=42,vhostfd=7"));
        assert_int_equal(argv_find(argv, "vhost-vsock-device,guest-cid=42"), -1);
    }
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->machine = (free(s->machine), strdup("q35"));
        s->guest_cid = 3;
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv_fd(s, "qemu", "/v/t1", NULL, -1, NULL, 12, &argv, &err),
                         0);
        assert_true(argv_has_pair(argv, "-device", "vhost-vsock-pci,guest-cid=3,vhostfd=12"));
    }
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv_fd(s, "qemu", "/v/t1", NULL, -1, NULL, 7, &argv, &err), 0);
        for (int i = 0; argv[i]; i++)
            assert_null(strstr(argv[i], "vhost"));
    }
    /* reserved CIDs are refused */
    static const uint32_t bad[] = {1, 2, UINT32_MAX};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->guest_cid = bad[i];
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), -EINVAL);
        assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
        assert_string_equal(vmctl_error_find_detail(err, "field"), "cid");
        assert_null(argv);
    }
}

static void touch(const char *dir, const char *name)
{
    cleanup_free char *p = str_printf("%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
}

/* The agent endpoint of the QEMU backend: port 0 always, the other ports whose socket exists
 * (each with its lock beside it), vsock first only with a guest CID and vhost-vsock; and the
 * sockets it names are the ones the argv gives QEMU. */
static void test_agent_endpoint(void **state)
{
    (void)state;
    cleanup_free char *dir = str_printf("%s/endpoint", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    cleanup_free char *sock0 = str_printf("%s/agent.sock", dir);
    cleanup_free char *lock0 = str_printf("%s/agent.lock", dir);
    cleanup_free char *miss = str_printf("%s/agent.vsock-miss", dir);
    agent_endpoint ep;
    cleanup_error vmctl_error *err = NULL;
    /* a VM without a CID, or a host without vhost-vsock: the ports only */
    static const struct {
        uint32_t cid;
        bool vhost;
    } serial[] = {{0, true}, {0, false}, {42, false}, {2, true}, {UINT32_MAX, true}};
    for (size_t i = 0; i < ELEMENTSOF(serial); i++) {
        memset(&ep, 0xa5, sizeof(ep));
        assert_int_equal(qemu_agent_endpoint_at(dir, serial[i].cid, serial[i].vhost, &ep, &err), 0);
        assert_int_equal(ep.kind, AGENT_ENDPOINT_SERIAL);
        assert_int_equal(ep.cid, 0);
        assert_string_equal(ep.vsock_miss, "");
        assert_string_equal(ep.path, "");
        /* no socket yet (QEMU not started, or a VM older than the extra ports): port 0 only */
        assert_int_equal(ep.n_ports, 1);
        assert_string_equal(ep.ports[0].sock, sock0);
        assert_string_equal(ep.ports[0].lock, lock0);
    }
    /* a guest CID and vhost-vsock: vsock first, the ports after it */
    assert_int_equal(qemu_agent_endpoint_at(dir, 42, true, &ep, &err), 0);
    assert_int_equal(ep.kind, AGENT_ENDPOINT_VSOCK);
    assert_int_equal(ep.cid, 42);
    assert_int_equal(ep.port, AGENT_VSOCK_PORT);
    assert_string_equal(ep.vsock_miss, miss);
    assert_int_equal(ep.n_ports, 1);
    assert_string_equal(ep.ports[0].sock, sock0);
    /* the op itself, for readiness (cid 0): the ports, whatever this host has */
    assert_int_equal(qemu_backend.agent_endpoint(NULL, dir, 0, &ep, &err), 0);
    assert_int_equal(ep.kind, AGENT_ENDPOINT_SERIAL);

    /* the ports whose socket exists, in order, with their locks */
    touch(dir, "agent.1.sock");
    touch(dir, "agent.3.sock");
    touch(dir, "agent.4.sock"); /* beyond AGENT_SERIAL_PORTS: not a port */
    assert_int_equal(qemu_agent_endpoint_at(dir, 0, false, &ep, &err), 0);
    assert_int_equal(ep.n_ports, 3);
    static const char *const want[][2] = {{"agent.sock", "agent.lock"},
                                          {"agent.1.sock", "agent.1.lock"},
                                          {"agent.3.sock", "agent.3.lock"}};
    for (unsigned i = 0; i < 3; i++) {
        cleanup_free char *s = str_printf("%s/%s", dir, want[i][0]);
        cleanup_free char *l = str_printf("%s/%s", dir, want[i][1]);
        assert_string_equal(ep.ports[i].sock, s);
        assert_string_equal(ep.ports[i].lock, l);
    }

    /* every port QEMU gets is in the endpoint, and nothing else */
    touch(dir, "agent.2.sock");
    assert_int_equal(qemu_agent_endpoint_at(dir, 0, false, &ep, &err), 0);
    assert_int_equal(ep.n_ports, AGENT_SERIAL_PORTS);
    cleanup_vm_spec vm_spec *s = spec_microvm();
    cleanup_strv char **argv = NULL;
    assert_int_equal(qemu_build_argv(s, "qemu", dir, &argv, &err), 0);
    size_t chardevs = 0;
    for (int i = 0; argv[i]; i++)
        if (strstr(argv[i], "socket,id=agent") == argv[i])
            chardevs++;
    assert_int_equal(chardevs, AGENT_SERIAL_PORTS);
    for (unsigned i = 0; i < ep.n_ports; i++) {
        char id[16];
        snprintf(id, sizeof(id), i ? "agent%u" : "agent", i);
        cleanup_free char *chardev =
            str_printf("socket,id=%s,path=%s,server=on,wait=off", id, ep.ports[i].sock);
        if (argv_pair_index(argv, "-chardev", chardev) < 0) {
            dump_argv(argv);
            fail_msg("the endpoint's port %u ('%s') is not a chardev of the argv", i,
                     ep.ports[i].sock);
        }
    }
    static const char *const files[] = {"agent.1.sock", "agent.2.sock", "agent.3.sock",
                                        "agent.4.sock"};
    for (size_t i = 0; i < ELEMENTSOF(files); i++) {
        cleanup_free char *p = str_printf("%s/%s", dir, files[i]);
        unlink(p);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* The installed QEMU knows the vsock devices and their guest-cid property under the names the
 * argv uses (this host has no /dev/vhost-vsock, so a VM with a CID cannot be started here). */
static void test_qemu_knows_vsock_devices(void **state)
{
    cleanup_free char *qemu = find_in_path("qemu-system-x86_64");
    if (!qemu) {
        print_message("qemu-system-x86_64 not installed: not checked\n");
        return;
    }
    static const char *const devs[][2] = {{"microvm", "vhost-vsock-device,help"},
                                          {"q35", "vhost-vsock-pci,help"}};
    for (size_t i = 0; i < ELEMENTSOF(devs); i++) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "%s -M %s -device %s", qemu, devs[i][0], devs[i][1]);
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            dup2(p[1], 1);
            dup2(p[1], 2);
            execl(qemu, qemu, "-M", devs[i][0], "-device", devs[i][1], (char *)NULL);
            _exit(127);
        }
        close(p[1]);
        char out[8192];
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(out) - 1 && (n = read(p[0], out + len, sizeof(out) - 1 - len)) > 0)
            len += (size_t)n;
        out[len] = 0;
        close(p[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!strstr(out, "guest-cid="))
            fail_msg("'%s' lists no guest-cid property:\n%s", cmd, out);
    }
}

static void test_argv_options(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    /* commas in paths are doubled inside option values, not in plain arguments */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->agent = false;
        cleanup_strv char **argv = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/a,b", &argv, &err), 0);
        assert_true(argv_has_pair_prefix(argv, "-chardev", "socket,id=qmp,path=/v/a,,b/qmp.sock,"));
        assert_true(argv_has_pair(argv, "-pidfile", "/v/a,b/qemu.pid"));
        assert_int_equal(argv_find(argv, "-netdev"), -1); /* net none */
        assert_int_equal(argv_find(argv, "virtio-serial-device"), -1);
        assert_false(argv_has_pair_prefix(argv, "-chardev", "socket,id=agent"));
    }
    /* jailed (a uid): QEMU's seccomp filter with every group the issue asks denied, the uid
     * dropped before exec so elevateprivileges too; unjailed: no -sandbox */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->jail_uid = 2000000000u;
        cleanup_strv char **argv = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), 0);
        assert_true(argv_has_pair(
            argv, "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
        assert_int_equal(argv_find(argv, "-runas"), -1);
        s->jail_uid = 0;
        cleanup_strv char **plain = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &plain, &err), 0);
        assert_int_equal(argv_find(plain, "-sandbox"), -1);
    }
    /* a q35 guest with a kernel and a disk boots the kernel, not the disk */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->machine = (free(s->machine), strdup("q35"));
        s->disk = strdup("/d.qcow2");
        cleanup_strv char **argv = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), 0);
        assert_true(argv_has_pair(argv, "-device", "virtio-blk-pci,drive=disk0"));
        assert_true(argv_has_pair(argv, "-kernel", "/boot/vmlinux"));
    }
}

static void test_argv_errors(void **state)
{
    cleanup_strv char **argv = NULL;

    /* tap without the TAP's descriptor and MAC (vm-net.c sets them before launch) */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->net = (free(s->net), strdup("tap"));
        cleanup_error vmctl_error *err = NULL;
        assert_true(qemu_build_argv(s, "qemu", "/v", &argv, &err) < 0);
        assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
        assert_non_null(strstr(vmctl_error_get_message(err), "TAP's descriptor"));
    }
    /* unknown machine, accel, net */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->machine = (free(s->machine), strdup("pc-i440fx"));
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), -EINVAL);
        assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
        assert_string_equal(vmctl_error_find_detail(err, "field"), "machine");
    }
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->accel = (free(s->accel), strdup("auto"));
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), -EINVAL);
        assert_string_equal(vmctl_error_find_detail(err, "field"), "accel");
    }
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->net = (free(s->net), strdup("bridge"));
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), -EINVAL);
        assert_string_equal(vmctl_error_find_detail(err, "field"), "net");
    }
    /* microvm needs a kernel */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        free(s->kernel), free(s->initrd);
        s->kernel = s->initrd = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), -EINVAL);
        assert_string_equal(vmctl_error_find_detail(err, "field"), "kernel");
    }
    /* an unresolved host port */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->net = (free(s->net), strdup("user"));
        s->ports = calloc(1, sizeof(*s->ports));
        s->ports[0].guest_port = 80;
        s->n_ports = 1;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v", &argv, &err), -EINVAL);
        assert_string_equal(vmctl_error_find_detail(err, "field"), "port");
    }
    /* a directory too long for unix socket paths */
    {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        char dir[120];
        memset(dir, 'd', sizeof(dir) - 1);
        dir[0] = '/';
        dir[sizeof(dir) - 1] = 0;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", dir, &argv, &err), -ENAMETOOLONG);
        assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
    }
    assert_null(argv);
}

static void test_binary_override_missing(void **state)
{
    cleanup_free char *saved = getenv("VMCTL_QEMU") ? strdup(getenv("VMCTL_QEMU")) : NULL;
    setenv("VMCTL_QEMU", "/nonexistent/qemu-system-x86_64", 1);
    cleanup_free char *bin = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(qemu_find_binary(&bin, &err), -ENOENT);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::spawn_failed");
    assert_non_null(strstr(vmctl_error_get_message(err), "/nonexistent/qemu-system-x86_64"));

    /* and launch reports it the same way, before touching anything */
    cleanup_vm_spec vm_spec *s = spec_microvm();
    vmctl_error_free(TAKE_PTR(err));
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    assert_int_equal(qemu_backend.launch(s, tmpdir, &pid, &start, &hold, &err), -ENOENT);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::spawn_failed");
    assert_non_null(strstr(vmctl_error_get_message(err), "/nonexistent/qemu-system-x86_64"));
    assert_int_equal(pid, 0);
    if (saved)
        setenv("VMCTL_QEMU", saved, 1);
    else
        unsetenv("VMCTL_QEMU");
}

/* ---------- host: backends, accelerators, doctor ---------- */

static void test_backend_find(void **state)
{
    cleanup_error vmctl_error *err = NULL;
    assert_ptr_equal(backend_find(NULL, &err), &qemu_backend);
    assert_ptr_equal(backend_find("qemu", &err), &qemu_backend);
    assert_null(err);
    assert_null(backend_find("firecracker", &err));
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::backend::not_available");
    assert_non_null(strstr(vmctl_error_get_message(err), "not built yet"));
    assert_null(backend_find("propolis", &err));
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::backend::not_available");
    assert_non_null(strstr(vmctl_error_get_message(err), "illumos"));
    assert_null(backend_find("xen", &err));
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
    assert_string_equal(vmctl_error_get_message(err),
                        "unknown backend 'xen': use qemu, firecracker or propolis");
    /* the registry: QEMU is the first row (the default), and the only one */
    assert_ptr_equal(backend_at(0), &qemu_backend);
    assert_null(backend_at(1));
    cleanup_error vmctl_error *fc = NULL;
    assert_null(backend_find("firecracker", &fc));
    assert_string_equal(vmctl_error_get_help(fc),
                        "Use the QEMU backend (`--backend qemu`, the default).");
}

/* What vm.c used to decide itself: QEMU's machines and networks, checked and defaulted by the
 * backend's validate op. */
static void test_validate(void **state)
{
    struct {
        const char *kernel, *base, *machine, *net;
        size_t n_ports;
        const char *want_machine, *want_net; /* NULL: fails with want_code */
        const char *want_code, *want_field;
    } cases[] = {
        {"/k", NULL, NULL, NULL, 0, "microvm", "none", NULL, NULL},
        {"/k", NULL, NULL, NULL, 1, "microvm", "user", NULL, NULL},
        {NULL, "/img", NULL, NULL, 0, "q35", "user", NULL, NULL},
        {"/k", "/img", "q35", "none", 0, "q35", "none", NULL, NULL},
        {"/k", NULL, "pc", NULL, 0, NULL, NULL, "vm_manager::config::invalid", "machine"},
        {NULL, "/img", "microvm", NULL, 0, NULL, NULL, "vm_manager::config::invalid", "machine"},
        {"/k", NULL, NULL, "bridge", 0, NULL, NULL, "vm_manager::config::invalid", "net"},
        {"/k", NULL, NULL, "tap", 1, "microvm", "tap", NULL, NULL},
        {"/k", NULL, NULL, "none", 1, NULL, NULL, "vm_manager::network::config_invalid", "port"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        vmctl_port_forward port = {.host_port = 8080, .guest_port = 80};
        vm_spec s = {
            .kernel = (char *)cases[i].kernel,
            .base = (char *)cases[i].base,
            .machine = cases[i].machine ? strdup(cases[i].machine) : NULL,
            .net = cases[i].net ? strdup(cases[i].net) : NULL,
            .ports = cases[i].n_ports ? &port : NULL,
            .n_ports = cases[i].n_ports,
        };
        cleanup_error vmctl_error *err = NULL;
        int r = qemu_backend.validate(&s, &err);
        if (cases[i].want_machine) {
            assert_int_equal(r, 0);
            assert_null(err);
            assert_string_equal(s.machine, cases[i].want_machine);
            assert_string_equal(s.net, cases[i].want_net);
        } else {
            assert_true(r < 0);
            assert_non_null(err);
            assert_string_equal(vmctl_error_get_code(err), cases[i].want_code);
            assert_string_equal(vmctl_error_find_detail(err, "field"), cases[i].want_field);
        }
        free(s.machine);
        free(s.net);
    }
    cleanup_error vmctl_error *err = NULL;
    vm_spec s = {.kernel = "/k", .machine = strdup("pc")};
    assert_int_equal(qemu_backend.validate(&s, &err), -EINVAL);
    assert_string_equal(vmctl_error_get_message(err), "invalid machine 'pc'");
    assert_string_equal(vmctl_error_find_detail(err, "value"), "pc");
    assert_string_equal(vmctl_error_find_detail(err, "allowed"), "microvm or q35");
    assert_string_equal(vmctl_error_get_help(err), "Set machine to microvm or q35.");
    free(s.machine);

    /* vhost-vsock needs a CID unique on the host, when the host has the device */
    assert_int_equal(qemu_backend.needs_host_cid(&s), access("/dev/vhost-vsock", R_OK | W_OK) == 0);

    cleanup_error vmctl_error *boot = NULL;
    assert_int_equal(qemu_backend.exited_while_booting("web", &boot), -ECHILD);
    assert_string_equal(vmctl_error_get_code(boot), "vm_manager::qemu::spawn_failed");
    assert_string_equal(vmctl_error_get_message(boot), "QEMU exited while vm 'web' was booting");
    assert_non_null(strstr(vmctl_error_get_help(boot), "`vmctl logs web --qemu`"));
}

static void test_accel_resolve(void **state)
{
    cleanup_free char *reason = kvm_unusable_reason();
    print_message("KVM here: %s\n", reason ? reason : "usable");
    /* this project's hosts run nested paravirtual KVM: it must be named as the reason */
    if (file_exists("/sys/module/kvm_pvm") && file_exists("/dev/kvm")) {
        assert_non_null(reason);
        assert_non_null(strstr(reason, "kvm_pvm"));
        assert_non_null(strstr(reason, "MSR 0x10a"));
    }
    if (!file_exists("/dev/kvm")) {
        assert_non_null(reason);
        assert_non_null(strstr(reason, "/dev/kvm"));
    }

    cleanup_error vmctl_error *err = NULL;
    char *accel = NULL, *notice = NULL;
    assert_int_equal(accel_resolve("tcg", &accel, &notice, &err), 0);
    assert_string_equal(accel, "tcg");
    assert_null(notice);
    free(accel);

    assert_int_equal(accel_resolve("auto", &accel, &notice, &err), 0);
    if (reason) {
        assert_string_equal(accel, "tcg");
        assert_non_null(notice);
        assert_true(str_startswith(notice, "KVM is not usable here ("));
        assert_non_null(strstr(notice, reason));
        assert_non_null(strstr(notice, "); using TCG"));
    } else {
        assert_string_equal(accel, "kvm");
        assert_null(notice);
    }
    free(accel);
    free(notice);
    accel = notice = NULL;
    /* NULL means auto */
    assert_int_equal(accel_resolve(NULL, &accel, NULL, &err), 0);
    assert_string_equal(accel, reason ? "tcg" : "kvm");
    free(accel);
    accel = NULL;

    int r = accel_resolve("kvm", &accel, &notice, &err);
    if (reason) {
        assert_int_equal(r, -ENODEV);
        assert_null(accel);
        assert_string_equal(vmctl_error_get_code(err), "vm_manager::host::kvm_unavailable");
        assert_string_equal(vmctl_error_find_detail(err, "reason"), reason);
    } else {
        assert_int_equal(r, 0);
        assert_string_equal(accel, "kvm");
        free(accel);
        accel = NULL;
    }
    vmctl_error_free(TAKE_PTR(err));
    assert_int_equal(accel_resolve("hvf", &accel, &notice, &err), -EINVAL);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::config::invalid");
    assert_string_equal(vmctl_error_find_detail(err, "field"), "accel");
}

static const vmctl_host_check *find_check(const vmctl_host_check *l, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (streq(l[i].name, name))
            return &l[i];
    return NULL;
}

static void test_host_checks(void **state)
{
    cleanup_free char *home = str_printf("%s/home", tmpdir);
    vmctl_ctx *ctx = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(vmctl_ctx_new(home, &ctx, &err), 0);
    vmctl_host_check *l = NULL;
    size_t n = 0;
    uint64_t t0 = now_usec();
    assert_int_equal(vmctl_host_check_all(ctx, &l, &n, &err), 0);
    print_message("doctor took %llu ms\n", (unsigned long long)((now_usec() - t0) / 1000));
    for (size_t i = 0; i < n; i++) {
        print_message("%-9s %-4s %s\n", l[i].name, vmctl_check_status_to_string(l[i].status),
                      l[i].summary);
        assert_non_null(l[i].summary);
        /* everything that is not OK says what to do */
        if (l[i].status != VMCTL_CHECK_OK)
            assert_non_null(l[i].help);
    }
    const char *names[] = {"qemu",    "qemu-img", "kvm",  "tcg", "store",   "vsock",
                           "apt-get", "dpkg-deb", "cpio", "lz4", "modinfo", "gzip"};
    for (size_t i = 0; i < ELEMENTSOF(names); i++)
        assert_non_null(find_check(l, n, names[i]));

    cleanup_free char *qemu = NULL;
    bool have_qemu = qemu_find_binary(&qemu, NULL) == 0;
    const vmctl_host_check *c = find_check(l, n, "qemu");
    assert_int_equal(c->status, have_qemu ? VMCTL_CHECK_OK : VMCTL_CHECK_FAIL);
    if (have_qemu) {
        assert_non_null(strstr(c->summary, qemu));
        assert_non_null(strstr(c->summary, "QEMU emulator version"));
    }
    c = find_check(l, n, "store");
    assert_int_equal(c->status, VMCTL_CHECK_OK);
    assert_non_null(strstr(c->summary, home));
    cleanup_free char *reason = kvm_unusable_reason();
    c = find_check(l, n, "kvm");
    if (reason) {
        assert_int_not_equal(c->status, VMCTL_CHECK_OK);
        assert_non_null(strstr(c->summary, reason));
        assert_non_null(strstr(c->help, "TCG"));
    } else {
        assert_int_equal(c->status, VMCTL_CHECK_OK);
    }
    c = find_check(l, n, "vsock");
    assert_int_equal(c->status,
                     file_exists("/dev/vhost-vsock") ? VMCTL_CHECK_OK : VMCTL_CHECK_WARN);
    c = find_check(l, n, "gzip");
    assert_int_equal(c->status, VMCTL_CHECK_OK); /* gzip is essential on Debian */
    vmctl_host_check_list_free(l, n);

    /* without QEMU: qemu and tcg fail; KVM can no longer be a mere warning */
    cleanup_free char *saved = getenv("VMCTL_QEMU") ? strdup(getenv("VMCTL_QEMU")) : NULL;
    setenv("VMCTL_QEMU", "/nonexistent/qemu", 1);
    assert_int_equal(vmctl_host_check_all(ctx, &l, &n, &err), 0);
    assert_int_equal(find_check(l, n, "qemu")->status, VMCTL_CHECK_FAIL);
    assert_non_null(strstr(find_check(l, n, "qemu")->summary, "/nonexistent/qemu"));
    assert_int_equal(find_check(l, n, "tcg")->status, VMCTL_CHECK_FAIL);
    if (reason)
        assert_int_equal(find_check(l, n, "kvm")->status, VMCTL_CHECK_FAIL);
    vmctl_host_check_list_free(l, n);
    if (saved)
        setenv("VMCTL_QEMU", saved, 1);
    else
        unsetenv("VMCTL_QEMU");

    assert_string_equal(vmctl_check_status_to_string(VMCTL_CHECK_OK), "ok");
    assert_string_equal(vmctl_check_status_to_string(VMCTL_CHECK_WARN), "warn");
    assert_string_equal(vmctl_check_status_to_string(VMCTL_CHECK_FAIL), "fail");
    vmctl_ctx_free(ctx);
}

/* ---------- real launches ---------- */

static const char *test_kernel, *test_initrd;
static char *tsc_khz_arg; /* tsc_early_khz=... avoids the TCG PIT calibration hang */

static char *host_tsc_khz(void)
{
    cleanup_free char *info = NULL;
    if (read_file("/proc/cpuinfo", &info, NULL) < 0)
        return NULL;
    char *p = strstr(info, "cpu MHz");
    if (!p || !(p = strchr(p, ':')))
        return NULL;
    double mhz = strtod(p + 1, NULL);
    if (mhz <= 0)
        return NULL;
    return str_printf(" tsc_early_khz=%.0f", mhz * 1000.0);
}

/* One newc cpio member (data may be NULL for a directory) appended to buf at *len. */
static void cpio_add(char *buf, size_t *len, const char *name, unsigned mode, const char *data)
{
    size_t dlen = data ? strlen(data) : 0, nlen = strlen(name) + 1;
    *len +=
        (size_t)sprintf(buf + *len, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X",
                        0u, mode, 0u, 0u, 1u, 0u, dlen, 0u, 0u, 0u, 0u, nlen, 0u);
    memcpy(buf + *len, name, nlen);
    *len += nlen;
    while (*len % 4)
        buf[(*len)++] = 0;
    memcpy(buf + *len, data ? data : "", dlen);
    *len += dlen;
    while (*len % 4)
        buf[(*len)++] = 0;
}

/* The default guest's initrd with an archive appended that replaces its /init (the kernel unpacks
 * both, the later file wins): print READY-MARK on the console, power off. */
static char *make_test_initrd(const char *default_initrd)
{
    cleanup_free char *img = NULL;
    size_t len = 0;
    if (read_file(default_initrd, &img, &len) < 0)
        return NULL;
    char *buf = malloc(len + 4096);
    assert_non_null(buf);
    memcpy(buf, img, len);
    while (len % 4) /* zeros between archives are skipped */
        buf[len++] = 0;
    cpio_add(buf, &len, "init", 0100755, "#!/bin/sh\necho READY-MARK\npoweroff -f\n");
    cpio_add(buf, &len, "TRAILER!!!", 0, NULL);
    char *path = str_printf("%s/test-initrd.img", tmpdir);
    assert_int_equal(write_file_atomic(path, buf, len, 0644), 0);
    free(buf);
    return path;
}

static char *new_vm_dir(const char *name)
{
    char *d = str_printf("%s/%s", tmpdir, name);
    assert_non_null(d);
    assert_int_equal(mkdir_p(d, 0755), 0);
    return d;
}

static vm_spec *spec_real(const char *name, const char *machine)
{
    vm_spec *s = calloc(1, sizeof(*s));
    s->name = strdup(name);
    s->backend = strdup("qemu");
    s->machine = strdup(machine);
    s->accel = strdup("tcg");
    s->vcpus = 1;
    s->memory_mib = 256;
    s->image = strdup("test");
    s->kernel = strdup(test_kernel);
    s->initrd = test_initrd ? strdup(test_initrd) : NULL;
    s->cmdline = str_printf("console=ttyS0 quiet panic=-1%s", tsc_khz_arg ? tsc_khz_arg : "");
    s->net = strdup("none");
    s->agent = true;
    return s;
}

/* Processes whose command line mentions dir (the VM's files): none may survive a failure. */
static int procs_mentioning(const char *dir)
{
    int count = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid())
            continue;
        cleanup_free char *path = str_printf("/proc/%ld/cmdline", pid);
        cleanup_free char *cmd = NULL;
        size_t len = 0;
        if (read_file(path, &cmd, &len) < 0 || len == 0)
            continue;
        for (size_t i = 0; i + 1 < len; i++)
            if (!cmd[i])
                cmd[i] = ' ';
        if (strstr(cmd, dir) && proc_alive((pid_t)pid, 0))
            count++;
    }
    closedir(d);
    return count;
}

static bool wait_gone(pid_t pid, uint64_t start, uint64_t usec)
{
    uint64_t deadline = now_usec() + usec;
    while (proc_alive(pid, start)) {
        if (now_usec() > deadline)
            return false;
        sleep_usec(10000);
    }
    return true;
}

static bool file_contains(const char *path, const char *needle)
{
    cleanup_free char *s = NULL;
    return read_file(path, &s, NULL) == 0 && strstr(s, needle);
}

static const char *query_status(const char *dir)
{
    static char buf[64];
    cleanup_free char *sock = str_printf("%s/qmp.sock", dir);
    cleanup_qmp qmp *q = NULL;
    cleanup_error vmctl_error *err = NULL;
    if (qmp_connect(sock, now_usec() + 10000000, &q, &err) < 0)
        return "connect-failed";
    json_t *ret = NULL;
    if (qmp_execute(q, "query-status", NULL, &ret, now_usec() + 10000000, &err) < 0)
        return "error";
    snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(ret, "status")));
    json_decref(ret);
    return buf;
}

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read from fd until needle shows up or usec pass. */
static bool read_until(int fd, const char *needle, uint64_t usec)
{
    uint64_t deadline = now_usec() + usec;
    size_t cap = 1 << 20, len = 0;
    cleanup_free char *buf = malloc(cap);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (now_usec() < deadline && len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n == 0)
            return false;
        if (n < 0)
            continue;
        len += (size_t)n;
        buf[len] = 0;
        if (strstr(buf, needle))
            return true;
    }
    return false;
}

static void test_launch_pause_resume_console(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-a");
    cleanup_vm_spec vm_spec *s = spec_real("vm-a", "microvm");
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    int r = qemu_backend.launch(s, dir, &pid, &start, &hold, &err);
    if (r < 0)
        fail_msg("launch: %s (%s)", vmctl_error_get_message(err),
                 vmctl_error_get_n_notes(err) ? vmctl_error_get_note(err, 0) : "");
    supervise_commit(hold);
    assert_true(pid > 0);
    assert_true(start > 0);
    assert_true(proc_alive(pid, start));
    assert_int_equal((long long)proc_start_time(pid), (long long)start);
    /* detached: not our child */
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    cleanup_free char *pidfile = str_printf("%s/qemu.pid", dir);
    cleanup_free char *pidtext = NULL;
    assert_int_equal(read_file(pidfile, &pidtext, NULL), 0);
    assert_int_equal(atoi(pidtext), pid);

    /* the serial console is attachable */
    cleanup_free char *con = str_printf("%s/console.sock", dir);
    cleanup_close int confd = connect_unix(con);
    assert_true(confd >= 0);

    assert_int_equal(qemu_backend.pause(dir, now_usec() + 10000000, &err), 0);
    assert_string_equal(query_status(dir), "paused");
    assert_int_equal(qemu_backend.resume(dir, now_usec() + 10000000, &err), 0);
    assert_string_equal(query_status(dir), "running");

    /* the guest's output reaches the attached console and console.log */
    bool seen = read_until(confd, "READY-MARK", 90000000);
    cleanup_free char *log = str_printf("%s/console.log", dir);
    if (!seen) {
        kill(pid, SIGKILL);
        fail_msg("READY-MARK not seen on console.sock");
    }
    /* the log is written as the console is: give it a moment to hit the file */
    uint64_t deadline = now_usec() + 5000000;
    while (!file_contains(log, "READY-MARK") && now_usec() < deadline)
        sleep_usec(20000);
    assert_true(file_contains(log, "READY-MARK"));

    /* the test guest powers off by itself: QEMU must then be gone (a zombie counts as gone) */
    if (!wait_gone(pid, start, 60000000)) {
        kill(pid, SIGKILL);
        fail_msg("QEMU still alive after the guest powered off");
    }
}

static void test_launch_powerdown_quit(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-b");
    cleanup_vm_spec vm_spec *s = spec_real("vm-b", "microvm");
    s->agent = false;
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    if (qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0)
        fail_msg("launch: %s", vmctl_error_get_message(err));
    supervise_commit(hold);
    assert_true(proc_alive(pid, start));
    assert_int_equal(qemu_backend.pause(dir, now_usec() + 10000000, &err), 0);
    assert_int_equal(qemu_backend.powerdown(dir, now_usec() + 10000000, &err), 0);
    assert_int_equal(qemu_backend.quit(dir, now_usec() + 10000000, &err), 0);
    if (!wait_gone(pid, start, 20000000)) {
        kill(pid, SIGKILL);
        fail_msg("QEMU still alive after quit");
    }
    /* a QMP action on a VM that is gone fails cleanly with connect_failed */
    int r = qemu_backend.pause(dir, now_usec() + 300000, &err);
    assert_true(r < 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_connect_failed");
    /* QEMU's exit message is in qemu.log */
    cleanup_free char *qlog = str_printf("%s/qemu.log", dir);
    assert_true(file_contains(qlog, "vmctl: starting"));
}

/* QEMU's stderr stays on qemu.log after startup: its exit message lands there. */
static void test_launch_runtime_stderr_logged(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-t");
    cleanup_vm_spec vm_spec *s = spec_real("vm-t", "microvm");
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    if (qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0)
        fail_msg("launch: %s", vmctl_error_get_message(err));
    supervise_commit(hold);
    assert_int_equal(kill(pid, SIGTERM), 0);
    if (!wait_gone(pid, start, 20000000)) {
        kill(pid, SIGKILL);
        fail_msg("QEMU still alive after SIGTERM");
    }
    cleanup_free char *qlog = str_printf("%s/qemu.log", dir);
    assert_true(file_contains(qlog, "vmctl: starting"));
    assert_true(file_contains(qlog, "terminating on signal 15"));
}

static void test_launch_q35_kernel(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-q");
    cleanup_vm_spec vm_spec *s = spec_real("vm-q", "q35");
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    if (qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0)
        fail_msg("launch: %s (%s)", vmctl_error_get_message(err),
                 vmctl_error_get_n_notes(err) ? vmctl_error_get_note(err, 0) : "");
    supervise_commit(hold);
    cleanup_free char *log = str_printf("%s/console.log", dir);
    uint64_t deadline = now_usec() + 90000000;
    while (!file_contains(log, "READY-MARK") && now_usec() < deadline && proc_alive(pid, start))
        sleep_usec(50000);
    bool seen = file_contains(log, "READY-MARK");
    (void)qemu_backend.quit(dir, now_usec() + 5000000, NULL);
    if (!wait_gone(pid, start, 20000000))
        kill(pid, SIGKILL);
    assert_true(seen);
}

static void test_launch_bad_kernel(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-bad-kernel");
    cleanup_vm_spec vm_spec *s = spec_real("vm-bad-kernel", "microvm");
    free(s->kernel);
    s->kernel = str_printf("%s/no-such-vmlinux", dir);
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    int r = qemu_backend.launch(s, dir, &pid, &start, &hold, &err);
    assert_true(r < 0);
    assert_int_equal(pid, 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::spawn_failed");
    /* QEMU's own words, from qemu.log */
    assert_true(has_note_containing(err, "could not open kernel file"));
    assert_true(has_note_containing(err, "no-such-vmlinux"));
    /* nothing left: no process, no sockets, no pid file */
    assert_int_equal(procs_mentioning(dir), 0);
    cleanup_free char *sock = str_printf("%s/qmp.sock", dir);
    cleanup_free char *pidf = str_printf("%s/qemu.pid", dir);
    assert_false(file_exists(sock));
    assert_false(file_exists(pidf));

    /* a second failure quotes only its own launch's output */
    vmctl_error_free(TAKE_PTR(err));
    free(s->kernel);
    s->kernel = str_printf("%s/other-missing-vmlinux", dir);
    assert_true(qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0);
    assert_true(has_note_containing(err, "other-missing-vmlinux"));
    assert_false(has_note_containing(err, "no-such-vmlinux"));
}

static void test_launch_bad_disk(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-bad-disk");
    cleanup_vm_spec vm_spec *s = spec_real("vm-bad-disk", "q35");
    free(s->kernel), free(s->initrd), free(s->cmdline);
    s->kernel = s->initrd = s->cmdline = NULL;
    s->disk = str_printf("%s/missing.qcow2", dir);
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    assert_true(qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::spawn_failed");
    assert_true(has_note_containing(err, "missing.qcow2"));
    assert_int_equal(procs_mentioning(dir), 0);
}

/* An option QEMU rejects while parsing, before any socket exists. */
static void test_launch_bad_option(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-bad-smp");
    cleanup_vm_spec vm_spec *s = spec_real("vm-bad-smp", "microvm");
    s->vcpus = 5000;
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    assert_true(qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::spawn_failed");
    assert_true(has_note_containing(err, "Invalid SMP CPUs 5000"));
    assert_int_equal(procs_mentioning(dir), 0);
}

struct scan_hit {
    pid_t pid;
    int n;
    char name[64];
};

static int on_scan(const char *name, pid_t pid, uint64_t start, void *userdata)
{
    struct scan_hit *h = userdata;
    h->n++;
    h->pid = pid;
    snprintf(h->name, sizeof(h->name), "%s", name);
    return 0;
}

/* The launch handshake: the scan finds the new QEMU by its directory; closing the hold without
 * backend_launch_commit() (the caller failed to record it, or was killed) makes the supervisor
 * kill it; a committed QEMU is kept. */
static void test_launch_hold_and_scan(void **state)
{
    cleanup_free char *dir = new_vm_dir("vm-h");
    cleanup_vm_spec vm_spec *s = spec_real("vm-h", "microvm");
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    if (qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0)
        fail_msg("launch: %s", vmctl_error_get_message(err));
    assert_true(hold >= 0);
    struct scan_hit h = {0};
    assert_int_equal(qemu_backend.scan(tmpdir, "vm-h", on_scan, &h), 1);
    assert_int_equal(h.pid, pid);
    assert_string_equal(h.name, "vm-h");
    h = (struct scan_hit){0};
    assert_int_equal(qemu_backend.scan(tmpdir, "vm-other", on_scan, &h), 0);
    assert_true(qemu_backend.scan(tmpdir, NULL, on_scan, &h) >= 1);
    close(hold); /* not recorded */
    if (!wait_gone(pid, start, 10000000)) {
        kill(pid, SIGKILL);
        fail_msg("QEMU survived its unrecorded launch");
    }
    h = (struct scan_hit){0};
    assert_int_equal(qemu_backend.scan(tmpdir, "vm-h", on_scan, &h), 0);

    /* committed: it stays */
    if (qemu_backend.launch(s, dir, &pid, &start, &hold, &err) < 0)
        fail_msg("launch: %s", vmctl_error_get_message(err));
    supervise_commit(hold);
    sleep_usec(300000);
    bool alive = proc_alive(pid, start);
    kill(pid, SIGKILL);
    assert_true(alive);
    assert_true(wait_gone(pid, start, 10000000));
}

/* --mount: virtio-fs (shared memfd RAM, virtio-mmio v2 on microvm, a vhost-user-fs device per
 * mount) and 9p (-fsdev local, readonly=on for :ro). */
static void test_argv_mounts(void **state)
{
    (void)state;
    for (int ninep = 0; ninep <= 1; ninep++) {
        cleanup_vm_spec vm_spec *s = spec_microvm();
        s->mounts = calloc(2, sizeof(*s->mounts));
        s->mounts[0] = (vm_spec_mount){strdup("/h/a,b"), strdup("/mnt/a"), false};
        s->mounts[1] = (vm_spec_mount){strdup("/h/ro"), strdup("/mnt/ro"), true};
        s->n_mounts = 2;
        s->mount_type = strdup(ninep ? "9p" : "virtiofs");
        cleanup_strv char **argv = NULL;
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(qemu_build_argv(s, "qemu", "/v/t1", &argv, &err), 0);
        if (!ninep) {
            assert_true(
                argv_has_pair(argv, "-object", "memory-backend-memfd,id=mem,size=384M,share=on"));
            assert_true(argv_has_pair(argv, "-machine", "memory-backend=mem"));
            assert_true(argv_has_pair(argv, "-global", "virtio-mmio.force-legacy=false"));
            assert_true(argv_has_pair(argv, "-chardev", "socket,id=fs1,path=/v/t1/fs-1.sock"));
            assert_true(argv_has_pair(argv, "-device", "vhost-user-fs-device,chardev=fs0,tag=m0"));
            assert_int_equal(argv_find(argv, "-fsdev"), -1);
        } else {
            assert_int_equal(argv_find(argv, "-object"), -1);
            /* a comma in the path is doubled for QEMU's option syntax */
            assert_true(
                argv_has_pair(argv, "-fsdev", "local,id=fs0,path=/h/a,,b,security_model=none"));
            assert_true(argv_has_pair(argv, "-fsdev",
                                      "local,id=fs1,path=/h/ro,security_model=none,readonly=on"));
            assert_true(argv_has_pair(argv, "-device", "virtio-9p-device,fsdev=fs1,mount_tag=m1"));
        }
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest quick_tests[] = {
        cmocka_unit_test(test_argv_microvm),
        cmocka_unit_test(test_argv_snapshot),
        cmocka_unit_test(test_argv_q35_disk_kvm),
        cmocka_unit_test(test_argv_tap_throttle),
        cmocka_unit_test(test_argv_disk_formats),
        cmocka_unit_test(test_argv_mounts),
        cmocka_unit_test(test_argv_disk_chain),
        cmocka_unit_test(test_argv_options),
        cmocka_unit_test(test_argv_agent_ports_vsock),
        cmocka_unit_test(test_agent_endpoint),
        cmocka_unit_test(test_qemu_knows_vsock_devices),
        cmocka_unit_test(test_argv_errors),
        cmocka_unit_test(test_binary_override_missing),
        cmocka_unit_test(test_backend_find),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_accel_resolve),
        cmocka_unit_test(test_host_checks),
    };
    int failed = cmocka_run_group_tests_name("quick", quick_tests, NULL, NULL);
    if (failed) {
        rm_rf(tmpdir);
        return failed;
    }

    const char *k = getenv("VMCTL_TEST_KERNEL");
    const char *i = getenv("VMCTL_TEST_INITRD");
    const char *images = getenv("VMCTL_TEST_IMAGES");
    cleanup_free char *dk = images && *images ? str_printf("%s/default/vmlinux", images) : NULL;
    cleanup_free char *di = images && *images ? str_printf("%s/default/initrd.img", images) : NULL;
    cleanup_free char *initrd = NULL;
    if (k && *k) {
        test_kernel = k;
        test_initrd = i && *i ? i : NULL;
    } else if (dk && file_exists(dk) && file_exists(di)) {
        test_kernel = dk;
        test_initrd = initrd = make_test_initrd(di);
        if (!initrd) {
            printf("cannot read '%s'\n", di);
            rm_rf(tmpdir);
            return 1;
        }
    }
    cleanup_free char *qemu = NULL;
    if (qemu_find_binary(&qemu, NULL) < 0 || !test_kernel) {
        const char *env = getenv("VMCTL_QEMU");
        rm_rf(tmpdir);
        if (!qemu)
            return skip_exit(NULL, "the launch tests: %s",
                             env && *env ? "$VMCTL_QEMU not found"
                                         : "qemu-system-x86_64 not found (apt-get install "
                                           "qemu-system-x86)");
        if (!images || !*images)
            return skip_exit(NULL, "the launch tests: no test kernel: $VMCTL_TEST_IMAGES is unset "
                                   "(scripts/test.sh builds the default guest and sets it)");
        return skip_exit(NULL,
                         "the launch tests: no test kernel: the default guest was not built "
                         "('%s' is missing; scripts/test.sh builds it)",
                         dk);
    }
    tsc_khz_arg = host_tsc_khz();
    const struct CMUnitTest launch_tests[] = {
        cmocka_unit_test(test_launch_pause_resume_console),
        cmocka_unit_test(test_launch_powerdown_quit),
        cmocka_unit_test(test_launch_runtime_stderr_logged),
        cmocka_unit_test(test_launch_q35_kernel),
        cmocka_unit_test(test_launch_bad_kernel),
        cmocka_unit_test(test_launch_bad_disk),
        cmocka_unit_test(test_launch_bad_option),
        cmocka_unit_test(test_launch_hold_and_scan),
        cmocka_unit_test(test_argv_mounts),
    };
    failed = cmocka_run_group_tests_name("launch", launch_tests, NULL, NULL);
    free(tsc_khz_arg);
    rm_rf(tmpdir);
    return failed;
}

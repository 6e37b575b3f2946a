/* SPDX-License-Identifier: MIT */
/* The backend registry (one row per backend) and the accelerator: which backend runs a VM, and
 * whether KVM can run it here.
 *
 * KVM is "usable" only when it can run what we run: /dev/kvm opens, speaks API 12, creates a VM
 * and a vCPU, accepts the CPUID and IA32_ARCH_CAPABILITIES values it advertises itself (what a
 * guest with the host's CPU model gets), and runs a few real-mode instructions. A nested
 * paravirtual KVM (kvm_pvm) passes the first steps but cannot run stock guests, so it is named
 * explicitly. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "qemu.h"
#include "util/util.h"

#define KVM_DEVICE "/dev/kvm"
#define KVM_PVM_REASON                                                                             \
    "nested paravirtual KVM (kvm_pvm): a guest with the host's CPU model fails to set MSR 0x10a "  \
    "and stock kernels die with an emulation failure"
#define MSR_IA32_ARCH_CAPABILITIES 0x10a

/* ---------- the registry ---------- */

/* One row per backend; the first is the default. */
static const backend_ops *const backends[] = {
    &qemu_backend,
};

/* Backends that are planned or belong to another host: named, so that asking for one says so. */
static const struct {
    const char *name;
    const char *why;
} unavailable[] = {
    {"firecracker", "the Firecracker backend is not built yet"},
    {"propolis", "propolis runs on illumos only"},
};

const backend_ops *backend_at(size_t i)
{
    return i < ELEMENTSOF(backends) ? backends[i] : NULL;
}

const backend_ops *backend_find(const char *name, vmctl_error **reterr)
{
    if (!name)
        return backends[0];
    for (size_t i = 0; i < ELEMENTSOF(backends); i++)
        if (streq(name, backends[i]->name))
            return backends[i];
    for (size_t i = 0; i < ELEMENTSOF(unavailable); i++) {
        if (!streq(name, unavailable[i].name))
            continue;
        err_make(reterr, VMCTL_E_BACKEND_NOT_AVAILABLE, EOPNOTSUPP, "%s", unavailable[i].why);
        err_detail(reterr, "backend", "%s", name);
        err_help(reterr, "Use the %s backend (`--backend %s`, the default).", backends[0]->title,
                 backends[0]->name);
        return NULL;
    }
    char known[128] = "";
    size_t n = 0;
    size_t total = ELEMENTSOF(backends) + ELEMENTSOF(unavailable);
    for (size_t i = 0; i < total && n < sizeof(known); i++) {
        const char *b = i < ELEMENTSOF(backends) ? backends[i]->name
                                                 : unavailable[i - ELEMENTSOF(backends)].name;
        int k = snprintf(known + n, sizeof(known) - n, "%s%s",
                         i == 0           ? ""
                         : i + 1 == total ? " or "
                                          : ", ",
                         b);
        if (k < 0)
            break;
        n += (size_t)k;
    }
    err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "unknown backend '%s': use %s", name, known);
    err_detail(reterr, "field", "backend");
    return NULL;
}

/* ---------- KVM ---------- */

static bool kvm_pvm_loaded(void)
{
    if (access("/sys/module/kvm_pvm", F_OK) == 0)
        return true;
    cleanup_free char *mods = NULL;
    if (read_file("/proc/modules", &mods, NULL) < 0)
        return false;
    for (char *line = mods; line && *line;) {
        if (str_startswith(line, "kvm_pvm "))
            return true;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

static int ioctl_retry(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR);
    return r;
}

/* KVM's supported CPUID, what a guest with the host's CPU model starts from; NULL when
 * unavailable. */
static struct kvm_cpuid2 *supported_cpuid(int kvm)
{
    for (unsigned nent = 64; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
        if (!c)
            return NULL;
        c->nent = nent;
        if (ioctl_retry(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        free(c);
        if (errno != E2BIG)
            return NULL;
    }
    return NULL;
}

struct msr_one {
    struct kvm_msrs head;
    struct kvm_msr_entry entry;
};

/* vCPU-level probes on a VM that was created fine. NULL when they pass. */
static char *probe_vcpu(int kvm, int vm)
{
    cleanup_close int vcpu = ioctl_retry(vm, KVM_CREATE_VCPU, (void *)0);
    if (vcpu < 0)
        return str_printf("KVM_CREATE_VCPU failed: %s", strerror(errno));

    /* the host's CPU model: KVM's own supported CPUID, then its own advertised
     * ARCH_CAPABILITIES value */
    cleanup_free struct kvm_cpuid2 *cpuid = supported_cpuid(kvm);
    if (cpuid && ioctl_retry(vcpu, KVM_SET_CPUID2, cpuid) == 0 &&
        ioctl_retry(kvm, KVM_CHECK_EXTENSION, (void *)(long)KVM_CAP_GET_MSR_FEATURES) > 0) {
        struct msr_one m = {.head.nmsrs = 1, .entry.index = MSR_IA32_ARCH_CAPABILITIES};
        if (ioctl_retry(kvm, KVM_GET_MSRS, &m) == 1 && m.entry.data != 0) {
            unsigned long long value = (unsigned long long)m.entry.data;
            if (ioctl_retry(vcpu, KVM_SET_MSRS, &m) != 1)
                return str_printf(
                    "KVM rejects its own advertised value 0x%llx for MSR 0x10a "
                    "(IA32_ARCH_CAPABILITIES): a guest with the host's CPU model would abort",
                    value);
        }
    }

    /* a guest that runs: mov dx,0x3f8; mov al,0x42; out dx,al; hlt (real mode, at 0x1000) */
    static const unsigned char code[] = {0xba, 0xf8, 0x03, 0xb0, 0x42, 0xee, 0xf4};
    long page = sysconf(_SC_PAGESIZE);
    void *mem = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return NULL; /* not KVM's fault; say nothing */
    memcpy(mem, code, sizeof(code));
    char *reason = NULL;
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0x1000,
        .memory_size = (uint64_t)page,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    /* as hypervisors do (kvmtool too): Intel hosts without unrestricted guest need it for real
     * mode */
    (void)ioctl_retry(vm, KVM_SET_TSS_ADDR, (void *)0xfffbd000UL);
    int run_size = ioctl_retry(kvm, KVM_GET_VCPU_MMAP_SIZE, (void *)0);
    struct kvm_run *run = MAP_FAILED;
    struct kvm_sregs sregs;
    if (ioctl_retry(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0 || run_size <= 0 ||
        (run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0)) ==
            MAP_FAILED ||
        ioctl_retry(vcpu, KVM_GET_SREGS, &sregs) < 0) {
        reason = str_printf("cannot set up a minimal KVM guest: %s", strerror(errno));
        goto out;
    }
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
    if (ioctl_retry(vcpu, KVM_SET_SREGS, &sregs) < 0 ||
        ioctl_retry(vcpu, KVM_SET_REGS, &regs) < 0) {
        reason = str_printf("cannot set up a minimal KVM guest: %s", strerror(errno));
        goto out;
    }
    bool saw_out = false;
    for (int step = 0; step < 4; step++) {
        if (ioctl_retry(vcpu, KVM_RUN, (void *)0) < 0) {
            reason = str_printf("KVM_RUN of a minimal guest failed: %s", strerror(errno));
            break;
        }
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
            run->io.port == 0x3f8 && ((unsigned char *)run)[run->io.data_offset] == 0x42) {
            saw_out = true;
            continue;
        }
        if (run->exit_reason == KVM_EXIT_HLT && saw_out)
            break;
        if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
            reason = str_printf("a minimal guest fails under KVM: internal error (suberror %u)",
                                run->internal.suberror);
        else if (run->exit_reason == KVM_EXIT_FAIL_ENTRY)
            reason = str_printf("a minimal guest fails under KVM: VM entry failed (0x%llx)",
                                (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        else
            reason = str_printf("a minimal guest misbehaves under KVM (exit reason %u)",
                                run->exit_reason);
        break;
    }
out:
    if (run != MAP_FAILED)
        munmap(run, (size_t)run_size);
    munmap(mem, (size_t)page);
    return reason;
}

char *kvm_unusable_reason(void)
{
    cleanup_close int kvm = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        if (errno == ENOENT)
            return strdup(KVM_DEVICE " does not exist (no KVM in this kernel, the kvm module is "
                                     "not loaded, or virtualization is off in the firmware)");
        if (errno == EACCES || errno == EPERM)
            return strdup(KVM_DEVICE " is not accessible to this user (add it to group kvm)");
        return str_printf("cannot open " KVM_DEVICE ": %s", strerror(errno));
    }
    int api = ioctl_retry(kvm, KVM_GET_API_VERSION, (void *)0);
    if (api != KVM_API_VERSION)
        return str_printf("KVM API version %d, expected %d", api, KVM_API_VERSION);
    cleanup_close int vm = ioctl_retry(kvm, KVM_CREATE_VM, (void *)0);
    if (vm < 0)
        return str_printf("KVM_CREATE_VM failed: %s", strerror(errno));
    if (kvm_pvm_loaded())
        return strdup(KVM_PVM_REASON);
    return probe_vcpu(kvm, vm);
}

int accel_resolve(const char *requested, char **ret, char **notice, vmctl_error **reterr)
{
    if (!ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "accel_resolve: invalid arguments");
    if (notice)
        *notice = NULL;
    const char *req = requested ? requested : "auto";
    if (streq(req, "tcg")) {
        *ret = strdup("tcg");
        return *ret ? 0 : err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    if (!streq(req, "auto") && !streq(req, "kvm")) {
        int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                         "unknown accelerator '%s': use auto, kvm or tcg", req);
        err_detail(reterr, "field", "accel");
        return r;
    }
    cleanup_free char *reason = kvm_unusable_reason();
    if (!reason) {
        *ret = strdup("kvm");
        return *ret ? 0 : err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    if (streq(req, "kvm")) {
        int r = err_make(reterr, VMCTL_E_HOST_KVM_UNAVAILABLE, ENODEV,
                         "KVM is not usable on this host: %s", reason);
        err_detail(reterr, "reason", "%s", reason);
        return r;
    }
    *ret = strdup("tcg");
    if (!*ret)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (notice)
        *notice = str_printf("KVM is not usable here (%s); using TCG", reason);
    return 0;
}

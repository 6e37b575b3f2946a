/* SPDX-License-Identifier: MIT */
/* The hypervisor's jail (jail.h, docs/isolation.md). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <grp.h>

#include "error.h"
#include "jail-systemd.h"
#include "jail.h"
#include "util/util.h"
#include "vm-dir.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CPU_PERIOD  100000

static const char *const step_names[_JAIL_STEP_MAX] = {
    [JAIL_STEP_CGROUP_CREATE] = "cgroup create",
    [JAIL_STEP_CGROUP_LIMIT] = "cgroup limit",
    [JAIL_STEP_CGROUP_JOIN] = "cgroup join",
    [JAIL_STEP_PID_NAMESPACE] = "pid namespace",
    [JAIL_STEP_NAMESPACES] = "mount, ipc and uts namespaces",
    [JAIL_STEP_HOSTNAME] = "hostname",
    [JAIL_STEP_MOUNT_PRIVATE] = "private mounts",
    [JAIL_STEP_ROOT] = "root tmpfs",
    [JAIL_STEP_BIND] = "bind mount",
    [JAIL_STEP_PROC] = "proc mount",
    [JAIL_STEP_PIVOT] = "pivot_root",
    [JAIL_STEP_CAPABILITIES] = "capability drop",
    [JAIL_STEP_NO_NEW_PRIVS] = "no-new-privileges",
    [JAIL_STEP_GROUPS] = "groups",
    [JAIL_STEP_UID] = "uid drop",
    [JAIL_STEP_OWNERSHIP] = "vm directory ownership",
    [JAIL_STEP_VHOST_VSOCK] = "vhost-vsock",
    [JAIL_STEP_SYSTEMD_SCOPE] = "systemd scope",
};

const char *jail_step_name(int step)
{
    return step >= 0 && step < _JAIL_STEP_MAX && step_names[step] ? step_names[step] : "setup";
}

void jail_uid_range(uint32_t *base, uint32_t *count)
{
    *base = JAIL_UID_BASE_DEFAULT;
    *count = JAIL_UID_COUNT_DEFAULT;
    const char *b = getenv("VMCTL_JAIL_UID_BASE"), *c = getenv("VMCTL_JAIL_UID_COUNT");
    char *end = NULL;
    if (b && *b) {
        unsigned long v = strtoul(b, &end, 10);
        if (end && !*end && v >= 1000 && v < UINT32_MAX - 1)
            *base = (uint32_t)v;
    }
    if (c && *c) {
        unsigned long v = strtoul(c, &end, 10);
        if (end && !*end && v >= 1 && v <= UINT32_MAX - 1 - *base)
            *count = (uint32_t)v;
    }
    if ((uint64_t)*base + *count >= UINT32_MAX)
        *count = UINT32_MAX - 1 - *base;
}

uint64_t jail_memory_ceiling(unsigned guest_mib, bool tcg)
{
    /* under TCG, QEMU's translation cache grows to its 1 GiB default (tb-size) with the code the
     * guest runs: a Debian guest building things reached it and was OOM-killed */
    uint64_t mib = (uint64_t)guest_mib + guest_mib / 4 + 192 + (tcg ? 1024 : 0);
    return mib << 20;
}

bool jail_wanted(bool no_jail)
{
    if (no_jail || geteuid() != 0)
        return false;
    const char *e = getenv("VMCTL_NO_JAIL"); /* the whole host, for debugging */
    return !(e && *e && !streq(e, "0"));
}

/* ---------- cgroups ---------- */

enum { CG_NONE, CG_V1, CG_V2 };
static const char *const v1_controllers[] = {"cpu", "cpuacct", "memory", "pids", "blkio"};

static bool fs_is(const char *path, unsigned long magic)
{
    struct statfs s;
    return statfs(path, &s) == 0 && (unsigned long)s.f_type == magic;
}

static int cgroup_kind(void)
{
    if (fs_is(CGROUP_ROOT, CGROUP2_SUPER_MAGIC))
        return CG_V2;
    if (fs_is(CGROUP_ROOT, TMPFS_MAGIC) && fs_is(CGROUP_ROOT "/memory", CGROUP_SUPER_MAGIC))
        return CG_V1;
    return CG_NONE;
}

/* systemd's hybrid layout: the v1 controllers, and a cgroup2 hierarchy at unified/ (with no
 * controller vmctl uses: they are bound to v1; vmctl's limits are v1's) */
static bool cgroup_hybrid(void)
{
    return cgroup_kind() == CG_V1 && fs_is(CGROUP_ROOT "/unified", CGROUP2_SUPER_MAGIC);
}

static bool under_systemd(void)
{
    return access("/run/systemd/system", F_OK) == 0;
}

const char *jail_cgroup_mode(void)
{
    bool sd = under_systemd();
    switch (cgroup_kind()) {
    case CG_V2:
        return sd ? "v2 (systemd)" : "v2";
    case CG_V1:
        return cgroup_hybrid() ? (sd ? "v1 (hybrid, systemd)" : "v1 (hybrid)")
                               : (sd ? "v1 (systemd)" : "v1");
    default:
        return NULL;
    }
}

/* FNV-1a: tells two stores' VMs of one name apart (each VM directory is its own cgroup). */
static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

char *jail_cgroup_name(const char *vmdir)
{
    if (!vmdir)
        return NULL;
    size_t len = strlen(vmdir);
    while (len > 1 && vmdir[len - 1] == '/')
        len--;
    const char *slash = memrchr(vmdir, '/', len);
    const char *name = slash ? slash + 1 : vmdir;
    size_t parent = slash ? (size_t)(slash - vmdir) : 0;
    return str_printf(JAIL_CGROUP_DIR "/%.*s-%08x", (int)(len - (size_t)(name - vmdir)), name,
                      fnv1a(vmdir, parent));
}

char *jail_scope_name(const char *vmdir)
{
    cleanup_free char *rel = jail_cgroup_name(vmdir);
    return rel ? str_printf("vmctl-%s.scope", rel + strlen(JAIL_CGROUP_DIR "/")) : NULL;
}

/* Whether path (a cgroup, with or without CGROUP_ROOT) is the VM's: ending in its group rel
 * ("vmctl/NAME-HASH") or, under systemd, in its scope ("vmctl-NAME-HASH.scope"). */
static bool cgroup_is_vms(const char *path, const char *rel)
{
    size_t len = strlen(path), rl = strlen(rel);
    if (len >= rl && streq(path + len - rl, rel) && (len == rl || path[len - rl - 1] == '/'))
        return true;
    const char *leaf = strrchr(path, '/');
    leaf = leaf ? leaf + 1 : path;
    size_t ll = strlen(leaf), nl = rl - strlen(JAIL_CGROUP_DIR "/");
    return ll == nl + strlen("vmctl-.scope") && str_startswith(leaf, "vmctl-") &&
           !strncmp(leaf + 6, rel + strlen(JAIL_CGROUP_DIR "/"), nl) &&
           streq(leaf + 6 + nl, ".scope");
}

static bool v1_is(const char *ctl_list, const char *ctl)
{
    size_t n = strlen(ctl);
    for (const char *s = ctl_list; (s = strstr(s, ctl)); s += n)
        if ((s == ctl_list || s[-1] == ',') && (s[n] == ',' || !s[n]))
            return true;
    return false;
}

/* In text, the content of a /proc/PID/cgroup (changed: its lines and fields split), the path
 * (after its '/') of the first line for controllers: that very list when exact, else a v1 list
 * holding it; the v2 line ("0::") when controllers is NULL. *ret_list (when not NULL): the line's
 * controller list. NULL when no line matches. */
static char *cgroup_line(char *text, const char *controllers, bool exact, const char **ret_list)
{
    for (char *l = text, *next; l && *l; l = next) {
        next = strchr(l, '\n');
        if (next)
            *next++ = 0;
        char *c1 = strchr(l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/')
            continue;
        *c1 = *c2 = 0;
        bool match = !controllers ? streq(l, "0") && !c1[1]
                     : exact      ? streq(c1 + 1, controllers)
                                  : v1_is(c1 + 1, controllers);
        if (!match)
            continue;
        if (ret_list)
            *ret_list = c1 + 1;
        return c2 + 2;
    }
    return NULL;
}

/* The cgroup this process is in, from /proc/self/cgroup, without the leading '/' ("" at the
 * root): on the v2 hierarchy (controllers NULL: the "0::" line) or on the v1 hierarchy of
 * controllers ("cpu", "cpu,cpuacct": the list as the line has it). NULL when not listed. A
 * vmctl that moved itself into its tree's supervise/ leaf (below) is where it was before. */
static char *self_cgroup(const char *controllers)
{
    cleanup_free char *text = NULL;
    if (read_file("/proc/self/cgroup", &text, NULL) < 0)
        return NULL;
    char *p = cgroup_line(text, controllers, true, NULL);
    if (!p || str_startswith(p, "..")) /* outside this cgroup namespace's root: not ours */
        return NULL;
    size_t n = strlen(p), k = strlen(JAIL_CGROUP_DIR "/" JAIL_CGROUP_SELF);
    if (n >= k && streq(p + n - k, JAIL_CGROUP_DIR "/" JAIL_CGROUP_SELF) &&
        (n == k || p[n - k - 1] == '/'))
        p[n == k ? 0 : n - k - 1] = 0;
    return strdup(p);
}

/* Where this vmctl puts its VMs' cgroups on a hierarchy (relative to its root): the root when
 * systemd does not run the host, else the cgroup vmctl runs in (a unit's own subtree: systemd
 * owns the rest of the tree and delegates only that). */
static char *cgroup_base(const char *controllers)
{
    if (!under_systemd())
        return strdup("");
    char *b = self_cgroup(controllers);
    return b ? b : strdup("");
}

/* Whether the cgroup directory was delegated to its processes (systemd 251 and later mark a
 * Delegate=yes unit's cgroup with the trusted.delegate or user.delegate xattr "1"); the root is
 * ours when systemd does not run the host; VMCTL_CGROUP_DELEGATED=1 says so for an older
 * systemd. */
static bool cgroup_delegated(const char *dir, bool is_root)
{
    if (is_root)
        return !under_systemd();
    const char *e = getenv("VMCTL_CGROUP_DELEGATED");
    if (e && streq(e, "1"))
        return true;
    char v[8];
    static const char *const names[] = {"trusted.delegate", "user.delegate"};
    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        ssize_t n = getxattr(dir, names[i], v, sizeof(v) - 1);
        if (n > 0) {
            v[n] = 0;
            if (streq(v, "1"))
                return true;
        }
    }
    return false;
}

/* The directories of cgroup rel on each hierarchy (v1: one per controller mounted, each once;
 * v2: one) under the placement base, existing or not; *ret_bases the base directory of each
 * (the hierarchy's root or vmctl's own cgroup there). */
static int cgroup_dirs(const char *rel, char ***ret, char ***ret_bases, size_t *n)
{
    *ret = NULL;
    if (ret_bases)
        *ret_bases = NULL;
    *n = 0;
    cleanup_strv char **dirs = NULL, **bases = NULL;
    size_t k = 0, kb = 0;
    int kind = cgroup_kind();
    if (kind == CG_V2) {
        cleanup_free char *base = cgroup_base(NULL);
        if (!base || strv_pushf(&bases, &kb, CGROUP_ROOT "%s%s", *base ? "/" : "", base) < 0 ||
            strv_pushf(&dirs, &k, "%s/%s", bases[0], rel) < 0)
            return -ENOMEM;
    } else if (kind == CG_V1) {
        cleanup_strv char **seen = NULL;
        size_t ns = 0;
        for (size_t i = 0; i < ELEMENTSOF(v1_controllers); i++) {
            cleanup_free char *m = str_printf(CGROUP_ROOT "/%s", v1_controllers[i]);
            cleanup_free char *real = m ? realpath(m, NULL) : NULL;
            if (!real)
                continue;
            bool dup = false;
            for (size_t j = 0; j < ns; j++)
                dup = dup || streq(seen[j], real);
            if (dup)
                continue;
            cleanup_free char *base = cgroup_base(strrchr(real, '/') + 1);
            if (!base || strv_push(&seen, &ns, real) < 0 ||
                strv_pushf(&bases, &kb, "%s%s%s", real, *base ? "/" : "", base) < 0 ||
                strv_pushf(&dirs, &k, "%s/%s", bases[kb - 1], rel) < 0)
                return -ENOMEM;
        }
    } else
        return -EOPNOTSUPP;
    *ret = TAKE_PTR(dirs);
    if (ret_bases)
        *ret_bases = TAKE_PTR(bases);
    *n = k;
    return 0;
}

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    ssize_t w = write(fd, s, strlen(s));
    int e = w < 0 ? errno : 0;
    close(fd);
    return w < 0 ? -e : 0;
}

static int cg_write(const char *dir, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cg_write(const char *dir, const char *file, const char *fmt, ...)
{
    char val[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    cleanup_free char *p = str_printf("%s/%s", dir, file);
    return p ? write_str(p, val) : -ENOMEM;
}

static bool cg_has(const char *dir, const char *file)
{
    cleanup_free char *p = str_printf("%s/%s", dir, file);
    return p && access(p, F_OK) == 0;
}

/* Whether a cgroup's space-separated list file (cgroup.controllers, cgroup.subtree_control)
 * names word. */
static bool cg_list_has(const char *dir, const char *file, const char *word)
{
    cleanup_free char *p = str_printf("%s/%s", dir, file);
    cleanup_free char *text = NULL;
    if (!p || read_file(p, &text, NULL) < 0)
        return false;
    size_t n = strlen(word);
    for (const char *s = text; (s = strstr(s, word)); s += n)
        if ((s == text || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\n' || !s[n]))
            return true;
    return false;
}

/* A cgroup file's first number: "max" (no limit) and a missing file are false. */
static bool cg_read_u64(const char *dir, const char *file, uint64_t *ret)
{
    cleanup_free char *p = str_printf("%s/%s", dir, file);
    cleanup_free char *text = NULL;
    if (!p || read_file(p, &text, NULL) < 0)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno)
        return false;
    *ret = v;
    return true;
}

/* "key N" in a flat keyed file (cpu.stat, memory.events, memory.oom_control). */
static bool cg_read_key(const char *dir, const char *file, const char *key, uint64_t *ret)
{
    cleanup_free char *p = str_printf("%s/%s", dir, file);
    cleanup_free char *text = NULL;
    if (!p || read_file(p, &text, NULL) < 0)
        return false;
    size_t n = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, n) == 0 && l[n] == ' ') {
            *ret = strtoull(l + n + 1, NULL, 10);
            return true;
        }
    return false;
}

static int jailer_failed(vmctl_error **reterr, int step, int e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int jailer_failed(vmctl_error **reterr, int step, int e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_makev(reterr, VMCTL_E_JAILER_FAILED, e, fmt, ap);
    va_end(ap);
    err_detail(reterr, "step", "%s", jail_step_name(step));
    return r;
}

/* The basename of a v1 cgroup directory's controller mount ("cpu", "cpu,cpuacct", ...), in buf
 * (the caller's: `vmctl up` starts machines from several threads, and a shared static buffer
 * once gave one thread's memory directory another's "pids"). */
static const char *dir_controller(const char *dir, char buf[static 32])
{
    const char *p = dir + strlen(CGROUP_ROOT "/");
    size_t n = strcspn(p, "/");
    snprintf(buf, 32, "%.*s", (int)n, p);
    return buf;
}

static const char *const v2_controllers[] = {"cpu", "memory", "pids", "io"};

/* Enable, for the subtree of dir, each v2 controller dir has and has not enabled yet. -EBUSY
 * when dir has processes of its own (a non-root cgroup cannot then give controllers to its
 * children: the "no internal processes" rule). */
static int v2_enable(const char *dir)
{
    /* test hook: one more controller to hand down (test-jail-v2: this CI's v2 hierarchy has
     * hugetlb only, which lets it drive the "no internal processes" path for real) */
    const char *extra = getenv("VMCTL_TEST_CGROUP_CONTROLLER");
    const char *ctl[ELEMENTSOF(v2_controllers) + 1];
    size_t n = 0;
    for (size_t i = 0; i < ELEMENTSOF(v2_controllers); i++)
        ctl[n++] = v2_controllers[i];
    if (extra && *extra && !strpbrk(extra, " +-\n"))
        ctl[n++] = extra;
    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cg_list_has(dir, "cgroup.controllers", ctl[i]) ||
            cg_list_has(dir, "cgroup.subtree_control", ctl[i]))
            continue;
        int r = cg_write(dir, "cgroup.subtree_control", "+%s", ctl[i]);
        if (r == -EBUSY)
            ret = r;
    }
    return ret;
}

static int limit_failed(vmctl_error **reterr, const char *what, const char *dir, int e)
{
    int r = jailer_failed(reterr, JAIL_STEP_CGROUP_LIMIT, e, "cannot set the %s limit in '%s': %s",
                          what, dir, strerror(e));
    err_help(reterr, "`vmctl doctor` shows which limits this host can enforce; create the VM "
                     "with `--no-jail` to run it without any.");
    return r;
}

/* seen: the VMCTL_LIMIT_* set */
static int v1_limits(const jail_config *c, const char *ctl, const char *dir, unsigned *seen,
                     vmctl_error **reterr)
{
    int r = 0;
    if (v1_is(ctl, "cpu")) {
        *seen |= VMCTL_LIMIT_CPU;
        /* the group weighs what its busy threads (vCPUs + the main loop) weighed in the parent
         * group: being in a group of its own does not shrink the VM's share of a busy host */
        if ((r = cg_write(dir, "cpu.shares", "%u",
                          1024 * (c->weight_threads ? c->weight_threads : 1))) < 0 ||
            (r = cg_write(dir, "cpu.cfs_period_us", "%d", CPU_PERIOD)) < 0 ||
            (r = cg_write(dir, "cpu.cfs_quota_us", "%lld",
                          c->cpu_quota > 0 ? (long long)(c->cpu_quota * CPU_PERIOD) : -1LL)) < 0)
            return limit_failed(reterr, "cpu quota", dir, -r);
    }
    if (v1_is(ctl, "memory")) {
        *seen |= VMCTL_LIMIT_MEMORY;
        if (c->memory_bytes) {
            if ((r = cg_write(dir, "memory.limit_in_bytes", "%llu",
                              (unsigned long long)c->memory_bytes)) < 0)
                return limit_failed(reterr, "memory", dir, -r);
            /* no swap beyond it (where swap is accounted) */
            if (cg_has(dir, "memory.memsw.limit_in_bytes") &&
                (r = cg_write(dir, "memory.memsw.limit_in_bytes", "%llu",
                              (unsigned long long)c->memory_bytes)) < 0)
                return limit_failed(reterr, "memory+swap", dir, -r);
        }
    }
    if (v1_is(ctl, "pids")) {
        *seen |= VMCTL_LIMIT_PIDS;
        if (c->pids_max && (r = cg_write(dir, "pids.max", "%u", c->pids_max)) < 0)
            return limit_failed(reterr, "pids", dir, -r);
    }
    if (v1_is(ctl, "blkio")) {
        const char *f = cg_has(dir, "blkio.weight")       ? "blkio.weight"
                        : cg_has(dir, "blkio.bfq.weight") ? "blkio.bfq.weight"
                                                          : NULL;
        if (f && (r = cg_write(dir, f, "%u", JAIL_IO_WEIGHT)) < 0)
            return limit_failed(reterr, "disk I/O weight", dir, -r);
        if (f)
            *seen |= VMCTL_LIMIT_IO;
    }
    return 0;
}

/* Each limit whose file the group has (its controller enabled for it): no file, no limit. */
static int v2_limits(const jail_config *c, const char *dir, unsigned *seen, vmctl_error **reterr)
{
    int r;
    if (cg_has(dir, "cpu.max")) {
        *seen |= VMCTL_LIMIT_CPU;
        if (cg_has(dir, "cpu.weight") &&
            (r = cg_write(dir, "cpu.weight", "%u",
                          100 * (c->weight_threads ? c->weight_threads : 1))) < 0)
            return limit_failed(reterr, "cpu weight", dir, -r);
        if (c->cpu_quota > 0)
            r = cg_write(dir, "cpu.max", "%lld %d", (long long)(c->cpu_quota * CPU_PERIOD),
                         CPU_PERIOD);
        else
            r = cg_write(dir, "cpu.max", "max %d", CPU_PERIOD);
        if (r < 0)
            return limit_failed(reterr, "cpu quota", dir, -r);
    }
    if (cg_has(dir, "memory.max")) {
        *seen |= VMCTL_LIMIT_MEMORY;
        if (c->memory_bytes &&
            (r = cg_write(dir, "memory.max", "%llu", (unsigned long long)c->memory_bytes)) < 0)
            return limit_failed(reterr, "memory", dir, -r);
        if (c->memory_bytes && cg_has(dir, "memory.swap.max") &&
            (r = cg_write(dir, "memory.swap.max", "0")) < 0)
            return limit_failed(reterr, "swap", dir, -r);
    }
    if (cg_has(dir, "pids.max")) {
        *seen |= VMCTL_LIMIT_PIDS;
        if (c->pids_max && (r = cg_write(dir, "pids.max", "%u", c->pids_max)) < 0)
            return limit_failed(reterr, "pids", dir, -r);
    }
    const char *f = cg_has(dir, "io.weight")       ? "io.weight"
                    : cg_has(dir, "io.bfq.weight") ? "io.bfq.weight"
                                                   : NULL;
    if (f && (r = cg_write(dir, f, "default %u", JAIL_IO_WEIGHT)) < 0)
        return limit_failed(reterr, "disk I/O weight", dir, -r);
    if (f)
        *seen |= VMCTL_LIMIT_IO;
    return 0;
}

int jail_cgroup_limits(const jail_config *c, int version, const char *v1_ctl, const char *dir,
                       unsigned *seen, vmctl_error **reterr)
{
    return version == 2 ? v2_limits(c, dir, seen, reterr)
                        : v1_limits(c, v1_ctl ? v1_ctl : "", dir, seen, reterr);
}

/* rmdir, waiting (bounded) while the last process leaves. */
static int rmdir_wait(const char *dir)
{
    uint64_t deadline = now_usec() + 3000000;
    for (;;) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY || now_usec() >= deadline)
            return -errno;
        sleep_usec(5000);
    }
}

/* The OOM kills counted in a memory cgroup directory (v1 memory.oom_control, v2 memory.events). */
static unsigned long oom_kills(const char *dir)
{
    uint64_t k = 0;
    if (cg_read_key(dir, "memory.oom_control", "oom_kill", &k) ||
        cg_read_key(dir, "memory.events", "oom_kill", &k))
        return (unsigned long)k;
    return 0;
}

/* The VM's cgroup directories as jail_prepare recorded them (VM_FILE_JAIL_CGROUP): only lines
 * that are a cgroup of this VM (under CGROUP_ROOT, ending in its name, no "..": the file is in a
 * directory the VM's uid owns). */
static int recorded_dirs(const char *vmdir, const char *rel, char ***dirs, size_t *n)
{
    cleanup_free char *p = str_printf("%s/" VM_FILE_JAIL_CGROUP, vmdir);
    cleanup_free char *text = NULL;
    if (!p)
        return -ENOMEM;
    if (read_file(p, &text, NULL) < 0)
        return 0;
    size_t rl = strlen(rel) - strlen(JAIL_CGROUP_DIR "/");
    for (char *l = text, *next; l && *l; l = next) {
        next = strchr(l, '\n');
        if (next)
            *next++ = 0;
        if (!str_startswith(l, CGROUP_ROOT "/") || strstr(l, "/..") || strstr(l, "//") ||
            strlen(l) <= rl + 1 || !cgroup_is_vms(l, rel))
            continue;
        if (strv_push(dirs, n, l) < 0)
            return -ENOMEM;
    }
    return 0;
}

int jail_cgroup_remove(const char *vmdir)
{
    cleanup_free char *rel = jail_cgroup_name(vmdir);
    if (!rel)
        return -ENOMEM;
    /* the VM's systemd scope, where it has one: stopped (systemd kills what is left in it and
     * removes its cgroups) */
    cleanup_free char *scope_file = str_printf("%s/" VM_FILE_JAIL_SCOPE, vmdir);
    bool scoped = scope_file && access(scope_file, F_OK) == 0;
    if (scoped && jail_systemd_running()) { /* (no systemd any more: no scope either) */
        cleanup_free char *unit = jail_scope_name(vmdir);
        if (!unit || jail_scope_stop(unit, 5000000) < 0)
            return -EBUSY;
    }
    /* where it was made (recorded), where this vmctl would make it, and the root (vmctl before
     * the record, or the record lost) */
    cleanup_strv char **dirs = NULL;
    size_t n = 0;
    if (recorded_dirs(vmdir, rel, &dirs, &n) < 0)
        return -ENOMEM;
    {
        cleanup_strv char **mine = NULL;
        size_t k = 0;
        if (cgroup_dirs(rel, &mine, NULL, &k) == 0)
            for (size_t i = 0; i < k; i++)
                if (strv_push(&dirs, &n, mine[i]) < 0)
                    return -ENOMEM;
        /* (and vmctl.slice/, where vmctl before this put them under systemd) */
        const char *leaf = rel + strlen(JAIL_CGROUP_DIR "/");
        if (cgroup_kind() == CG_V2 &&
            (strv_pushf(&dirs, &n, CGROUP_ROOT "/%s", rel) < 0 ||
             strv_pushf(&dirs, &n, CGROUP_ROOT "/vmctl.slice/%s", leaf) < 0))
            return -ENOMEM;
        for (size_t i = 0; cgroup_kind() == CG_V1 && i < ELEMENTSOF(v1_controllers); i++)
            if (strv_pushf(&dirs, &n, CGROUP_ROOT "/%s/%s", v1_controllers[i], rel) < 0 ||
                strv_pushf(&dirs, &n, CGROUP_ROOT "/%s/vmctl.slice/%s", v1_controllers[i], leaf) <
                    0)
                return -ENOMEM;
    }
    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        if (access(dirs[i], F_OK) < 0)
            continue;
        unsigned long kills = oom_kills(dirs[i]);
        if (kills) {
            cleanup_free char *p = str_printf("%s/" VM_FILE_JAIL_OOM, vmdir);
            cleanup_free char *line = str_printf("oom_kill %lu\n", kills);
            if (p && line)
                (void)write_file_atomic(p, line, strlen(line), 0600);
        }
        int r = rmdir_wait(dirs[i]);
        if (r < 0)
            ret = r;
        const char *leaf = strrchr(dirs[i], '/');
        if (leaf && strlen(leaf) > 6 && streq(leaf + strlen(leaf) - 6, ".scope"))
            continue; /* a scope: its slice is systemd's */
        /* vmctl/ too once it is empty (another VM's group keeps it), with vmctl's own leaf
         * once no vmctl process is left in it */
        char *slash = strrchr(dirs[i], '/');
        if (r >= 0 && slash) {
            *slash = 0;
            cleanup_free char *self = str_printf("%s/" JAIL_CGROUP_SELF, dirs[i]);
            if (self && rmdir(self) < 0 && errno == EBUSY)
                continue;
            (void)rmdir(dirs[i]);
        }
    }
    if (ret == 0) {
        cleanup_free char *p = str_printf("%s/" VM_FILE_JAIL_CGROUP, vmdir);
        if (p)
            (void)unlink(p);
        if (scoped)
            (void)unlink(scope_file);
    }
    return ret;
}

/* The cgroup process pid is in on one hierarchy, from /proc/PID/cgroup: v2 (controller NULL)
 * or the v1 line listing controller. The directory under CGROUP_ROOT, and the path within the
 * hierarchy (no leading '/'). */
static int proc_cgroup(pid_t pid, const char *controller, char **ret_dir, char **ret_path)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    cleanup_free char *text = NULL;
    int r = read_file(path, &text, NULL);
    if (r < 0)
        return r;
    const char *list = NULL;
    const char *p = cgroup_line(text, controller, false, &list);
    if (!p)
        return -ENOENT;
    *ret_path = strdup(p);
    *ret_dir =
        controller ? str_printf(CGROUP_ROOT "/%s/%s", list, p) : str_printf(CGROUP_ROOT "/%s", p);
    if (!*ret_path || !*ret_dir) {
        free(*ret_path);
        free(*ret_dir);
        *ret_path = *ret_dir = NULL;
        return -ENOMEM;
    }
    return 0;
}

int jail_cgroup_read(pid_t pid, const char *vmdir, unsigned wanted, jail_cgroup_info *out)
{
    *out = (jail_cgroup_info){0};
    cleanup_free char *rel = jail_cgroup_name(vmdir);
    if (!rel)
        return -ENOMEM;
    int kind = cgroup_kind();
    if (kind == CG_NONE)
        return -EOPNOTSUPP;
    /* one directory per role: cpu (v1 cpu), cpu time (v1 cpuacct), memory, pids */
    static const char *const v1[] = {"cpu", "cpuacct", "memory", "pids"};
    char *dirs[4] = {NULL, NULL, NULL, NULL};
    int r = 0;
    for (size_t i = 0; i < 4 && r >= 0; i++) {
        cleanup_free char *path = NULL;
        r = proc_cgroup(pid, kind == CG_V2 ? NULL : v1[i], &dirs[i], &path);
        if (r == -ENOENT) {
            r = 0;
            continue;
        }
        bool ours = r >= 0 && path && cgroup_is_vms(path, rel);
        if (r >= 0 && !ours) { /* not in the VM's group on this hierarchy */
            free(dirs[i]);
            dirs[i] = NULL;
        } else if (r >= 0 && (!out->path || i == 2)) {
            free(out->path);
            out->path = TAKE_PTR(path);
        }
    }
    if (r < 0 || !out->path) {
        for (size_t i = 0; i < 4; i++)
            free(dirs[i]);
        jail_cgroup_info_clear(out);
        return r < 0 ? r : -ENOENT;
    }
    out->version = kind == CG_V2 ? 2 : 1;
    const char *cpu = dirs[0], *acct = dirs[1], *mem = dirs[2], *pids = dirs[3];
    uint64_t v = 0, p = 0;
    if (kind == CG_V2) {
        /* cpu.stat's usage is the core's: there without the cpu controller */
        if (cpu && cg_read_key(cpu, "cpu.stat", "usage_usec", &v)) {
            out->cpu_usec = v;
            out->have_cpu_usage = true;
        }
        if (cpu && cg_has(cpu, "cpu.max")) {
            out->enforced |= VMCTL_LIMIT_CPU;
            cleanup_free char *t = str_printf("%s/cpu.max", cpu);
            cleanup_free char *text = NULL;
            if (t && read_file(t, &text, NULL) >= 0 &&
                sscanf(text, "%" SCNu64 " %" SCNu64, &v, &p) == 2 && p)
                out->cpu_quota = (double)v / (double)p;
        }
        if (mem && cg_read_u64(mem, "memory.current", &v)) {
            out->memory_bytes = v;
            out->have_memory = true;
        }
        if (mem && cg_read_u64(mem, "memory.max", &v)) {
            out->memory_limit = v;
            out->enforced |= VMCTL_LIMIT_MEMORY;
        }
        if (mem && cg_read_key(mem, "memory.events", "oom_kill", &v))
            out->oom_kills = v;
        if (cpu && (cg_has(cpu, "io.weight") || cg_has(cpu, "io.bfq.weight")))
            out->enforced |= VMCTL_LIMIT_IO;
    } else {
        if (acct && cg_read_u64(acct, "cpuacct.usage", &v)) {
            out->cpu_usec = v / 1000;
            out->have_cpu_usage = true;
        }
        /* a systemd scope on hybrid v1 has no cpuacct group (systemd realizes none there since
         * the unified hierarchy's cpu.stat counts the time): read that */
        cleanup_free char *udir = NULL, *upath = NULL;
        if (!out->have_cpu_usage && cgroup_hybrid() && proc_cgroup(pid, NULL, &udir, &upath) >= 0 &&
            cgroup_is_vms(upath, rel)) {
            cleanup_free char *u = str_printf(CGROUP_ROOT "/unified/%s", upath);
            if (u && cg_read_key(u, "cpu.stat", "usage_usec", &v)) {
                out->cpu_usec = v;
                out->have_cpu_usage = true;
            }
        }
        if (cpu && cg_read_u64(cpu, "cpu.cfs_period_us", &p) && p) {
            out->enforced |= VMCTL_LIMIT_CPU;
            cleanup_free char *t = str_printf("%s/cpu.cfs_quota_us", cpu);
            cleanup_free char *text = NULL;
            long long q = t && read_file(t, &text, NULL) >= 0 ? strtoll(text, NULL, 10) : -1;
            if (q > 0) /* -1: none */
                out->cpu_quota = (double)q / (double)p;
        }
        if (mem && cg_read_u64(mem, "memory.usage_in_bytes", &v)) {
            out->memory_bytes = v;
            out->have_memory = true;
        }
        /* v1 has no "max": no limit reads as the largest page-aligned value */
        if (mem && cg_read_u64(mem, "memory.limit_in_bytes", &v) && v < (UINT64_C(1) << 62)) {
            out->memory_limit = v;
            out->enforced |= VMCTL_LIMIT_MEMORY;
        }
        if (mem)
            out->oom_kills = oom_kills(mem);
    }
    if (pids && cg_read_u64(pids, "pids.current", &v)) {
        out->pids = v;
        out->have_pids = true;
    }
    if (pids && cg_read_u64(pids, "pids.max", &v)) {
        out->pids_limit = v;
        out->enforced |= VMCTL_LIMIT_PIDS;
    }
    out->unenforced = wanted & ~out->enforced;
    for (size_t i = 0; i < 4; i++)
        free(dirs[i]);
    return 0;
}

void jail_cgroup_info_clear(jail_cgroup_info *i)
{
    if (!i)
        return;
    free(i->path);
    i->path = NULL;
}

/* ---------- the plan ---------- */

enum { M_DIR_RO, M_DIR_RW, M_FILE_RO, M_FILE_RW, M_DEV, M_SYMLINK };

typedef struct jail_mount {
    int kind;
    char *src; /* M_SYMLINK: the link's target */
    char *dst; /* absolute, under root */
} jail_mount;

struct jail {
    char *root; /* the tmpfs mount point (VM_FILE_JAIL_ROOT in the VM directory) */
    char *hostname;
    jail_mount *m;
    size_t n, cap;
    char **procs; /* cgroup.procs of each controller directory */
    size_t n_procs;
    /* under systemd: the scope's first process, holding it until the hypervisor has joined it
     * (a scope with no process left is stopped), and the pipe whose closing ends it */
    pid_t scope_holder;
    int scope_fd;
    uid_t uid;
    gid_t groups[2]; /* the kvm group, a template's group */
    size_t n_groups;
};

uid_t jail_uid(const jail *j)
{
    return j ? j->uid : 0;
}

void jail_free(jail *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        free(j->m[i].src);
        free(j->m[i].dst);
    }
    free(j->m);
    strv_free(j->procs);
    if (j->scope_holder > 0) {
        close(j->scope_fd);
        while (waitpid(j->scope_holder, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    free(j->root);
    free(j->hostname);
    free(j);
}

static int add_mount(jail *j, int kind, const char *src, const char *path)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        jail_mount *m = realloc(j->m, cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        j->m = m;
        j->cap = cap;
    }
    char *s = strdup(src), *d = str_printf("%s%s", j->root, path);
    if (!s || !d) {
        free(s);
        free(d);
        return -ENOMEM;
    }
    j->m[j->n++] = (jail_mount){kind, s, d};
    return 0;
}

/* A top-level host path as it is: a symlink (merged /usr: /lib -> usr/lib) or a read-only
 * directory; nothing when missing. */
static int add_top(jail *j, const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t k = readlink(path, target, sizeof(target) - 1);
        if (k <= 0)
            return 0;
        target[k] = 0;
        return add_mount(j, M_SYMLINK, target, path);
    }
    return S_ISDIR(st.st_mode) ? add_mount(j, M_DIR_RO, path, path) : 0;
}

static int chown_vm_dir(const jail_config *c, vmctl_error **reterr)
{
    cleanup_close int dfd = open(c->vmdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0 || fchown(dfd, c->uid, c->uid) < 0 || fchmod(dfd, 0700) < 0)
        return jailer_failed(reterr, JAIL_STEP_OWNERSHIP, errno,
                             "cannot give vm directory '%s' to uid %u: %s", c->vmdir,
                             (unsigned)c->uid, strerror(errno));
    /* what the hypervisor writes: the disk, the console log (the sockets and the pid file it
     * makes itself; its own log and the exit record are written through root's descriptors) */
    static const char *const files[] = {VM_FILE_DISK, VM_FILE_ROOTFS, VM_FILE_CONSOLE_LOG,
                                        VM_FILE_SEED};
    for (size_t i = 0; i < ELEMENTSOF(files); i++)
        if (fchownat(dfd, files[i], c->uid, c->uid, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT)
            return jailer_failed(reterr, JAIL_STEP_OWNERSHIP, errno,
                                 "cannot give '%s/%s' to uid %u: %s", c->vmdir, files[i],
                                 (unsigned)c->uid, strerror(errno));
    /* the empty directory the root tmpfs is mounted on: ours, a directory (the VM's uid owns
     * the VM directory and may have replaced it between runs) */
    struct stat st;
    if (fstatat(dfd, VM_FILE_JAIL_ROOT, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        (!S_ISDIR(st.st_mode) || st.st_uid != 0))
        (void)(unlinkat(dfd, VM_FILE_JAIL_ROOT, 0) < 0 &&
               unlinkat(dfd, VM_FILE_JAIL_ROOT, AT_REMOVEDIR));
    if (mkdirat(dfd, VM_FILE_JAIL_ROOT, 0700) < 0 && errno != EEXIST)
        return jailer_failed(reterr, JAIL_STEP_ROOT, errno, "cannot make '%s/%s': %s", c->vmdir,
                             VM_FILE_JAIL_ROOT, strerror(errno));
    return 0;
}

/* Record the VM's cgroup directories in its directory (root's, 0600; not following what the
 * VM's uid may have put there), for their removal by a vmctl that runs elsewhere. */
static int record_dirs(const char *vmdir, char **dirs, size_t n)
{
    cleanup_close int dfd = open(vmdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0)
        return -errno;
    static const char tmp[] = VM_FILE_JAIL_CGROUP ".tmp";
    (void)unlinkat(dfd, tmp, 0);
    cleanup_close int fd =
        openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    for (size_t i = 0; i < n; i++)
        if (dprintf(fd, "%s\n", dirs[i]) < 0)
            return -EIO;
    return renameat(dfd, tmp, dfd, VM_FILE_JAIL_CGROUP) < 0 ? -errno : 0;
}

/* mkdir of a cgroup's parent (vmctl/) and then of the cgroup: a removal of the last VM's group
 * may take the parent away in between, so again then. */
static int cg_mkdir(const char *dir, vmctl_error **reterr)
{
    cleanup_free char *parent = strdup(dir);
    char *slash = parent ? strrchr(parent, '/') : NULL;
    if (!slash)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    *slash = 0;
    for (int attempt = 0;; attempt++) {
        if (mkdir(parent, 0755) < 0 && errno != EEXIST)
            return jailer_failed(reterr, JAIL_STEP_CGROUP_CREATE, errno,
                                 "cannot create cgroup '%s': %s", parent, strerror(errno));
        if (mkdir(dir, 0755) == 0 || errno == EEXIST)
            return 0;
        if (errno != ENOENT || attempt == 3)
            return jailer_failed(reterr, JAIL_STEP_CGROUP_CREATE, errno,
                                 "cannot create cgroup '%s': %s", dir, strerror(errno));
    }
}

/* v2 under a base that is not the root (vmctl's own cgroup, systemd's unit): the controllers
 * go to vmctl/ only if the base has no processes of its own. In a delegated base, vmctl moves
 * itself (and so the supervisors it spawns) into the leaf vmctl/supervise first, as systemd's
 * delegation rules ask; a base that is not delegated is not touched (what it cannot give is not
 * enforced, and said so). */
static void v2_enable_base(const char *base, bool is_root)
{
    if (is_root) {
        (void)v2_enable(base);
        return;
    }
    if (v2_enable(base) != -EBUSY || !cgroup_delegated(base, false))
        return;
    cleanup_free char *self = str_printf("%s/" JAIL_CGROUP_DIR "/" JAIL_CGROUP_SELF, base);
    cleanup_error vmctl_error *e = NULL;
    if (!self || cg_mkdir(self, &e) < 0 || cg_write(self, "cgroup.procs", "0") < 0)
        return;
    (void)v2_enable(base);
}

/* The directories of the scope unit that process pid is in, from /proc/PID/cgroup: each
 * hierarchy's line whose path ends in the unit (systemd's name=systemd and unified ones too: the
 * hypervisor joins the scope on each, as systemd tracks it there). */
static int scope_dirs(pid_t pid, const char *unit, char ***ret, size_t *n)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    cleanup_free char *text = NULL;
    int r = read_file(path, &text, NULL);
    if (r < 0)
        return r;
    size_t ul = strlen(unit);
    for (char *l = text, *next; l && *l; l = next) {
        next = strchr(l, '\n');
        if (next)
            *next++ = 0;
        char *c1 = strchr(l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/')
            continue;
        *c1 = *c2 = 0;
        const char *p = c2 + 1, *ctl = c1 + 1;
        size_t len = strlen(p);
        if (len <= ul || p[len - ul - 1] != '/' || !streq(p + len - ul, unit) || strstr(p, "/.."))
            continue;
        cleanup_free char *dir = NULL;
        if (streq(l, "0") && !*ctl)
            dir = str_printf(CGROUP_ROOT "%s%s", cgroup_kind() == CG_V2 ? "" : "/unified", p);
        else if (str_startswith(ctl, "name="))
            dir = str_printf(CGROUP_ROOT "/%s%s", ctl + 5, p);
        else
            dir = str_printf(CGROUP_ROOT "/%s%s", ctl, p);
        if (!dir)
            return -ENOMEM;
        if (access(dir, F_OK) < 0 && strchr(ctl, ',')) { /* "cpu,cpuacct" mounted as cpu/ */
            free(dir);
            dir = str_printf(CGROUP_ROOT "/%.*s%s", (int)strcspn(ctl, ","), ctl, p);
            if (!dir)
                return -ENOMEM;
        }
        if (access(dir, F_OK) < 0)
            continue;
        if (strv_push(ret, n, dir) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* The end of a VM's cgroup setup (its own groups, or its systemd scope when unit is set): the
 * directories recorded in the VM directory (a vmctl in another cgroup removes them), and a limit
 * asked for (--cpu-quota) that the host cannot enforce fails the start; the default ceilings
 * (memory, pids) go where the controller is, and status and doctor say where it is not. */
static int cgroup_finish(const jail_config *c, char **dirs, size_t n, unsigned seen,
                         const char *unit, vmctl_error **reterr)
{
    int r = record_dirs(c->vmdir, dirs, n);
    if (r < 0)
        return jailer_failed(reterr, JAIL_STEP_CGROUP_CREATE, -r,
                             "cannot record the cgroup of vm '%s' in '%s': %s", c->name, c->vmdir,
                             strerror(-r));
    if (c->cpu_quota > 0 && !(seen & VMCTL_LIMIT_CPU)) {
        if (unit)
            r = jailer_failed(reterr, JAIL_STEP_CGROUP_LIMIT, EOPNOTSUPP,
                              "this host gives the vm's scope '%s' no cpu controller for its cpu "
                              "quota (--cpu-quota %g)",
                              unit, c->cpu_quota);
        else
            r = jailer_failed(reterr, JAIL_STEP_CGROUP_LIMIT, EOPNOTSUPP,
                              "this host gives the vm's cgroup no cpu controller for its cpu "
                              "quota (--cpu-quota %g)",
                              c->cpu_quota);
        err_help(reterr, "`vmctl doctor` shows which limits this host can enforce; enable the "
                         "cpu controller (under systemd: run vmctl in a unit with Delegate=yes), "
                         "or create the VM without --cpu-quota.");
        return r;
    }
    return 0;
}

/* Under systemd: the VM's own transient scope, vmctl-NAME-HASH.scope in vmctl.slice, with
 * Delegate=yes and the limits as its properties (docs/isolation.md). Its first process is a
 * holder forked here, which stays until the hypervisor has joined the scope's cgroups (jail_enter,
 * before exec, as with vmctl's own groups: the hypervisor never runs outside its limits). */
static int prepare_scope(const jail_config *c, jail *j, vmctl_error **reterr)
{
    cleanup_free char *unit = jail_scope_name(c->vmdir);
    cleanup_free char *marker = str_printf("%s/" VM_FILE_JAIL_SCOPE, c->vmdir);
    if (!unit || !marker)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    /* the marker first: a failure from here on is cleaned up by stopping the unit */
    int r = write_file_atomic(marker, unit, strlen(unit), 0600);
    if (r < 0)
        return jailer_failed(reterr, JAIL_STEP_SYSTEMD_SCOPE, -r,
                             "cannot record the scope of vm '%s' in '%s': %s", c->name, c->vmdir,
                             strerror(-r));
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return jailer_failed(reterr, JAIL_STEP_SYSTEMD_SCOPE, errno, "cannot make a pipe: %s",
                             strerror(errno));
    pid_t h = fork();
    if (h == 0) {
        char x;
        close(p[1]);
        while (read(p[0], &x, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(p[0]);
    if (h < 0) {
        close(p[1]);
        return jailer_failed(reterr, JAIL_STEP_SYSTEMD_SCOPE, errno, "cannot fork: %s",
                             strerror(errno));
    }
    j->scope_holder = h;
    j->scope_fd = p[1];
    cleanup_free char *desc = str_printf("vmctl vm %s (%s)", c->name, c->vmdir);
    unsigned threads = c->weight_threads ? c->weight_threads : 1;
    jail_scope_props props = {
        .unit = unit,
        .slice = JAIL_SCOPE_SLICE,
        .description = desc,
        .pid = h,
        .cpu_quota = c->cpu_quota,
        .cpu_weight = threads * 100 > 10000 ? 10000 : threads * 100,
        .memory_max = c->memory_bytes,
        .tasks_max = c->pids_max,
    };
    if ((r = jail_scope_start(&props, 5000000, reterr)) < 0)
        return r;
    cleanup_strv char **dirs = NULL;
    size_t n = 0;
    if ((r = scope_dirs(h, unit, &dirs, &n)) < 0 || n == 0)
        return jailer_failed(reterr, JAIL_STEP_SYSTEMD_SCOPE, r < 0 ? -r : ENOENT,
                             "the systemd scope '%s' of vm '%s' has no cgroup to join", unit,
                             c->name);
    /* the limits systemd does not set (v1 memsw, the I/O weight) in the delegated scope, the
     * others again as they are (the same values) */
    unsigned seen = 0;
    for (size_t i = 0; i < n; i++) {
        bool v2 = cgroup_kind() == CG_V2 || str_startswith(dirs[i], CGROUP_ROOT "/unified/");
        char ctlbuf[32];
        if ((r = jail_cgroup_limits(c, v2 ? 2 : 1, v2 ? NULL : dir_controller(dirs[i], ctlbuf),
                                    dirs[i], &seen, reterr)) < 0)
            return r;
        if (strv_pushf(&j->procs, &j->n_procs, "%s/cgroup.procs", dirs[i]) < 0)
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    return cgroup_finish(c, dirs, n, seen, unit, reterr);
}

static int prepare_cgroup(const jail_config *c, jail *j, vmctl_error **reterr)
{
    /* under systemd with its manager answering: a transient scope; else vmctl's own groups
     * (doctor says why) */
    if (jail_systemd_running() && jail_systemd_probe(NULL) == 0)
        return prepare_scope(c, j, reterr);

    cleanup_free char *rel = jail_cgroup_name(c->vmdir);
    cleanup_strv char **dirs = NULL, **bases = NULL;
    size_t n = 0;
    if (!rel)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    int kind = cgroup_kind();
    int r = cgroup_dirs(rel, &dirs, &bases, &n);
    if (r < 0) {
        r = jailer_failed(reterr, JAIL_STEP_CGROUP_CREATE, -r,
                          "no cgroup hierarchy is mounted at " CGROUP_ROOT);
        err_help(reterr, "Mount cgroup2 (or the v1 controllers) on " CGROUP_ROOT
                         ", or create the VM with `--no-jail`.");
        return r;
    }
    unsigned seen = 0;
    for (size_t i = 0; i < n; i++) {
        /* a stale directory of a VM that is gone: removed first (an occupied one is in use:
         * another VM of this directory runs, which the VM lock excludes) */
        (void)rmdir(dirs[i]);
        if (kind == CG_V2)
            v2_enable_base(bases[i], streq(bases[i], CGROUP_ROOT));
        if ((r = cg_mkdir(dirs[i], reterr)) < 0)
            return r;
        if (kind == CG_V2) {
            /* vmctl/ hands the controllers down (after the group is made: a removal of the
             * last VM's group may have taken vmctl/ away and cg_mkdir made it again; enabling
             * reaches the children there already) */
            cleanup_free char *top = str_printf("%s/" JAIL_CGROUP_DIR, bases[i]);
            if (!top)
                return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
            (void)v2_enable(top);
        }
        char ctlbuf[32];
        r = jail_cgroup_limits(c, kind == CG_V2 ? 2 : 1,
                               kind == CG_V2 ? NULL : dir_controller(dirs[i], ctlbuf), dirs[i],
                               &seen, reterr);
        if (r < 0)
            return r;
        if (strv_pushf(&j->procs, &j->n_procs, "%s/cgroup.procs", dirs[i]) < 0)
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    return cgroup_finish(c, dirs, n, seen, NULL, reterr);
}

/* Whether "/" is the root of a mount: not in a chroot into a plain directory. The jail makes
 * every mount of its namespace private from "/" down (so nothing it mounts propagates to the
 * host), which the kernel refuses (EINVAL) on a directory that is not a mount's root. */
bool jail_root_is_mount(void)
{
    struct statx stx;
    if (statx(AT_FDCWD, "/", 0, STATX_BASIC_STATS, &stx) < 0 ||
        !(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
        return true; /* the kernel cannot say: let the jail's own step report it */
    return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

/* Whether the capabilities the jail needs are in our effective set (a root in a container
 * without CAP_SYS_ADMIN, as Docker's default, has uid 0 and cannot make namespaces). */
static bool have_caps(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return true; /* cannot tell: the jail's own steps report it */
    char line[256];
    unsigned long long eff = ~0ull;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "CapEff: %llx", &eff) == 1)
            break;
    fclose(f);
    static const int need[] = {CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID, CAP_CHOWN};
    for (size_t i = 0; i < ELEMENTSOF(need); i++)
        if (!(eff & (1ull << need[i])))
            return false;
    return true;
}

const char *jail_unavailable(void)
{
    if (!jail_root_is_mount())
        return "the root directory is not a mount point (a chroot); bind-mount it onto itself "
               "first to jail VMs";
    if (!have_caps())
        return "vmctl lacks CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID or CAP_CHOWN (a container "
               "without them?); give it those to jail VMs";
    return NULL;
}

#define ROOT_NOT_MOUNT_HELP                                                                        \
    "vmctl runs in a chroot whose root is a plain directory: bind-mount it onto itself before "    \
    "the chroot (`mount --bind DIR DIR`), as a booted machine or a container has it, or create "   \
    "the VM with `--no-jail`."

int jail_prepare(const jail_config *c, jail **ret, vmctl_error **reterr)
{
    if (!c || !c->name || !c->vmdir || c->vmdir[0] != '/' || !c->binary || !ret || !c->uid)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "jail_prepare: invalid arguments");
    jail *j = calloc(1, sizeof(*j));
    if (!j)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    cleanup_jail jail *owned = j;
    if (!jail_root_is_mount()) {
        int r = jailer_failed(reterr, JAIL_STEP_MOUNT_PRIVATE, EINVAL,
                              "cannot jail '%s': the root directory is not a mount point, so "
                              "the jail's mounts cannot be kept private",
                              c->binary);
        err_help(reterr, ROOT_NOT_MOUNT_HELP);
        return r;
    }
    j->uid = c->uid;
    j->root = str_printf("%s/" VM_FILE_JAIL_ROOT, c->vmdir);
    j->hostname = strdup(c->name);
    if (!j->root || !j->hostname)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    int r = chown_vm_dir(c, reterr);
    if (r < 0)
        return r;
    if ((r = prepare_cgroup(c, j, reterr)) < 0)
        return r;

    /* the hypervisor's binary, libraries and firmware (/usr/share/qemu, /usr/share/seabios) */
    static const char *const tops[] = {"/usr",   "/bin",   "/sbin",  "/lib",
                                       "/lib32", "/lib64", "/libx32"};
    for (size_t i = 0; i < ELEMENTSOF(tops) && r >= 0; i++)
        r = add_top(j, tops[i]);
    if (r >= 0 && access("/etc/ld.so.cache", F_OK) == 0)
        r = add_mount(j, M_FILE_RO, "/etc/ld.so.cache", "/etc/ld.so.cache");
    /* user-mode networking's DNS forwarder (libslirp) reads the host's resolvers */
    if (r >= 0 && access("/etc/resolv.conf", R_OK) == 0)
        r = add_mount(j, M_FILE_RO, "/etc/resolv.conf", "/etc/resolv.conf");
    if (r >= 0 && !str_startswith(c->binary, "/usr/"))
        r = add_mount(j, M_FILE_RO, c->binary, c->binary);
    static const char *const devs[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                       "/dev/urandom"};
    for (size_t i = 0; i < ELEMENTSOF(devs) && r >= 0; i++)
        r = add_mount(j, M_DEV, devs[i], devs[i]);
    if (r >= 0 && c->kvm && access("/dev/kvm", F_OK) == 0) {
        r = add_mount(j, M_DEV, "/dev/kvm", "/dev/kvm");
        struct stat st;
        if (stat("/dev/kvm", &st) == 0 && st.st_gid != 0) {
            j->groups[j->n_groups++] = st.st_gid; /* the device is 0660 root:kvm */
        }
    }
    /* the VM directory (sockets, disk, logs), then the read-only files in or out of it */
    if (r >= 0)
        r = add_mount(j, M_DIR_RW, c->vmdir, c->vmdir);
    for (const char *const *f = c->ro_files; f && *f && r >= 0; f++)
        r = add_mount(j, M_FILE_RO, *f, *f);
    if (r >= 0 && c->ram_file)
        r = add_mount(j, M_FILE_RW, c->ram_file, c->ram_file);
    if (c->ram_gid)
        j->groups[j->n_groups++] = c->ram_gid;
    if (r < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, -r, "out of memory");
    *ret = TAKE_PTR(owned);
    return 0;
}

/* ---------- in the child: system calls only ---------- */

/* mkdir -p of path's components up to (not including) the last when parent_only. */
static int mkdirs(const char *path, bool parent_only)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0)
            continue;
        if (buf[i] == 0 && parent_only)
            break;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = c;
    }
    return 0;
}

static int bind(const jail_mount *m)
{
    unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV;
    switch (m->kind) {
    case M_SYMLINK: {
        int r = mkdirs(m->dst, true);
        if (r < 0)
            return r;
        return symlink(m->src, m->dst) < 0 && errno != EEXIST ? -errno : 0;
    }
    case M_DIR_RO:
    case M_DIR_RW: {
        int r = mkdirs(m->dst, false);
        if (r < 0)
            return r;
        break;
    }
    default: {
        int r = mkdirs(m->dst, true);
        if (r < 0)
            return r;
        int fd = open(m->dst, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
        if (fd < 0)
            return -errno;
        close(fd);
    }
    }
    if (mount(m->src, m->dst, NULL, MS_BIND | (m->kind == M_DIR_RO ? MS_REC : 0), NULL) < 0)
        return -errno;
    unsigned long flags = m->kind == M_DIR_RW    ? MS_NOSUID | MS_NODEV
                          : m->kind == M_FILE_RW ? MS_NOSUID | MS_NODEV | MS_NOEXEC
                          : m->kind == M_DEV     ? MS_NOSUID | MS_NOEXEC
                                                 : ro;
    if (mount(NULL, m->dst, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
        return -errno;
    return 0;
}

int jail_unshare_pid(void)
{
    return unshare(CLONE_NEWPID) < 0 ? -errno : 0;
}

#define FAIL(step)                                                                                 \
    do {                                                                                           \
        *ret_step = (step);                                                                        \
        return -errno;                                                                             \
    } while (0)

int jail_enter(const jail *j, int *ret_step)
{
    /* the cgroup first: its limits hold from the first page the hypervisor touches ("0" is the
     * writer itself, whatever pid namespace it is in) */
    for (size_t i = 0; i < j->n_procs; i++) {
        int fd = open(j->procs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            errno = e;
            FAIL(JAIL_STEP_CGROUP_JOIN);
        }
        close(fd);
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        FAIL(JAIL_STEP_NAMESPACES);
    if (sethostname(j->hostname, strlen(j->hostname)) < 0)
        FAIL(JAIL_STEP_HOSTNAME);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        FAIL(JAIL_STEP_MOUNT_PRIVATE);
    if (mount("tmpfs", j->root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m") < 0)
        FAIL(JAIL_STEP_ROOT);
    /* the root's directories 0755 whatever the spawn's umask (0177: the sockets) */
    mode_t old_umask = umask(022);
    for (size_t i = 0; i < j->n; i++) {
        int r = bind(&j->m[i]);
        if (r < 0) {
            errno = -r;
            FAIL(JAIL_STEP_BIND);
        }
    }
    {
        char proc[PATH_MAX];
        size_t n = strlen(j->root);
        if (n + sizeof("/proc") > sizeof(proc)) {
            errno = ENAMETOOLONG;
            FAIL(JAIL_STEP_PROC);
        }
        memcpy(proc, j->root, n);
        memcpy(proc + n, "/proc", sizeof("/proc"));
        if ((mkdir(proc, 0555) < 0 && errno != EEXIST) ||
            mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            FAIL(JAIL_STEP_PROC);
    }
    umask(old_umask);
    if (chdir(j->root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        FAIL(JAIL_STEP_PIVOT);
    /* the root itself read-only: nothing to write but the VM directory */
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL) < 0)
        FAIL(JAIL_STEP_PIVOT);

    /* no capability can come back: the bounding and ambient sets emptied, then the uid drop
     * clears the permitted and effective ones, no-new-privileges keeps exec from adding any */
    for (int cap = 0; cap < 64; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            FAIL(JAIL_STEP_CAPABILITIES);
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (setgroups(j->n_groups, j->groups) < 0)
        FAIL(JAIL_STEP_GROUPS);
    if (setresgid(j->uid, j->uid, j->uid) < 0 || setresuid(j->uid, j->uid, j->uid) < 0)
        FAIL(JAIL_STEP_UID);
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capset, &hdr, data) < 0)
        FAIL(JAIL_STEP_CAPABILITIES);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        FAIL(JAIL_STEP_NO_NEW_PRIVS);
    return 0;
}

/* ---------- doctor ---------- */

char *jail_host_summary(bool *ret_ok, const char **ret_help)
{
    *ret_help = NULL;
    if (geteuid() != 0) {
        *ret_ok = false;
        *ret_help = "Run vmctl as root to jail each VM's QEMU (docs/isolation.md).";
        return strdup("off: vmctl is not running as root (QEMU runs as this user, unconfined)");
    }
    if (!jail_wanted(false)) {
        *ret_ok = false;
        *ret_help = "Unset VMCTL_NO_JAIL to jail each VM's QEMU.";
        return strdup("off: VMCTL_NO_JAIL is set");
    }
    if (!jail_root_is_mount()) {
        *ret_ok = false;
        *ret_help = ROOT_NOT_MOUNT_HELP;
        return strdup("off: the root directory is not a mount point (a chroot into a plain "
                      "directory): VMs run unconfined");
    }
    if (!have_caps()) {
        *ret_ok = false;
        *ret_help = "Run vmctl with CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and CAP_CHOWN (for a "
                    "container: --privileged, or those capabilities added).";
        return strdup("off: vmctl runs as root without the capabilities the jail needs (a "
                      "container?): VMs run unconfined");
    }
    uint32_t base, count;
    jail_uid_range(&base, &count);
    *ret_ok = true;
    return str_printf("on: a uid per vm from %u (%u), mnt/pid/ipc/uts namespaces, read-only "
                      "tmpfs root, no capabilities, no-new-privileges, QEMU -sandbox "
                      "(obsolete, elevateprivileges, spawn, resourcecontrol denied)",
                      base, count);
}

char *jail_cgroup_summary(bool *ret_ok, const char **ret_help)
{
    *ret_help = NULL;
    const char *mode = jail_cgroup_mode();
    if (!mode) {
        *ret_ok = false;
        *ret_help = "Mount cgroup2 (or the v1 controllers) on " CGROUP_ROOT
                    " for per-VM CPU, memory, pids and I/O limits.";
        return strdup("no cgroup hierarchy at " CGROUP_ROOT ": no per-vm limits");
    }
    bool cpu = false, mem = false, pids = false, io = false, memsw = false;
    const char *where = "";
    bool not_delegated = false;
    cleanup_free char *base_rel = NULL;
    /* under systemd: a scope per VM when its manager answers (prepare_cgroup) */
    cleanup_free char *sd_why = NULL;
    bool sd = jail_systemd_running();
    bool scoped = sd && jail_systemd_probe(&sd_why) == 0;
    if (cgroup_kind() == CG_V2 && scoped) {
        /* systemd delegates each scope what the root has */
        bool *has[] = {&cpu, &mem, &pids, &io};
        for (size_t i = 0; i < ELEMENTSOF(v2_controllers); i++)
            *has[i] = cg_list_has(CGROUP_ROOT, "cgroup.controllers", v2_controllers[i]);
        memsw = mem;
    } else if (cgroup_kind() == CG_V2) {
        base_rel = cgroup_base(NULL);
        cleanup_free char *base =
            base_rel ? str_printf(CGROUP_ROOT "%s%s", *base_rel ? "/" : "", base_rel) : NULL;
        if (!base)
            return NULL;
        bool is_root = !*base_rel;
        /* what the base has, and can hand down: the root always; another group when it has
         * enabled it already, or is delegated to vmctl (which then moves itself into a leaf) */
        bool deleg = cgroup_delegated(base, is_root);
        bool *has[] = {&cpu, &mem, &pids, &io};
        for (size_t i = 0; i < ELEMENTSOF(v2_controllers); i++)
            *has[i] = cg_list_has(base, "cgroup.controllers", v2_controllers[i]) &&
                      (is_root || deleg ||
                       cg_list_has(base, "cgroup.subtree_control", v2_controllers[i]));
        memsw = mem;
        not_delegated = !is_root && !deleg;
        if (!is_root)
            where = deleg ? " (delegated)" : " (not delegated to vmctl)";
    } else {
        if (under_systemd() && !scoped)
            base_rel = self_cgroup("memory");
        cpu = access(CGROUP_ROOT "/cpu/cpu.cfs_quota_us", F_OK) == 0;
        mem = access(CGROUP_ROOT "/memory/memory.limit_in_bytes", F_OK) == 0;
        memsw = access(CGROUP_ROOT "/memory/memory.memsw.limit_in_bytes", F_OK) == 0;
        pids = access(CGROUP_ROOT "/pids/pids.max", F_OK) == 0 || /* the root has none */
               access(CGROUP_ROOT "/pids/pids.current", F_OK) == 0 ||
               access(CGROUP_ROOT "/pids/cgroup.procs", F_OK) == 0;
        /* the root group has no weight file of its own with bfq: its statistics say it is there */
        io = access(CGROUP_ROOT "/blkio/blkio.weight", F_OK) == 0 ||
             access(CGROUP_ROOT "/blkio/blkio.bfq.weight", F_OK) == 0 ||
             access(CGROUP_ROOT "/blkio/blkio.bfq.io_serviced", F_OK) == 0;
    }
    /* a weight acts only on disks whose I/O scheduler is bfq */
    bool bfq_active = false;
    cleanup_free char *sched = NULL;
    for (int i = 0; io && !bfq_active && i < 26; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/sys/block/%s%c/queue/scheduler", i < 13 ? "vd" : "sd",
                 'a' + (i % 13));
        free(sched);
        sched = NULL;
        bfq_active = read_file(p, &sched, NULL) >= 0 && strstr(sched, "[bfq]");
    }
    *ret_ok = cpu && mem && pids && io && bfq_active && (!sd || scoped);
    if (sd && !scoped)
        *ret_help = "systemd runs this host but vmctl cannot reach its manager (on "
                    "/run/systemd/private as root, or the system bus), so each VM gets no "
                    "transient scope of its own: its group is made under vmctl's own cgroup "
                    "(docs/isolation.md).";
    else if (!(cpu && mem && pids) && not_delegated)
        *ret_help = "vmctl runs in a cgroup that systemd did not delegate to it, so its VMs' "
                    "groups get no controllers there: run it in a unit with Delegate=yes "
                    "(`systemd-run --scope -p Delegate=yes vmctl ...`, or vmctl serve's unit) "
                    "(docs/isolation.md).";
    else if (!*ret_ok)
        *ret_help = "A limit marked 'no' is not enforced on this host (docs/isolation.md): a VM "
                    "starts without it (its status says so), but --cpu-quota fails; enable its "
                    "controller (for the disk I/O weight, the bfq I/O scheduler on the disks).";
    cleanup_free char *placement =
        scoped ? strdup("a transient scope per vm, " JAIL_SCOPE_SLICE "/vmctl-NAME-HASH.scope "
                        "(Delegate=yes, made over D-Bus)")
               : str_printf("under %s%s" JAIL_CGROUP_DIR "%s%s%s",
                            base_rel && *base_rel ? base_rel : "", base_rel && *base_rel ? "/" : "",
                            where, sd ? " (no systemd scope: " : "",
                            sd ? (sd_why ? sd_why : "?") : "");
    if (!placement)
        return NULL;
    return str_printf("cgroup %s %s%s: cpu quota %s, memory ceiling "
                      "%s%s, pids %s, disk I/O weight %s",
                      mode, placement, sd && !scoped ? ")" : "", cpu ? "yes" : "no",
                      mem ? "yes" : "no", mem && !memsw ? " (swap not accounted)" : "",
                      pids ? "yes" : "no",
                      !io          ? "no"
                      : bfq_active ? "yes"
                                   : "set, but no effect (no disk uses the bfq I/O scheduler)");
}

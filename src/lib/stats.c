/* SPDX-License-Identifier: MIT */
/* vmctl_vm_stats_get: one sample of a VM's statistics, each source read on its own (see
 * include/vmctl/stats.h), and their Prometheus text. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmctl/stats.h>

#include "agent-client.h"
#include "backend.h"
#include "arg-check.h"
#include "error.h"
#include "jail.h"
#include "stats-internal.h"
#include "util/util.h"
#include "vm-internal.h"

/* Bounds for the sources that ask another process: QEMU's QMP, the guest's agent. */
#define STATS_QMP_USEC   (2 * 1000 * 1000ull)
#define STATS_AGENT_USEC (3 * 1000 * 1000ull)

static const char *const source_names[_VMCTL_STATS_SOURCE_MAX] = {
    [VMCTL_STATS_CPU] = "cpu",
    [VMCTL_STATS_MEMORY] = "memory",
    [VMCTL_STATS_UPTIME] = "uptime",
    [VMCTL_STATS_DISK] = "disk",
    [VMCTL_STATS_NETWORK] = "network",
    [VMCTL_STATS_GUEST] = "guest",
    [VMCTL_STATS_GUEST_NETWORK] = "guest_network",
    [VMCTL_STATS_CGROUP] = "cgroup",
};
_Static_assert(sizeof(source_names) / sizeof(source_names[0]) == _VMCTL_STATS_SOURCE_MAX,
               "a name for every source");

const char *vmctl_stats_source_to_string(vmctl_stats_source s)
{
    return s < _VMCTL_STATS_SOURCE_MAX ? source_names[s] : NULL;
}

void vmctl_vm_stats_free(vmctl_vm_stats *s)
{
    if (!s)
        return;
    free(s->name);
    for (size_t i = 0; i < s->n_disks; i++)
        free(s->disks[i].device);
    free(s->disks);
    for (size_t i = 0; i < s->n_nets; i++)
        free(s->nets[i].interface);
    free(s->nets);
    for (size_t i = 0; i < s->n_guest_nets; i++)
        free(s->guest_nets[i].interface);
    free(s->guest_nets);
    for (size_t i = 0; i < s->n_errors; i++)
        vmctl_error_free(s->errors[i]);
    free(s->errors);
    free(s);
}

static inline void stats_freep(vmctl_vm_stats **s)
{
    vmctl_vm_stats_free(*s);
}
#define cleanup_stats __attribute__((cleanup(stats_freep)))

/* metrics::failed for source (its name, or "process"): "cannot read the <what> of vm 'x': <cause>"
 * with the cause's message (cause may be NULL: errnum's text), details vm and source, and the
 * cause's code as a note. Returns -ENOMEM only. */
__attribute__((format(printf, 5, 6))) static int add_error(vmctl_vm_stats *s, const char *source,
                                                           vmctl_error *cause, int errnum,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *what = NULL;
    if (vasprintf(&what, fmt, ap) < 0)
        what = NULL;
    va_end(ap);
    if (!what)
        return -ENOMEM;
    const char *because = cause                      ? vmctl_error_get_message(cause)
                          : streq(source, "process") ? "it is not running"
                                                     : strerror(errnum);
    if (cause && vmctl_error_get_errno(cause) > 0)
        errnum = vmctl_error_get_errno(cause);
    vmctl_error *e = NULL;
    err_make(&e, VMCTL_E_METRICS_FAILED, errnum, "cannot read %s of vm '%s': %s", what, s->name,
             because);
    if (!e)
        return -ENOMEM;
    err_detail(&e, "vm", "%s", s->name);
    err_detail(&e, "source", "%s", source);
    if (cause)
        err_note(&e, "%s", vmctl_error_get_code(cause));
    if (streq(source, "process"))
        err_help(&e, "Start the VM with `vmctl start %s`; a stopped VM has no statistics.",
                 s->name);
    else
        err_help(&e,
                 "The other statistics of vm '%s' are still shown; `vmctl status %s` and "
                 "`vmctl logs %s --qemu` show what is wrong with its %s source.",
                 s->name, s->name, s->name, source);
    vmctl_error **n = realloc(s->errors, (s->n_errors + 1) * sizeof(*n));
    if (!n) {
        vmctl_error_free(e);
        return -ENOMEM;
    }
    s->errors = n;
    s->errors[s->n_errors++] = e;
    return 0;
}

/* --- /proc --- */

int stats_parse_proc_stat(const char *text, uint64_t *utime, uint64_t *stime, uint64_t *start)
{
    const char *p = text ? strrchr(text, ')') : NULL;
    if (!p)
        return -EINVAL;
    p++;
    /* after the comm: field 3 (state) is token 0; utime is field 14, stime 15, starttime 22 */
    uint64_t v[20] = {0};
    for (int i = 0; i < 20; i++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return -EINVAL;
        char *end = NULL;
        if (i == 0) {
            p++; /* the state letter */
            continue;
        }
        errno = 0;
        v[i] = strtoull(p, &end, 10);
        if (end == p || errno)
            return -EINVAL;
        p = end;
    }
    *utime = v[11];
    *stime = v[12];
    *start = v[19];
    return 0;
}

int stats_parse_smaps_rollup(const char *text, uint64_t *rss, uint64_t *pss)
{
    bool have_rss = false, have_pss = false;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        uint64_t *dst = str_startswith(l, "Rss:") ? rss : str_startswith(l, "Pss:") ? pss : NULL;
        if (!dst)
            continue;
        char *end = NULL;
        unsigned long long kb = strtoull(l + 4, &end, 10);
        if (end == l + 4)
            return -EINVAL;
        *dst = (uint64_t)kb * 1024;
        if (dst == rss)
            have_rss = true;
        else
            have_pss = true;
    }
    return have_rss && have_pss ? 0 : -EINVAL;
}

static int read_cpu(vmctl_vm_stats *s, const store_vm *v)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)v->pid);
    cleanup_free char *text = NULL;
    uint64_t ut = 0, st = 0, start = 0;
    int r = read_file(path, &text, NULL);
    if (r >= 0 && stats_parse_proc_stat(text, &ut, &st, &start) < 0)
        r = -EBADMSG;
    if (r >= 0 && v->pid_start && start != v->pid_start)
        r = -ESRCH; /* the pid is another process now */
    s->sampled_us = now_usec();
    if (r < 0)
        return add_error(s, "cpu", NULL, -r, "the CPU time ('%s')", path);
    long tck = sysconf(_SC_CLK_TCK);
    if (tck <= 0)
        tck = 100;
    s->cpu_user_seconds = (double)ut / (double)tck;
    s->cpu_system_seconds = (double)st / (double)tck;
    s->cpu_seconds = (double)(ut + st) / (double)tck;
    s->available[VMCTL_STATS_CPU] = true;
    return 0;
}

/* Since the process started: its start time in the row (clock ticks since boot, checked against
 * the process by vm_load) against the time since boot. */
static int read_uptime(vmctl_vm_stats *s, const store_vm *v)
{
    long tck = sysconf(_SC_CLK_TCK);
    uint64_t start = v->pid_start ? v->pid_start : proc_start_time(v->pid);
    cleanup_free char *up = NULL;
    int r = read_file("/proc/uptime", &up, NULL);
    double boot = r >= 0 ? strtod(up, NULL) : 0;
    if (r >= 0 && (boot <= 0 || !start))
        r = -EBADMSG;
    if (r < 0)
        return add_error(s, "uptime", NULL, -r, "the uptime ('/proc/uptime', '/proc/%d/stat')",
                         (int)v->pid);
    double u = boot - (double)start / (double)(tck > 0 ? tck : 100);
    s->uptime_seconds = u > 0 ? (double)(uint64_t)(u * 100 + 0.5) / 100 : 0; /* ticks: 10 ms */
    s->available[VMCTL_STATS_UPTIME] = true;
    return 0;
}

static int read_memory(vmctl_vm_stats *s, const store_vm *v)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)v->pid);
    cleanup_free char *text = NULL;
    int r = read_file(path, &text, NULL);
    if (r >= 0 && stats_parse_smaps_rollup(text, &s->rss_bytes, &s->pss_bytes) < 0)
        r = -EBADMSG;
    if (r < 0)
        return add_error(s, "memory", NULL, -r, "the memory use ('%s')", path);
    s->available[VMCTL_STATS_MEMORY] = true;
    return 0;
}

/* --- the jail's cgroup --- */

static int read_cgroup(vmctl_vm_stats *s, const store_vm *v, const vm_spec *spec)
{
    if (spec->no_jail) {
        s->why_unavailable[VMCTL_STATS_CGROUP] = "the vm runs without the jail (--no-jail)";
        return 0;
    }
    jail_cgroup_info cg = {0};
    int r = jail_cgroup_read(v->pid, v->dir, 0, &cg);
    if (r == -ENOMEM)
        return r;
    if (r == -ENOENT || r == -EOPNOTSUPP) {
        /* unjailed (vmctl not root, VMCTL_NO_JAIL, a chroot, a snapshottable VM) or no
         * cgroups here: nothing failed, there is no group of its own to read */
        s->why_unavailable[VMCTL_STATS_CGROUP] =
            r == -EOPNOTSUPP ? "no cgroup hierarchy is mounted at /sys/fs/cgroup"
                             : "the hypervisor is not in a cgroup of its own (it runs without "
                               "the jail)";
        return 0;
    }
    if (r >= 0 && !cg.have_cpu_usage)
        r = -ENODATA;
    if (r < 0) {
        jail_cgroup_info_clear(&cg);
        return add_error(s, "cgroup", NULL, -r, "the cgroup statistics ('/proc/%d/cgroup')",
                         (int)v->pid);
    }
    s->cgroup_version = cg.version;
    s->cgroup_cpu_seconds = (double)cg.cpu_usec / 1e6;
    s->cgroup_have_memory = cg.have_memory;
    s->cgroup_memory_bytes = cg.memory_bytes;
    s->cgroup_memory_limit_bytes = cg.memory_limit;
    s->cgroup_have_pids = cg.have_pids;
    s->cgroup_pids = cg.pids;
    s->cgroup_pids_limit = cg.pids_limit;
    s->cgroup_oom_kills = cg.oom_kills;
    jail_cgroup_info_clear(&cg);
    s->available[VMCTL_STATS_CGROUP] = true;
    return 0;
}

/* --- disks --- */

static int disk_cb(const char *device, uint64_t rb, uint64_t wb, uint64_t ro, uint64_t wo,
                   void *userdata)
{
    vmctl_vm_stats *s = userdata;
    vmctl_vm_stats_disk *n = realloc(s->disks, (s->n_disks + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    s->disks = n;
    char *d = strdup(device);
    if (!d)
        return -ENOMEM;
    s->disks[s->n_disks++] = (vmctl_vm_stats_disk){
        .device = d, .read_bytes = rb, .write_bytes = wb, .read_ops = ro, .write_ops = wo};
    return 0;
}

static int read_disks(vmctl_vm_stats *s, const store_vm *v, const vm_spec *spec)
{
    const backend_ops *be = backend_find(spec->backend, NULL);
    if (!be || !be->blockstats)
        return add_error(s, "disk", NULL, EOPNOTSUPP, "the disk statistics (backend '%s')",
                         spec->backend);
    cleanup_error vmctl_error *e = NULL;
    int r = be->blockstats(v->dir, now_usec() + STATS_QMP_USEC, disk_cb, s, &e);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        for (size_t i = 0; i < s->n_disks; i++)
            free(s->disks[i].device);
        free(s->disks);
        s->disks = NULL;
        s->n_disks = 0;
        return add_error(s, "disk", e, -r, "the disk statistics from %s",
                         be->title ? be->title : be->name);
    }
    s->available[VMCTL_STATS_DISK] = true;
    return 0;
}

/* --- network: the TAP devices the hypervisor holds --- */

/* The interface of a /dev/net/tun descriptor: the "iff:" line of its fdinfo. */
static int tun_ifname(pid_t pid, const char *fd, char *buf, size_t size)
{
    char path[320];
    snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, fd);
    cleanup_free char *text = NULL;
    if (read_file(path, &text, NULL) < 0)
        return -ENOENT;
    const char *p = strstr(text, "iff:");
    if (!p)
        return -ENOENT;
    p += 4;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strcspn(p, "\n");
    if (n == 0 || n >= size)
        return -ENOENT;
    memcpy(buf, p, n);
    buf[n] = 0;
    return 0;
}

static int read_counter(const char *ifname, const char *name, uint64_t *ret)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/%s", ifname, name);
    cleanup_free char *text = NULL;
    int r = read_file(path, &text, NULL);
    if (r < 0)
        return r;
    char *end = NULL;
    errno = 0;
    *ret = strtoull(text, &end, 10);
    return end == text || errno ? -EBADMSG : 0;
}

static int add_tap(vmctl_vm_stats *s, const char *ifname)
{
    for (size_t i = 0; i < s->n_nets; i++)
        if (streq(s->nets[i].interface, ifname))
            return 0; /* multiqueue: several fds, one device */
    /* the host's receive is what the guest sent: counted from the guest's side */
    vmctl_vm_stats_net n = {0};
    int r;
    if ((r = read_counter(ifname, "tx_bytes", &n.rx_bytes)) < 0 ||
        (r = read_counter(ifname, "rx_bytes", &n.tx_bytes)) < 0 ||
        (r = read_counter(ifname, "tx_packets", &n.rx_packets)) < 0 ||
        (r = read_counter(ifname, "rx_packets", &n.tx_packets)) < 0)
        return r;
    vmctl_vm_stats_net *a = realloc(s->nets, (s->n_nets + 1) * sizeof(*a));
    if (!a)
        return -ENOMEM;
    s->nets = a;
    if (!(n.interface = strdup(ifname)))
        return -ENOMEM;
    s->nets[s->n_nets++] = n;
    return 0;
}

static int read_network(vmctl_vm_stats *s, const store_vm *v, const vm_spec *spec)
{
    if (spec->net && streq(spec->net, "user")) {
        s->why_unavailable[VMCTL_STATS_NETWORK] =
            "user-mode networking has no host interface, and QEMU keeps no per-netdev counters "
            "(the guest's own are in the guest_network source)";
        return 0;
    }
    if (spec->net && streq(spec->net, "none")) {
        s->available[VMCTL_STATS_NETWORK] = true; /* no interfaces (and no scan: ~3 ms) */
        return 0;
    }
    return stats_read_taps(s, v->pid);
}

int stats_read_taps(vmctl_vm_stats *s, pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return add_error(s, "network", NULL, errno, "the network devices ('%s')", path);
    int r = 0;
    bool failed = false;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char link[320], target[64], ifname[32];
        snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = 0;
        if (!streq(target, "/dev/net/tun") ||
            tun_ifname(pid, de->d_name, ifname, sizeof(ifname)) < 0)
            continue;
        if ((r = add_tap(s, ifname)) < 0) {
            if (r == -ENOMEM)
                break;
            r = add_error(s, "network", NULL, -r, "the counters of interface '%s'", ifname);
            failed = true;
            break;
        }
    }
    closedir(d);
    if (r == -ENOMEM)
        return r;
    if (!failed)
        s->available[VMCTL_STATS_NETWORK] = true;
    return r;
}

/* --- the guest agent --- */

int stats_parse_net_dev(const char *text, vmctl_vm_stats_net **ret, size_t *ret_n)
{
    vmctl_vm_stats_net *a = NULL;
    size_t n = 0;
    int r = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *colon = strchr(l, ':'), *eol = strchr(l, '\n');
        if (!colon || (eol && colon > eol))
            continue; /* the two header lines */
        const char *name = l;
        while (*name == ' ')
            name++;
        size_t len = (size_t)(colon - name);
        if (len == 0 || len >= 16 || (len == 2 && strncmp(name, "lo", 2) == 0))
            continue;
        /* rx: bytes packets errs drop fifo frame compressed multicast, then tx: bytes packets */
        unsigned long long v[10];
        const char *p = colon + 1;
        int k = 0;
        for (; k < 10; k++) {
            char *end = NULL;
            errno = 0;
            v[k] = strtoull(p, &end, 10);
            if (end == p || errno)
                break;
            p = end;
        }
        if (k < 10) {
            r = -EINVAL;
            break;
        }
        vmctl_vm_stats_net *b = realloc(a, (n + 1) * sizeof(*b));
        if (!b) {
            r = -ENOMEM;
            break;
        }
        a = b;
        a[n] = (vmctl_vm_stats_net){.interface = strndup(name, len),
                                    .rx_bytes = v[0],
                                    .rx_packets = v[1],
                                    .tx_bytes = v[8],
                                    .tx_packets = v[9]};
        if (!a[n++].interface) {
            r = -ENOMEM;
            break;
        }
    }
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(a[i].interface);
        free(a);
        return r;
    }
    *ret = a;
    *ret_n = n;
    return 0;
}

/* On user-mode networking: the guest's /proc/net/dev, by `cat` through the agent. */
static int read_guest_net(vmctl_vm_stats *s, agent_conn *conn, uint64_t deadline)
{
    char *argv[] = {"cat", "/proc/net/dev", NULL};
    vmctl_exec_opts opts = {.argv = argv, .timeout_sec = 2};
    vmctl_exec_result res = {0};
    cleanup_error vmctl_error *e = NULL;
    int r = agent_exec(conn, &opts, &res, deadline, &e);
    if (r >= 0 && (res.signal || res.exit_code != 0))
        r = -EIO;
    if (r >= 0)
        r = stats_parse_net_dev(res.out, &s->guest_nets, &s->n_guest_nets);
    vmctl_exec_result_clear(&res);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return add_error(s, "guest_network", e, -r,
                         "the guest's network counters ('/proc/net/dev', agent)");
    s->available[VMCTL_STATS_GUEST_NETWORK] = true;
    return 0;
}

static int read_guest(vmctl_vm_stats *s, const store_vm *v, const vm_spec *spec)
{
    bool user_net = spec->net && streq(spec->net, "user");
    if (!user_net)
        s->why_unavailable[VMCTL_STATS_GUEST_NETWORK] =
            "read on user-mode networking only (the host's counters are in the network source)";
    const char *why = !spec->agent                   ? "the image runs no vmctl-agent"
                      : v->state != VMCTL_VM_RUNNING ? "the vm is paused"
                                                     : NULL;
    if (why) {
        s->why_unavailable[VMCTL_STATS_GUEST] = why;
        if (user_net)
            s->why_unavailable[VMCTL_STATS_GUEST_NETWORK] = why;
        return 0;
    }
    uint64_t deadline = now_usec() + STATS_AGENT_USEC;
    cleanup_error vmctl_error *e = NULL;
    cleanup_agent agent_conn *conn = NULL;
    agent_guest_info in = {0};
    int r = vm_agent_connect(v, spec, v->cid, deadline, STATS_AGENT_USEC, &conn, &e);
    if (r >= 0)
        r = agent_get_info(conn, deadline, &in, &e);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        if (user_net && (r = add_error(s, "guest_network", NULL, EAGAIN,
                                       "the guest's network counters (the agent failed)")) < 0)
            return r;
        return add_error(s, "guest", e, -r, "the guest's memory and load (agent)");
    }
    s->guest_mem_total_bytes = in.mem_total;
    s->guest_mem_available_bytes = in.mem_available;
    for (int i = 0; i < 3; i++)
        s->guest_load[i] = in.load[i];
    s->guest_uptime_seconds = (double)in.uptime_ms / 1000.0;
    s->available[VMCTL_STATS_GUEST] = true;
    return user_net ? read_guest_net(s, conn, deadline) : 0;
}

int vmctl_vm_stats_get(vmctl_ctx *ctx, const char *name, unsigned flags, vmctl_vm_stats **ret,
                       vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(!(flags & ~(unsigned)(VMCTL_STATS_NO_GUEST | VMCTL_STATS_CPU_ONLY)), reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    cleanup_stats vmctl_vm_stats *s = calloc(1, sizeof(*s));
    if (!s || !(s->name = strdup(v->name)))
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    s->state = v->state;
    s->vcpus = spec->vcpus;
    s->mem_bytes = (uint64_t)spec->memory_mib << 20;
    s->sampled_us = now_usec();
    bool live = (v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) && v->pid > 0;
    if (!live) {
        r = add_error(s, "process", NULL, ESRCH, "the statistics (the vm is %s)",
                      vmctl_vm_state_to_string(v->state));
    } else {
        s->pid = v->pid;
        if ((r = read_cpu(s, v)) >= 0)
            r = read_uptime(s, v);
        if (r >= 0 && (flags & VMCTL_STATS_CPU_ONLY)) {
            for (int i = VMCTL_STATS_MEMORY; i < _VMCTL_STATS_SOURCE_MAX; i++)
                if (i != VMCTL_STATS_UPTIME)
                    s->why_unavailable[i] = "not asked for";
        } else if (r >= 0) {
            if ((r = read_memory(s, v)) >= 0 && (r = read_cgroup(s, v, spec)) >= 0 &&
                (r = read_disks(s, v, spec)) >= 0 && (r = read_network(s, v, spec)) >= 0) {
                if (flags & VMCTL_STATS_NO_GUEST)
                    s->why_unavailable[VMCTL_STATS_GUEST] =
                        s->why_unavailable[VMCTL_STATS_GUEST_NETWORK] = "not asked for";
                else
                    r = read_guest(s, v, spec);
            }
        }
    }
    if (r < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, -r, "out of memory");
    *ret = TAKE_PTR(s);
    return 0;
}

double vmctl_vm_stats_cpu_percent(const vmctl_vm_stats *a, const vmctl_vm_stats *b)
{
    if (!a || !b || !a->available[VMCTL_STATS_CPU] || !b->available[VMCTL_STATS_CPU] ||
        a->pid != b->pid || b->sampled_us <= a->sampled_us || b->cpu_seconds < a->cpu_seconds)
        return -1;
    return 100.0 * (b->cpu_seconds - a->cpu_seconds) /
           ((double)(b->sampled_us - a->sampled_us) / 1e6);
}

/* --- Prometheus text format --- */

void stats_prom_label_value(FILE *f, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", f);
        else if (*p == '"')
            fputs("\\\"", f);
        else if (*p == '\n')
            fputs("\\n", f);
        else
            fputc(*p, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_start(FILE *f, const char *name, const vmctl_vm_stats *s)
{
    fprintf(f, "%s{vm=\"", name);
    stats_prom_label_value(f, s->name);
    fputc('"', f);
}

static void sample_u64(FILE *f, const char *name, const vmctl_vm_stats *s, uint64_t v)
{
    sample_start(f, name, s);
    fprintf(f, "} %llu\n", (unsigned long long)v);
}

static void sample_f(FILE *f, const char *name, const vmctl_vm_stats *s, double v)
{
    sample_start(f, name, s);
    fprintf(f, "} %.15g\n", v);
}

/* One gauge or counter with one sample per VM that has source src. */
#define SCALAR(name, type, help, src, fmt_fn, field)                                               \
    do {                                                                                           \
        bool any_ = false;                                                                         \
        for (size_t i = 0; i < n; i++)                                                             \
            any_ |= stats[i]->available[src];                                                      \
        if (!any_)                                                                                 \
            break;                                                                                 \
        family(f, name, type, help);                                                               \
        for (size_t i = 0; i < n; i++)                                                             \
            if (stats[i]->available[src])                                                          \
                fmt_fn(f, name, stats[i], stats[i]->field);                                        \
    } while (0)

/* One cgroup value per VM whose sample has the source and cond (an expression of stats[i]). */
#define CGROUP_IF(cond, name, type, help, field)                                                   \
    do {                                                                                           \
        bool any_ = false;                                                                         \
        for (size_t i = 0; i < n; i++)                                                             \
            any_ |= stats[i]->available[VMCTL_STATS_CGROUP] && (stats[i]->cond);                   \
        if (!any_)                                                                                 \
            break;                                                                                 \
        family(f, name, type, help);                                                               \
        for (size_t i = 0; i < n; i++)                                                             \
            if (stats[i]->available[VMCTL_STATS_CGROUP] && (stats[i]->cond))                       \
                sample_u64(f, name, stats[i], stats[i]->field);                                    \
    } while (0)

/* One counter per disk or interface: label `lbl` = the item's key. */
#define PER_ITEM(name, help, src, items, n_items, key, lbl, field)                                 \
    do {                                                                                           \
        bool any_ = false;                                                                         \
        for (size_t i = 0; i < n; i++)                                                             \
            any_ |= stats[i]->available[src] && stats[i]->n_items > 0;                             \
        if (!any_)                                                                                 \
            break;                                                                                 \
        family(f, name, "counter", help);                                                          \
        for (size_t i = 0; i < n; i++)                                                             \
            for (size_t j = 0; stats[i]->available[src] && j < stats[i]->n_items; j++) {           \
                sample_start(f, name, stats[i]);                                                   \
                fputs("," lbl "=\"", f);                                                           \
                stats_prom_label_value(f, stats[i]->items[j].key);                                 \
                fprintf(f, "\"} %llu\n", (unsigned long long)stats[i]->items[j].field);            \
            }                                                                                      \
    } while (0)

int stats_prometheus_write(FILE *f, vmctl_vm_stats *const *stats, size_t n)
{
    bool any_cpu = false;
    for (size_t i = 0; i < n; i++)
        any_cpu |= stats[i]->available[VMCTL_STATS_CPU];
    if (any_cpu) {
        family(f, "vmctl_vm_cpu_seconds_total", "counter",
               "CPU time used by the VM's hypervisor process, by mode (user, system).");
        for (size_t i = 0; i < n; i++) {
            if (!stats[i]->available[VMCTL_STATS_CPU])
                continue;
            sample_start(f, "vmctl_vm_cpu_seconds_total", stats[i]);
            fprintf(f, ",mode=\"user\"} %.15g\n", stats[i]->cpu_user_seconds);
            sample_start(f, "vmctl_vm_cpu_seconds_total", stats[i]);
            fprintf(f, ",mode=\"system\"} %.15g\n", stats[i]->cpu_system_seconds);
        }
    }
    if (n == 0)
        return ferror(f) ? -EIO : 0; /* no families without samples */
    family(f, "vmctl_vm_vcpus", "gauge", "Virtual CPUs the VM was created with.");
    for (size_t i = 0; i < n; i++)
        sample_u64(f, "vmctl_vm_vcpus", stats[i], stats[i]->vcpus);
    family(f, "vmctl_vm_memory_configured_bytes", "gauge", "Guest RAM the VM was created with.");
    for (size_t i = 0; i < n; i++)
        sample_u64(f, "vmctl_vm_memory_configured_bytes", stats[i], stats[i]->mem_bytes);
    SCALAR("vmctl_vm_memory_rss_bytes", "gauge", "Resident set of the hypervisor process.",
           VMCTL_STATS_MEMORY, sample_u64, rss_bytes);
    SCALAR("vmctl_vm_memory_pss_bytes", "gauge",
           "Proportional set of the hypervisor process (shared pages counted by share).",
           VMCTL_STATS_MEMORY, sample_u64, pss_bytes);
    SCALAR("vmctl_vm_uptime_seconds", "gauge", "Time since the hypervisor process started.",
           VMCTL_STATS_UPTIME, sample_f, uptime_seconds);
    PER_ITEM("vmctl_vm_disk_read_bytes_total", "Bytes read from the disk by the guest.",
             VMCTL_STATS_DISK, disks, n_disks, device, "device", read_bytes);
    PER_ITEM("vmctl_vm_disk_write_bytes_total", "Bytes written to the disk by the guest.",
             VMCTL_STATS_DISK, disks, n_disks, device, "device", write_bytes);
    PER_ITEM("vmctl_vm_disk_read_requests_total", "Read requests the guest made on the disk.",
             VMCTL_STATS_DISK, disks, n_disks, device, "device", read_ops);
    PER_ITEM("vmctl_vm_disk_write_requests_total", "Write requests the guest made on the disk.",
             VMCTL_STATS_DISK, disks, n_disks, device, "device", write_ops);
    PER_ITEM("vmctl_vm_network_receive_bytes_total", "Bytes the guest received on the interface.",
             VMCTL_STATS_NETWORK, nets, n_nets, interface, "interface", rx_bytes);
    PER_ITEM("vmctl_vm_network_transmit_bytes_total", "Bytes the guest sent on the interface.",
             VMCTL_STATS_NETWORK, nets, n_nets, interface, "interface", tx_bytes);
    PER_ITEM("vmctl_vm_network_receive_packets_total",
             "Packets the guest received on the interface.", VMCTL_STATS_NETWORK, nets, n_nets,
             interface, "interface", rx_packets);
    PER_ITEM("vmctl_vm_network_transmit_packets_total", "Packets the guest sent on the interface.",
             VMCTL_STATS_NETWORK, nets, n_nets, interface, "interface", tx_packets);
    SCALAR("vmctl_vm_guest_memory_total_bytes", "gauge", "The guest's MemTotal (its agent).",
           VMCTL_STATS_GUEST, sample_u64, guest_mem_total_bytes);
    SCALAR("vmctl_vm_guest_memory_available_bytes", "gauge",
           "The guest's MemAvailable (its agent).", VMCTL_STATS_GUEST, sample_u64,
           guest_mem_available_bytes);
    SCALAR("vmctl_vm_guest_load1", "gauge", "The guest's 1-minute load average.", VMCTL_STATS_GUEST,
           sample_f, guest_load[0]);
    SCALAR("vmctl_vm_guest_load5", "gauge", "The guest's 5-minute load average.", VMCTL_STATS_GUEST,
           sample_f, guest_load[1]);
    SCALAR("vmctl_vm_guest_load15", "gauge", "The guest's 15-minute load average.",
           VMCTL_STATS_GUEST, sample_f, guest_load[2]);
    PER_ITEM("vmctl_vm_guest_network_receive_bytes_total",
             "Bytes received on the interface, as the guest counts them (user-mode networking).",
             VMCTL_STATS_GUEST_NETWORK, guest_nets, n_guest_nets, interface, "interface", rx_bytes);
    PER_ITEM("vmctl_vm_guest_network_transmit_bytes_total",
             "Bytes sent on the interface, as the guest counts them (user-mode networking).",
             VMCTL_STATS_GUEST_NETWORK, guest_nets, n_guest_nets, interface, "interface", tx_bytes);
    PER_ITEM("vmctl_vm_guest_network_receive_packets_total",
             "Packets received on the interface, as the guest counts them (user-mode networking).",
             VMCTL_STATS_GUEST_NETWORK, guest_nets, n_guest_nets, interface, "interface",
             rx_packets);
    PER_ITEM("vmctl_vm_guest_network_transmit_packets_total",
             "Packets sent on the interface, as the guest counts them (user-mode networking).",
             VMCTL_STATS_GUEST_NETWORK, guest_nets, n_guest_nets, interface, "interface",
             tx_packets);
    SCALAR("vmctl_vm_guest_uptime_seconds", "gauge", "Time since the guest's kernel booted.",
           VMCTL_STATS_GUEST, sample_f, guest_uptime_seconds);

    SCALAR("vmctl_vm_cgroup_cpu_seconds_total", "counter",
           "CPU time of every process in the VM's cgroup (cgroup v2 cpu.stat, v1 cpuacct).",
           VMCTL_STATS_CGROUP, sample_f, cgroup_cpu_seconds);
    CGROUP_IF(cgroup_have_memory, "vmctl_vm_cgroup_memory_bytes", "gauge",
              "Memory charged to the VM's cgroup (v2 memory.current, v1 memory.usage_in_bytes).",
              cgroup_memory_bytes);
    CGROUP_IF(cgroup_have_memory && stats[i]->cgroup_memory_limit_bytes,
              "vmctl_vm_cgroup_memory_limit_bytes", "gauge", "The VM's cgroup memory ceiling.",
              cgroup_memory_limit_bytes);
    CGROUP_IF(cgroup_have_memory, "vmctl_vm_cgroup_oom_kills_total", "counter",
              "OOM kills in the VM's memory cgroup.", cgroup_oom_kills);
    CGROUP_IF(cgroup_have_pids, "vmctl_vm_cgroup_tasks", "gauge",
              "Tasks (threads) in the VM's cgroup (pids.current).", cgroup_pids);

    family(f, "vmctl_vm_source_up", "gauge",
           "1 when vmctl could read the source, 0 when it failed (sources unavailable by design, "
           "such as network on user-mode networking, are left out).");
    for (size_t i = 0; i < n; i++)
        for (int src = 0; src < _VMCTL_STATS_SOURCE_MAX; src++) {
            if (!stats[i]->available[src] && stats[i]->why_unavailable[src])
                continue;
            sample_start(f, "vmctl_vm_source_up", stats[i]);
            fprintf(f, ",source=\"%s\"} %d\n", source_names[src], stats[i]->available[src]);
        }
    return ferror(f) ? -EIO : 0;
}

int vmctl_vm_stats_prometheus(vmctl_vm_stats *const *stats, size_t n, char **ret,
                              vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(stats || !n, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return err_make(reterr, VMCTL_E_INTERNAL, errno, "out of memory");
    int r = stats_prometheus_write(f, stats, n);
    if (fclose(f) != 0 && r >= 0)
        r = -ENOMEM;
    if (r < 0) {
        free(buf);
        return err_make(reterr, VMCTL_E_INTERNAL, -r, "out of memory");
    }
    *ret = buf;
    return 0;
}

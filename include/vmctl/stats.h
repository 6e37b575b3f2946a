/* SPDX-License-Identifier: MIT */
/* Statistics of a running VM: host CPU time and memory of its hypervisor process (/proc), disk
 * counters (the hypervisor's block statistics), network counters (the host's TAP device), the
 * guest's own memory and load (its agent), uptime, the jailed VM's cgroup. Each source is read on
 * its own: one that cannot be read is marked unavailable and adds a metrics::failed error naming
 * it, and the others are still filled in. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* I/O counters of one disk since the VM started (device: "disk0", "seed", ...). */
typedef struct vmctl_vm_stats_disk {
    char *device;
    uint64_t read_bytes, write_bytes;
    uint64_t read_ops, write_ops;
} vmctl_vm_stats_disk;

/* Counters of one network interface since it was created, from the guest's point of view
 * (receive: what the guest received, as libvirt counts them). interface: the host device. */
typedef struct vmctl_vm_stats_net {
    char *interface;
    uint64_t rx_bytes, tx_bytes;
    uint64_t rx_packets, tx_packets;
} vmctl_vm_stats_net;

/* The sources, as named in errors (detail `source`) and in the Prometheus output. */
typedef enum vmctl_stats_source {
    VMCTL_STATS_CPU,     /* /proc/PID/stat of the hypervisor process */
    VMCTL_STATS_MEMORY,  /* /proc/PID/smaps_rollup */
    VMCTL_STATS_UPTIME,  /* the process's start time */
    VMCTL_STATS_DISK,    /* the hypervisor's block statistics (QMP query-blockstats) */
    VMCTL_STATS_NETWORK, /* /sys/class/net/IF/statistics of the VM's TAP devices */
    VMCTL_STATS_GUEST,   /* the guest agent's info request */
    /* the guest's /proc/net/dev through the agent: on user-mode networking only */
    VMCTL_STATS_GUEST_NETWORK,
    /* the VM's cgroup of a jailed VM (v1 or v2 files, docs/isolation.md) */
    VMCTL_STATS_CGROUP,
    _VMCTL_STATS_SOURCE_MAX,
} vmctl_stats_source;

const char *vmctl_stats_source_to_string(vmctl_stats_source s);

typedef struct vmctl_vm_stats {
    char *name;
    vmctl_vm_state state;
    pid_t pid;           /* the hypervisor process, 0 when not running */
    unsigned vcpus;      /* configured */
    uint64_t mem_bytes;  /* configured guest RAM */
    uint64_t sampled_us; /* CLOCK_MONOTONIC time of the CPU sample, for rates between samples */

    /* available[source]: whether the fields of that source are filled in */
    bool available[_VMCTL_STATS_SOURCE_MAX];

    double cpu_seconds; /* user + system CPU time of the hypervisor process (all its threads) */
    double cpu_user_seconds, cpu_system_seconds;
    uint64_t rss_bytes;    /* resident set */
    uint64_t pss_bytes;    /* proportional set: pages shared with other processes (clones of one
                            * image, the page cache of the same QEMU binary) counted by share */
    double uptime_seconds; /* since the hypervisor process started */

    vmctl_vm_stats_disk *disks;
    size_t n_disks;

    /* Network: interfaces with counters; a VM without network has none (available). */
    vmctl_vm_stats_net *nets;
    size_t n_nets;

    /* The guest's own view (its agent): /proc/meminfo MemTotal and MemAvailable, loadavg,
     * uptime. */
    uint64_t guest_mem_total_bytes, guest_mem_available_bytes;
    double guest_load[3];
    double guest_uptime_seconds;
    /* The guest's own interface counters (its /proc/net/dev but lo, through the agent), read for
     * a VM on user-mode networking, where the host has none (available[GUEST_NETWORK]). They
     * are the guest's word, as the rest of the guest source; rx is what the guest received. */
    vmctl_vm_stats_net *guest_nets;
    size_t n_guest_nets;

    /* The VM's cgroup (a jailed VM's: docs/isolation.md), from its v2 or v1 files
     * (cgroup_version): the CPU time of every process in it (v2 cpu.stat usage_usec, there
     * without the cpu controller; v1 cpuacct.usage), the memory charged to it (v2
     * memory.current, v1 memory.usage_in_bytes: QEMU's pages and the page cache it caused), its
     * tasks (pids.current), the OOM kills it saw, and its ceilings. A controller the host does
     * not give the group leaves its fields out (cgroup_have_memory, cgroup_have_pids false;
     * a limit 0: none). */
    int cgroup_version;
    bool cgroup_have_memory, cgroup_have_pids;
    double cgroup_cpu_seconds;
    uint64_t cgroup_memory_bytes, cgroup_memory_limit_bytes;
    uint64_t cgroup_pids, cgroup_pids_limit;
    uint64_t cgroup_oom_kills;

    /* Why a source is unavailable though nothing failed (static text, NULL otherwise): network
     * on user-mode networking (QEMU's slirp has no host device, and QEMU 7.2 keeps no
     * per-netdev counters), guest for an image without vmctl-agent, a paused VM or a sample
     * that did not ask for it, guest_network for a VM not on user-mode networking. Such a source is
     * neither a number nor an error. */
    const char *why_unavailable[_VMCTL_STATS_SOURCE_MAX];

    /* One metrics::failed error per source that could not be read (details vm, source), in
     * the order of vmctl_stats_source. */
    vmctl_error **errors;
    size_t n_errors;
} vmctl_vm_stats;

/* Sample VM `name` once. Returns < 0 only when the VM cannot be looked up (vm::not_found) or
 * memory runs out; a VM that is not running gives its row with every source unavailable and
 * one metrics::failed error (source "process"). flags: 0, or VMCTL_STATS_NO_GUEST (skip the
 * agent: the cheapest sample), VMCTL_STATS_CPU_ONLY (cpu and uptime only: a first sample for a
 * rate). */
enum {
    VMCTL_STATS_NO_GUEST = 1u << 0,
    VMCTL_STATS_CPU_ONLY = 1u << 1,
};
int vmctl_vm_stats_get(vmctl_ctx *ctx, const char *name, unsigned flags, vmctl_vm_stats **ret,
                       vmctl_error **reterr);
void vmctl_vm_stats_free(vmctl_vm_stats *s);

/* Share of one host CPU the hypervisor used between two samples of the same VM, in percent
 * (200 = two CPUs' worth); < 0 when it cannot be told (either sample lacks CPU time, the
 * process changed, no time passed). */
double vmctl_vm_stats_cpu_percent(const vmctl_vm_stats *before, const vmctl_vm_stats *after);

/* The Prometheus text exposition format (version 0.0.4) of n samples: vmctl_vm_* metrics in
 * base units (seconds, bytes), counters ending in _total, labels vm, device and interface, a
 * HELP and TYPE line before each metric's samples; and vmctl_vm_source_up{vm,source} 1 or 0 for
 * each source (what could not be read is absent, never a made-up 0). *ret is malloc'd. */
int vmctl_vm_stats_prometheus(vmctl_vm_stats *const *stats, size_t n, char **ret,
                              vmctl_error **reterr);

#ifdef __cplusplus
}
#endif

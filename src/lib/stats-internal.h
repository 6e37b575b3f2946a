/* SPDX-License-Identifier: MIT */
/* stats.c's pure parts, for tests/unit/test-stats.c. */
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <vmctl/stats.h>

/* /proc/PID/stat: utime, stime, starttime (clock ticks); -EINVAL when malformed. */
int stats_parse_proc_stat(const char *text, uint64_t *utime, uint64_t *stime, uint64_t *start);
/* /proc/PID/smaps_rollup: Rss and Pss in bytes; -EINVAL without both. */
int stats_parse_smaps_rollup(const char *text, uint64_t *rss, uint64_t *pss);
/* The TAP devices process pid holds (its /dev/net/tun descriptors' fdinfo "iff:"), with their
 * counters from /sys/class/net (of this network namespace) into s->nets, from the guest's side
 * (the host's rx is the guest's tx); available[NETWORK] set, or a metrics::failed in s->errors.
 * -ENOMEM only. */
int stats_read_taps(vmctl_vm_stats *s, pid_t pid);
/* A guest's /proc/net/dev: its interfaces but lo (malloc'd array); -EINVAL when malformed. */
int stats_parse_net_dev(const char *text, vmctl_vm_stats_net **ret, size_t *ret_n);
/* A Prometheus label value, escaped (backslash, double quote, newline). */
void stats_prom_label_value(FILE *f, const char *v);
/* The text exposition format of n samples (vmctl_vm_stats_prometheus). */
int stats_prometheus_write(FILE *f, vmctl_vm_stats *const *stats, size_t n);

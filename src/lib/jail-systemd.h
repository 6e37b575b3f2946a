/* SPDX-License-Identifier: MIT */
/* A VM's transient scope under systemd (docs/isolation.md "Under systemd"): made over D-Bus
 * (org.freedesktop.systemd1.Manager.StartTransientUnit) with libsystemd's sd-bus, loaded on
 * first use (dl.h: never linked; only a jailed start, stop or doctor under systemd maps it). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

#include "dl.h"

/* The slice the scopes go in. */
#define JAIL_SCOPE_SLICE "vmctl.slice"

typedef struct jail_scope_props {
    const char *unit;  /* "vmctl-NAME-HASH.scope" */
    const char *slice; /* JAIL_SCOPE_SLICE */
    const char *description;
    pid_t pid;           /* the scope's first process */
    double cpu_quota;    /* host CPUs; 0: none */
    uint64_t cpu_weight; /* CPUWeight (1-10000); 0: the default */
    uint64_t memory_max; /* 0: none */
    uint64_t tasks_max;  /* 0: none */
} jail_scope_props;

/* Whether systemd manages this PID namespace's cgroups (/run/systemd/system exists). */
bool jail_systemd_running(void);

/* Whether systemd's manager answers on its private socket (/run/systemd/private) or the system
 * bus: 0, or -errno with *why (malloc'd) saying what failed (library, connect, call). */
int jail_systemd_probe(char **why);

/* Start the transient scope p->unit (Delegate=yes, in p->slice, with p's limits and the pid
 * p->pid) and wait (bounded: usec) until it is active. A unit of that name left from before is
 * stopped first. jailer::failed (step "systemd scope") naming what failed. */
int jail_scope_start(const jail_scope_props *p, uint64_t usec, vmctl_error **reterr);

/* Stop unit (its processes are killed) and wait (bounded: usec) until it is gone or inactive. 0
 * also when there is no such unit; -errno otherwise. */
int jail_scope_stop(const char *unit, uint64_t usec);

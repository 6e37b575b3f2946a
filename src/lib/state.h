/* SPDX-License-Identifier: MIT */
/* The VM state machine: one table, every transition checked against it. */
#pragma once

#include <stdbool.h>

#include <vmctl/vm.h>

typedef enum vm_op {
    VM_OP_START,   /* created|stopped|crashed -> running */
    VM_OP_STOP,    /* running|paused|crashed -> stopped */
    VM_OP_KILL,    /* running|paused|crashed -> stopped */
    VM_OP_PAUSE,   /* running -> paused */
    VM_OP_RESUME,  /* paused -> running */
    VM_OP_CRASH,   /* running|paused -> crashed (found dead by a liveness check) */
    VM_OP_DESTROY, /* created|stopped|crashed -> destroyed (force: the caller kills a running
                      or paused VM first, so destroy works from any state) */
    _VM_OP_MAX,
} vm_op;

/* "start", "stop", ...; NULL when out of range (also for vm_op_target_name). */
const char *vm_op_to_string(vm_op op);
/* The state an op leads to, named for invalid_state's `to` detail ("destroyed" for destroy). */
const char *vm_op_target_name(vm_op op);
/* 0 and *to set when allowed; -EBUSY when the table refuses it (the caller reports
 * err_invalid_state(reterr, vm, vmctl_vm_state_to_string(from), vm_op_target_name(op))); -EINVAL
 * for an out-of-range state or op. For VM_OP_DESTROY *to is left untouched. to may be NULL. */
int vm_transition(vmctl_vm_state from, vm_op op, vmctl_vm_state *to);

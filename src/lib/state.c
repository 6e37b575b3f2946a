/* SPDX-License-Identifier: MIT */
/* The VM state machine. The whole policy is the table below: a row per current state, a column
 * per operation, each cell the state the operation leads to or NO when it is refused. */
#include <errno.h>
#include <string.h>

#include "state.h"
#include "util/util.h"

/* Cell values besides the vmctl_vm_state targets. */
#define NO        (-1)
#define DESTROYED _VMCTL_VM_STATE_MAX /* gone from the store; not a vmctl_vm_state */

#define CREATED VMCTL_VM_CREATED
#define RUNNING VMCTL_VM_RUNNING
#define PAUSED  VMCTL_VM_PAUSED
#define STOPPED VMCTL_VM_STOPPED
#define CRASHED VMCTL_VM_CRASHED

/* Rows are positional on purpose: every cell is written out. Adding an op or a state without
 * revisiting the table must fail to compile. */
_Static_assert(_VM_OP_MAX == 7, "vm_op changed: update the transition table");
_Static_assert(_VMCTL_VM_STATE_MAX == 5, "vmctl_vm_state changed: update the transition table");

static const signed char transitions[_VMCTL_VM_STATE_MAX][_VM_OP_MAX] = {
    /*                  START    STOP     KILL     PAUSE   RESUME   CRASH    DESTROY */
    [VMCTL_VM_CREATED] = {RUNNING, NO, NO, NO, NO, NO, DESTROYED},
    [VMCTL_VM_RUNNING] = {NO, STOPPED, STOPPED, PAUSED, NO, CRASHED, NO},
    [VMCTL_VM_PAUSED] = {NO, STOPPED, STOPPED, NO, RUNNING, CRASHED, NO},
    [VMCTL_VM_STOPPED] = {RUNNING, NO, NO, NO, NO, NO, DESTROYED},
    [VMCTL_VM_CRASHED] = {RUNNING, STOPPED, STOPPED, NO, NO, NO, DESTROYED},
};

static const char *const op_names[_VM_OP_MAX] = {
    [VM_OP_START] = "start",     [VM_OP_STOP] = "stop",     [VM_OP_KILL] = "kill",
    [VM_OP_PAUSE] = "pause",     [VM_OP_RESUME] = "resume", [VM_OP_CRASH] = "crash",
    [VM_OP_DESTROY] = "destroy",
};

static const char *const state_names[_VMCTL_VM_STATE_MAX] = {
    [VMCTL_VM_CREATED] = "created", [VMCTL_VM_RUNNING] = "running", [VMCTL_VM_PAUSED] = "paused",
    [VMCTL_VM_STOPPED] = "stopped", [VMCTL_VM_CRASHED] = "crashed",
};

const char *vmctl_vm_state_to_string(vmctl_vm_state s)
{
    if ((int)s < 0 || s >= _VMCTL_VM_STATE_MAX)
        return NULL;
    return state_names[s];
}

int vmctl_vm_state_from_string(const char *s)
{
    if (!s)
        return -EINVAL;
    for (int i = 0; i < _VMCTL_VM_STATE_MAX; i++)
        if (streq(state_names[i], s))
            return i;
    return -EINVAL;
}

const char *vm_op_to_string(vm_op op)
{
    if ((int)op < 0 || op >= _VM_OP_MAX)
        return NULL;
    return op_names[op];
}

/* Every op leads to one state whatever it starts from; read it off the table. */
const char *vm_op_target_name(vm_op op)
{
    if ((int)op < 0 || op >= _VM_OP_MAX)
        return NULL;
    for (int from = 0; from < _VMCTL_VM_STATE_MAX; from++) {
        int to = transitions[from][op];
        if (to == DESTROYED)
            return "destroyed";
        if (to != NO)
            return state_names[to];
    }
    return NULL;
}

int vm_transition(vmctl_vm_state from, vm_op op, vmctl_vm_state *to)
{
    if ((int)from < 0 || from >= _VMCTL_VM_STATE_MAX || (int)op < 0 || op >= _VM_OP_MAX)
        return -EINVAL;
    int t = transitions[from][op];
    if (t == NO)
        return -EBUSY;
    if (t != DESTROYED && to)
        *to = (vmctl_vm_state)t;
    return 0;
}

/* SPDX-License-Identifier: MIT */
/* The VM state machine: every cell of the transition table against an expectation written out
 * here independently (as text, from the lifecycle described in SPEC.md and state.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "state.h"

/* Each allowed (from, op) pair and where it leads; every pair not listed must be refused. */
static const struct {
    const char *from, *op, *to;
} allowed[] = {
    {"created", "start", "running"},     {"stopped", "start", "running"},
    {"crashed", "start", "running"},     {"running", "stop", "stopped"},
    {"paused", "stop", "stopped"},       {"crashed", "stop", "stopped"},
    {"running", "kill", "stopped"},      {"paused", "kill", "stopped"},
    {"crashed", "kill", "stopped"},      {"running", "pause", "paused"},
    {"paused", "resume", "running"},     {"running", "crash", "crashed"},
    {"paused", "crash", "crashed"},      {"created", "destroy", "destroyed"},
    {"stopped", "destroy", "destroyed"}, {"crashed", "destroy", "destroyed"},
};

static const char *const state_names[] = {"created", "running", "paused", "stopped", "crashed"};
static const char *const op_names[] = {"start",  "stop",  "kill",   "pause",
                                       "resume", "crash", "destroy"};

static const char *expected_target(const char *from, const char *op)
{
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (strcmp(allowed[i].from, from) == 0 && strcmp(allowed[i].op, op) == 0)
            return allowed[i].to;
    return NULL;
}

static void test_state_strings(void **state)
{
    (void)state;
    assert_int_equal(_VMCTL_VM_STATE_MAX, 5);
    for (int i = 0; i < _VMCTL_VM_STATE_MAX; i++) {
        assert_string_equal(vmctl_vm_state_to_string((vmctl_vm_state)i), state_names[i]);
        assert_int_equal(vmctl_vm_state_from_string(state_names[i]), i);
    }
    assert_null(vmctl_vm_state_to_string(_VMCTL_VM_STATE_MAX));
    assert_null(vmctl_vm_state_to_string((vmctl_vm_state)-1));
    assert_int_equal(vmctl_vm_state_from_string("destroyed"), -EINVAL);
    assert_int_equal(vmctl_vm_state_from_string("Running"), -EINVAL);
    assert_int_equal(vmctl_vm_state_from_string(""), -EINVAL);
    assert_int_equal(vmctl_vm_state_from_string(NULL), -EINVAL);
}

static void test_op_strings(void **state)
{
    (void)state;
    assert_int_equal(_VM_OP_MAX, 7);
    for (int i = 0; i < _VM_OP_MAX; i++)
        assert_string_equal(vm_op_to_string((vm_op)i), op_names[i]);
    assert_null(vm_op_to_string(_VM_OP_MAX));
    assert_null(vm_op_target_name(_VM_OP_MAX));
    assert_null(vm_op_to_string((vm_op)-1));
}

/* The 35 cells, each against the list above. */
static void test_every_cell(void **state)
{
    (void)state;
    int n_allowed = 0;
    for (int f = 0; f < _VMCTL_VM_STATE_MAX; f++) {
        for (int o = 0; o < _VM_OP_MAX; o++) {
            const char *want = expected_target(state_names[f], op_names[o]);
            vmctl_vm_state to = (vmctl_vm_state)99;
            int r = vm_transition((vmctl_vm_state)f, (vm_op)o, &to);
            if (!want) {
                if (r != -EBUSY)
                    fail_msg("%s from %s: expected refusal, got %d", op_names[o], state_names[f],
                             r);
                assert_int_equal(to, 99); /* untouched */
                continue;
            }
            n_allowed++;
            if (r != 0)
                fail_msg("%s from %s: expected %s, got %d", op_names[o], state_names[f], want, r);
            if (strcmp(want, "destroyed") == 0)
                assert_int_equal(to, 99); /* destroy leaves *to alone */
            else
                assert_string_equal(vmctl_vm_state_to_string(to), want);
            /* The `to` detail of invalid_state names the same target. */
            assert_string_equal(vm_op_target_name((vm_op)o), want);
            /* NULL out-pointer is allowed. */
            assert_int_equal(vm_transition((vmctl_vm_state)f, (vm_op)o, NULL), 0);
        }
    }
    assert_int_equal(n_allowed, (int)(sizeof(allowed) / sizeof(allowed[0])));
}

static void test_target_names(void **state)
{
    (void)state;
    static const char *const want[] = {"running", "stopped", "stopped",  "paused",
                                       "running", "crashed", "destroyed"};
    for (int o = 0; o < _VM_OP_MAX; o++)
        assert_string_equal(vm_op_target_name((vm_op)o), want[o]);
}

static void test_out_of_range(void **state)
{
    (void)state;
    vmctl_vm_state to = VMCTL_VM_CREATED;
    assert_int_equal(vm_transition(_VMCTL_VM_STATE_MAX, VM_OP_START, &to), -EINVAL);
    assert_int_equal(vm_transition((vmctl_vm_state)-1, VM_OP_START, &to), -EINVAL);
    assert_int_equal(vm_transition(VMCTL_VM_CREATED, _VM_OP_MAX, &to), -EINVAL);
    assert_int_equal(vm_transition(VMCTL_VM_CREATED, (vm_op)-1, &to), -EINVAL);
    assert_int_equal(to, VMCTL_VM_CREATED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_strings), cmocka_unit_test(test_op_strings),
        cmocka_unit_test(test_every_cell),    cmocka_unit_test(test_target_names),
        cmocka_unit_test(test_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

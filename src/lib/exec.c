/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent-client.h"
#include "backend.h"
#include "error.h"
#include "util/util.h"
#include "vm-internal.h"

#define AGENT_CONNECT_TIMEOUT 10.0
/* Time allowed beyond the command's own timeout for the agent to report it. */
#define EXEC_GRACE 10.0

static int unavailable(vmctl_error **reterr, const char *vm, int errnum, const char *reason,
                       const char *remediation)
{
    int r = err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, errnum, "cannot run commands in vm '%s': %s",
                     vm, reason);
    err_detail(reterr, "vm", "%s", vm);
    err_detail(reterr, "reason", "%s", reason);
    err_detail(reterr, "remediation", "%s", remediation);
    err_help(reterr, "%s", remediation);
    return r;
}

int vmctl_exec(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
               vmctl_exec_result *result, vmctl_error **reterr)
{
    if (!opts || !opts->argv || !opts->argv[0] || !result)
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command given to run");
    for (char *const *e = opts->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !env_name_is_valid(*e, (size_t)(eq - *e))) {
            int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "invalid env entry '%s'", *e);
            err_detail(reterr, "field", "env");
            err_detail(reterr, "value", "%s", *e);
            err_help(reterr, "Pass K=V with K matching [A-Za-z_][A-Za-z0-9_]*.");
            return r;
        }
    }
    memset(result, 0, sizeof(*result));
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    if (v->state != VMCTL_VM_RUNNING) {
        cleanup_free char *reason = str_printf("vm is %s", vmctl_vm_state_to_string(v->state));
        cleanup_free char *fix = v->state == VMCTL_VM_PAUSED
                                     ? str_printf("Resume it with `vmctl resume %s`.", name)
                                     : str_printf("Start it with `vmctl start %s --wait`.", name);
        return unavailable(reterr, name, EAGAIN, reason ? reason : "vm is not running",
                           fix ? fix : "Start the VM.");
    }
    if (!spec->agent)
        return unavailable(reterr, name, EOPNOTSUPP, "image without vmctl-agent",
                           "Use the default guest, or an image that runs vmctl-agent.");

    cleanup_free char *sock = str_printf("%s/" VM_FILE_AGENT_SOCK, v->dir);
    if (!sock)
        return -ENOMEM;
    uint64_t connect_deadline = now_usec() + (uint64_t)(AGENT_CONNECT_TIMEOUT * 1e6);
    cleanup_agent agent_conn *conn = NULL;
    r = agent_connect(sock, connect_deadline, &conn, reterr);
    if (r < 0) {
        cleanup_error vmctl_error *cause = reterr ? *reterr : NULL;
        if (reterr)
            *reterr = NULL;
        r = unavailable(reterr, name, -r, "agent not answering",
                        "Wait for the VM with `vmctl start NAME --wait`, or look at `vmctl logs "
                        "NAME`.");
        if (cause)
            err_note(reterr, "%s", vmctl_error_get_message(cause));
        return r;
    }
    uint64_t deadline = opts->timeout_sec > 0
                            ? now_usec() + (uint64_t)((opts->timeout_sec + EXEC_GRACE) * 1e6)
                            : UINT64_MAX;
    r = agent_exec(conn, opts, result, deadline, reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while running '%s' in vm '%s'", opts->argv[0], name);
    return 0;
}

void vmctl_exec_result_clear(vmctl_exec_result *result)
{
    if (!result)
        return;
    free(result->out);
    free(result->err);
    memset(result, 0, sizeof(*result));
}

/* SPDX-License-Identifier: MIT */
/* SSH to a VM (include/vmctl/ssh.h): the VM's key, known_hosts and forwarded port, on top of the
 * libssh client in ssh.c; and the choice between agent and SSH for exec (ssh_exec_use_ssh). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmctl/ssh.h>

#include "arg-check.h"
#include "ctx.h"
#include "error.h"
#include "net.h"
#include "ssh.h"
#include "util/util.h"
#include "vm-internal.h"

#define SSH_PREPARE_TIMEOUT 120.0 /* a disk image boots slowly under TCG */
#define SSH_EXEC_CONNECT    60.0

void vmctl_ssh_info_clear(vmctl_ssh_info *i)
{
    if (!i)
        return;
    free(i->host);
    free(i->user);
    free(i->key_path);
    free(i->known_hosts);
    memset(i, 0, sizeof(*i));
}

static int ssh_info_load(vmctl_ctx *ctx, const char *name, vmctl_ssh_info *ret,
                         vmctl_error **reterr)
{
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    if (v->state != VMCTL_VM_RUNNING)
        return vm_not_running(reterr, name, v->state);
    uint16_t port = net_ssh_port(spec);
    if (!port) {
        r = err_make(reterr, VMCTL_E_NETWORK_IP_DISCOVERY_TIMEOUT, ENETUNREACH,
                     "cannot learn an address for vm '%s': it has no user-mode network with an "
                     "SSH forward (net '%s')",
                     name, spec->net ? spec->net : "none");
        err_detail(reterr, "vm", "%s", name);
        err_detail(reterr, "net", "%s", spec->net ? spec->net : "none");
        err_help(reterr, "Create the VM with `--net user` (the default for disk images) to reach "
                         "it over SSH, or use the agent (`vmctl exec --via agent`).");
        return r;
    }
    ret->host = strdup("127.0.0.1");
    ret->port = port;
    ret->user = strdup(SSHC_DEFAULT_USER);
    ret->key_path = str_printf("%s/" SSHC_KEY_FILE, v->dir);
    ret->known_hosts = str_printf("%s/" SSHC_KNOWN_HOSTS_FILE, v->dir);
    if (!ret->host || !ret->user || !ret->key_path || !ret->known_hosts) {
        vmctl_ssh_info_clear(ret);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    /* VMs made before keys existed have none */
    if (access(ret->key_path, R_OK) < 0) {
        r = err_make(reterr, VMCTL_E_SSH_FAILED, ENOENT, "vm '%s' has no SSH key ('%s')", name,
                     ret->key_path);
        err_detail(reterr, "step", "auth");
        err_detail(reterr, "vm", "%s", name);
        err_help(reterr, "Recreate the VM: its key pair is made by `vmctl create`.");
        vmctl_ssh_info_clear(ret);
        return r;
    }
    return 0;
}

static int ssh_open(vmctl_ctx *ctx, const char *name, double timeout, sshc_conn **ret,
                    vmctl_ssh_info *info, vmctl_error **reterr)
{
    int r = ssh_info_load(ctx, name, info, reterr);
    if (r < 0)
        return r;
    sshc_target t = {.host = info->host,
                     .port = info->port,
                     .user = info->user,
                     .key_path = info->key_path,
                     .known_hosts = info->known_hosts,
                     .vm = name};
    r = sshc_connect(&t, now_usec() + (uint64_t)(timeout * 1e6), ret, reterr);
    if (r < 0)
        vmctl_ssh_info_clear(info);
    return r;
}

/* Connect for one operation (exec, upload, download): the connection details are not kept. */
static int ssh_connect_vm(vmctl_ctx *ctx, const char *name, sshc_conn **ret, vmctl_error **reterr)
{
    vmctl_ssh_info info = {};
    int r = ssh_open(ctx, name, SSH_EXEC_CONNECT, ret, &info, reterr);
    if (r >= 0)
        vmctl_ssh_info_clear(&info);
    return r;
}

int vmctl_ssh_prepare(vmctl_ctx *ctx, const char *name, double timeout_sec, vmctl_ssh_info *ret,
                      vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    cleanup_sshc sshc_conn *c = NULL;
    return ssh_open(ctx, name, timeout_sec > 0 ? timeout_sec : SSH_PREPARE_TIMEOUT, &c, ret,
                    reterr);
}

/* cd DIR && exec env K=V... ARGV... with every word quoted */
static char *command_line(const vmctl_exec_opts *opts)
{
    cleanup_free char *cmd = sshc_quote_argv(opts->argv);
    cleanup_free char *env = opts->env && opts->env[0] ? sshc_quote_argv(opts->env) : NULL;
    char *const cwd_v[] = {(char *)(opts->cwd ? opts->cwd : "/"), NULL};
    cleanup_free char *cwd = sshc_quote_argv(cwd_v);
    if (!cmd || !cwd || (opts->env && opts->env[0] && !env))
        return NULL;
    return str_printf("cd %s && exec %s%s%s%s", cwd, env ? "env " : "", env ? env : "",
                      env ? " " : "", cmd);
}

static int read_fd(int fd, char **ret, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return -ENOMEM;
            }
            buf = nb;
        }
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int r = -errno;
            free(buf);
            return r;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    *ret = buf;
    *len = n;
    return 0;
}

static int exec_common(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                       const void *in, size_t in_len, const vmctl_exec_io *io,
                       vmctl_exec_status *status, vmctl_error **reterr)
{
    if (!opts || !opts->argv || !opts->argv[0])
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command given to run");
    if (opts->user && *opts->user) {
        int r = err_invalid_field(reterr, "user", opts->user, NULL,
                                  "a command for vm '%s' cannot run as user '%s' over SSH", name,
                                  opts->user);
        err_help(reterr, "Over SSH commands run as user vmctl; --user needs the guest agent "
                         "(see `vmctl exec --via agent`).");
        return r;
    }
    /* the VM's create --env as with the agent: first, so that the command's own entries win */
    cleanup_strv char **env = NULL;
    size_t n_env = 0;
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    for (int k = 0; k < 2; k++)
        for (char *const *e = k ? opts->env : spec->env; e && *e; e++)
            if (strv_push(&env, &n_env, *e) < 0)
                return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    vmctl_exec_opts o = *opts;
    o.env = env;
    cleanup_free char *cmd = command_line(&o);
    if (!cmd)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    cleanup_sshc sshc_conn *c = NULL;
    r = ssh_connect_vm(ctx, name, &c, reterr);
    if (r < 0)
        return r;
    uint64_t deadline = opts->timeout_sec > 0 && opts->timeout_sec < 1e9
                            ? now_usec() + (uint64_t)(opts->timeout_sec * 1e6)
                            : UINT64_MAX / 2;
    r = sshc_exec(c, cmd, in, in_len, io, deadline, status, reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while running '%s' in vm '%s' over SSH", opts->argv[0], name);
    return 0;
}

int vmctl_ssh_exec_stream(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                          const vmctl_exec_io *io, int stdin_fd, vmctl_exec_status *status,
                          vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(opts, reterr);
    cleanup_free char *in = NULL;
    size_t in_len = 0;
    if (stdin_fd >= 0) {
        int r = read_fd(stdin_fd, &in, &in_len);
        if (r < 0)
            return err_make(reterr, VMCTL_E_IO, -r, "cannot read the command's input");
    } else if (opts && opts->stdin_data) {
        return exec_common(ctx, name, opts, opts->stdin_data, opts->stdin_len, io, status, reterr);
    }
    return exec_common(ctx, name, opts, in, in_len, io, status, reterr);
}

struct capture {
    vmctl_exec_result *res;
};

static int cap_append(char **buf, size_t *len, const void *data, size_t n)
{
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return -ENOMEM;
    memcpy(nb + *len, data, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
    return 0;
}

static int cap_out(const void *d, size_t n, void *u)
{
    vmctl_exec_result *res = u;
    return cap_append(&res->out, &res->out_len, d, n);
}

static int cap_err(const void *d, size_t n, void *u)
{
    vmctl_exec_result *res = u;
    return cap_append(&res->err, &res->err_len, d, n);
}

int vmctl_ssh_exec(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                   vmctl_exec_result *result, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(opts, reterr);
    VMCTL_ARG_CHECK(result, reterr);
    memset(result, 0, sizeof(*result));
    vmctl_exec_io io = {.on_stdout = cap_out, .on_stderr = cap_err, .userdata = result};
    vmctl_exec_status st = {};
    int r = exec_common(ctx, name, opts, opts ? opts->stdin_data : NULL, opts ? opts->stdin_len : 0,
                        &io, &st, reterr);
    if (r < 0)
        return r;
    result->exit_code = st.exit_code;
    result->signal = st.signal;
    return 0;
}

int vmctl_ssh_upload(vmctl_ctx *ctx, const char *name, const char *local_path,
                     const char *guest_path, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(local_path, reterr);
    VMCTL_ARG_CHECK(guest_path, reterr);
    cleanup_sshc sshc_conn *c = NULL;
    int r = ssh_connect_vm(ctx, name, &c, reterr);
    if (r < 0)
        return r;
    return sshc_upload(c, local_path, guest_path, reterr);
}

int vmctl_ssh_download(vmctl_ctx *ctx, const char *name, const char *guest_path,
                       const char *local_path, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(guest_path, reterr);
    VMCTL_ARG_CHECK(local_path, reterr);
    cleanup_sshc sshc_conn *c = NULL;
    int r = ssh_connect_vm(ctx, name, &c, reterr);
    if (r < 0)
        return r;
    return sshc_download(c, guest_path, local_path, reterr);
}

bool ssh_exec_use_ssh(vmctl_ctx *ctx, const char *name, vmctl_exec_via via, vmctl_error **reterr)
{
    if (via == VMCTL_EXEC_VIA_SSH)
        return true;
    if (via == VMCTL_EXEC_VIA_AGENT || !reterr || !*reterr)
        return false;
    /* auto: only when the VM runs but no agent answers, and it has an SSH forward */
    if (vmctl_error_get_kind(*reterr) != VMCTL_E_EXEC_UNAVAILABLE ||
        vmctl_error_get_errno(*reterr) == EAGAIN)
        return false;
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    if (vm_load(ctx, name, &v, &spec, NULL) < 0 || !net_ssh_port(spec))
        return false;
    cleanup_free char *why = err_describe(*reterr);
    ctx_log(ctx, VMCTL_LOG_INFO, "the agent of vm '%s' does not answer (%s); using SSH", name,
            why ? why : "?");
    vmctl_error_free(*reterr);
    *reterr = NULL;
    return true;
}

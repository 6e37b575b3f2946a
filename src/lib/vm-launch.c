/* SPDX-License-Identifier: MIT */
/* The launch sequence shared by a cold boot (vm.c: vmctl_vm_start), a restore or clone from a
 * snapshot and a warm pool's processes (snapshot.c, pool.c): the guest CID, the jail's uid, the
 * TAP, the backend's launch (once more with the next CID when another process took ours in
 * between), and the record of the running hypervisor in the store. */
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "agent-client.h"
#include "backend.h"
#include "ctx.h"
#include "error.h"
#include "jail.h"
#include "store.h"
#include "supervise.h"
#include "util/util.h"
#include "podnet.h"
#include "vm-internal.h"
#include "vm-net.h"

/* CID_TRIES: how many CIDs held by other processes on the host a launch steps over. */
#define CID_TRIES 64

/* v->cid: the VM's guest CID (allocated when it has none, or below min), free on the host too:
 * a CID another process holds (another vmctl home, another hypervisor) is replaced by the next
 * one free in the store. network::setup_failed when none is found. */
static int choose_cid(vmctl_ctx *ctx, store_vm *v, uint32_t min, vmctl_error **reterr)
{
    int r;
    if ((!v->cid || v->cid < min) &&
        (r = store_vm_alloc_cid(ctx->store, v->name, min, &v->cid, reterr)) < 0)
        return r;
    for (int i = 0; i < CID_TRIES; i++) {
        int busy = agent_vsock_cid_busy(NULL, v->cid);
        if (busy <= 0)
            return 0; /* free (or cannot tell: the hypervisor will say) */
        ctx_log(ctx, VMCTL_LOG_INFO, "guest CID %u is used by another process; trying the next",
                v->cid);
        if ((r = store_vm_alloc_cid(ctx->store, v->name, v->cid + 1, &v->cid, reterr)) < 0)
            return r;
    }
    r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                 "no free guest CID for vm '%s': %d in a row are used by other processes on this "
                 "host",
                 v->name, CID_TRIES);
    err_detail(reterr, "vm", "%s", v->name);
    err_detail_num(reterr, "cid", v->cid);
    err_help(reterr, "Stop the other VMs using vsock, or `rmmod vhost_vsock` to run without "
                     "AF_VSOCK (the agent then uses virtio-serial).");
    return r;
}

int vm_launch(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const vm_launch_opts *o, vm_launched *ret,
              vmctl_error **reterr)
{
    *ret = (vm_launched){.hold = -1};
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    be->cleanup(v->dir);
    int r;
    bool vsock = be->needs_host_cid(spec);
    if (vsock && (r = choose_cid(ctx, v, STORE_MIN_CID, reterr)) < 0)
        return r;
    spec->guest_cid = vsock ? v->cid : 0;
    const char *nojail = o->jail && jail_wanted(spec->no_jail) ? jail_unavailable() : NULL;
    if (nojail)
        ctx_log(ctx, VMCTL_LOG_NOTICE, "vm '%s' runs without the jail: %s (docs/isolation.md)",
                v->name, nojail);
    else if (o->jail && jail_wanted(spec->no_jail)) {
        uint32_t base, count;
        jail_uid_range(&base, &count);
        if ((r = store_vm_jail_uid(ctx->store, v->name, base, count, true, &spec->jail_uid,
                                   reterr)) < 0)
            return r;
    }
    /* --net tap: TAP, address, limits, firewall (vm-net.c); QEMU inherits the TAP */
    if (o->net && streq(spec->net, "tap") && (r = vmnet_up(ctx->store, spec, reterr)) < 0)
        return r;
    /* --net netns:PATH: a TAP in that namespace, joined to its uplink (podnet.c) */
    if (o->net && podnet_path(spec->net) && (r = podnet_up(spec, reterr)) < 0)
        return r;
    cleanup_close int tapfd = o->net && spec->mac ? spec->tap_fd : -1;
    /* closing hold unrecorded makes the supervisor kill the hypervisor */
    r = be->launch(spec, v->dir, &ret->pid, &ret->start, &ret->hold, reterr);
    if (r < 0 && spec->guest_cid && agent_vsock_cid_busy(NULL, spec->guest_cid) == 1) {
        /* another process took the CID between our check and the launch: next one */
        vmctl_error_free(reterr ? *reterr : NULL);
        if (reterr)
            *reterr = NULL;
        if ((r = choose_cid(ctx, v, v->cid + 1, reterr)) < 0)
            goto fail;
        spec->guest_cid = v->cid;
        be->cleanup(v->dir);
        r = be->launch(spec, v->dir, &ret->pid, &ret->start, &ret->hold, reterr);
    }
    if (r >= 0)
        return 0;
fail:
    if (o->net)
        vmnet_release(ctx->store, v->name, spec->net);
    return r;
}

int vm_launch_record(vmctl_ctx *ctx, store_vm *v, vmctl_vm_state to, vm_launched *l,
                     vmctl_error **reterr)
{
    int r = store_vm_set_state(ctx->store, v->name, v->state, -1, to, l->pid, l->start, reterr);
    if (r < 0) {
        (void)kill(l->pid, SIGKILL);
        close(l->hold); /* the supervisor kills it too */
        l->hold = -1;
        return r;
    }
    supervise_commit(TAKE_FD(l->hold));
    v->state = to;
    v->pid = l->pid;
    v->pid_start = l->start;
    return 0;
}

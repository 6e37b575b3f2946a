/* SPDX-License-Identifier: MIT */
/* A VM the store has as running that its hypervisor stopped by itself after a disk I/O error
 * (a full host disk: QEMU's werror=enospc default puts it in runstate io-error). status and
 * list report it paused, with the cause; exec and cp say it instead of blaming the agent;
 * resume continues it. Only VMs with a disk are asked (one QMP round trip each). */
#pragma once

#include <vmctl/vm.h>

#include "ctx.h"
#include "store.h"
#include "vm-spec.h"

/* 1 with *cause (malloc'd, "disk0: nospace") when v is so paused, 0 when not (or unknown). */
int vm_io_paused(const store_vm *v, const vm_spec *spec, char **cause);
/* For status/list: a running VM paused by an I/O error is shown paused, paused_by "io-error". */
void vm_info_io_pause(const store_vm *v, const vm_spec *spec, vmctl_vm_info *info);
/* The remediation line for such a VM (malloc'd). */
char *vm_io_pause_help(const char *name, const char *dir, const vm_spec *spec, const char *cause);
/* The VM's hypervisor as messages name it ("QEMU"), "the hypervisor" when unknown. */
const char *vm_backend_title(const vm_spec *spec);
/* resume of a VM the store has as running: 1 when it was io-paused and is continued now, 0 when
 * it is not io-paused (the caller goes on with the usual transition check), < 0 on failure. */
int vm_io_pause_resume(vmctl_ctx *ctx, const char *name, vmctl_error **reterr);
